"""The agent: runs on every host, polls the control server's agent API and executes runs and
commands with the engines.

Terms: a *run* is a backup (or restore) the server tracks with status and progress; a *command*
is a smaller order (cancel, browse, list_vms, maintenance, restore) delivered by the combined
poll; an *attempt* is one execution of a run by this agent (a run the server hands back after a
restart is a fresh attempt). Engines run in a child process so a crash cannot take the agent down.
"""
