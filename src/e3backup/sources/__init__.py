"""Sources: the things e3backup backs up, presented to the engines as disks.

A *disk* is a fixed-size run of bytes (`size_bytes`) read with positional `read` calls; its
*allocated extents* are the `(offset, length)` ranges that may hold non-zero data, and
everything outside them reads as zeros. Sources never import engines: they satisfy the
engines' `DiskReader` protocol structurally.
"""
