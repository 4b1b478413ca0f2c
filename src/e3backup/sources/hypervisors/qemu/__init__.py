"""The QEMU/KVM provider: QMP (monitor), QGA (guest agent), persistent dirty bitmaps and
fleecing exports served by QEMU's own NBD server.

Bitmaps are named `e3b-<generation>-<random>`; the name is the change-tracking token. Scratch
nodes, exports and block jobs created here are named `e3b-…`, so leftovers of a killed backup
are recognised and removed by the next one.
"""
