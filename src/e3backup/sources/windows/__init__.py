"""Windows disk-image sources (seed 003): VSS shadow copies of volumes, read plans from the NTFS
volume bitmap, physical disks read by partition extents plus GPT/MBR metadata, and the strict /
best-effort handling of ERROR_SECTOR_NOT_FOUND.

Everything here imports on any platform: the Windows calls (DeviceIoControl, ReadFile) live in
`winapi` and are only made there; the parsing and planning are pure and tested on Linux.
"""
