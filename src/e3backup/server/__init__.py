"""The control server: owns tenants, agents, jobs and runs; hands runs to agents; records progress,
events and backup points. No backup data passes through it (agents write to repositories).

Terms: a *tenant* owns users, agents and jobs (an MSP tenant also sees its child tenants); a *run*
is one execution of a job (backup or restore) moving forward through a fixed state machine; a
*command* is a one-off request to an agent (cancel, restore, browse, maintenance...).
"""
