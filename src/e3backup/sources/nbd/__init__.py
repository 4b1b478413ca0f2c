"""A small NBD client (fixed newstyle, structured replies, block status).

QEMU exports disks over NBD: images in formats we do not parse ourselves (qcow2, VMDK, …) and
running VMs' point-in-time views with their dirty bitmaps. This client reads data and asks for
`base:allocation` / `qemu:dirty-bitmap:NAME` extents, portable and with no C dependency.
"""
