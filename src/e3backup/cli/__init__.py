"""The `e3backup` command line: one module per command group; wiring happens only here.

Every command prints for people by default and machine-readable JSON with `--json`; errors are
one line on stderr and a non-zero exit code (see core.errors for the codes).
"""
