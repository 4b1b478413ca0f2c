"""Engines: backup and restore of disks through the repository.

An engine consumes a *disk reader* (what to read, where data is allocated) and a repository
write session; it owns the pipeline, progress reporting and cancellation.
"""
