"""e3backup: deduplicating, compressing, encrypting backups of virtual machines, disks and files.

Layers (imports point one way): cli → engines → sources + repo → storage → core.
"""

__version__ = "0.1.0"
