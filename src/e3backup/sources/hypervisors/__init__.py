"""Hypervisor providers: where VM disks come from.

A *provider* lists VMs and prepares a *point-in-time view* of one VM (a checkpoint, a fleecing
export): readers for its disks, their allocated and changed extents, and the change-tracking
*tokens* to record for the next incremental. `base` declares the interface; `qemu` implements it
over QMP and the guest agent; Hyper-V plugs into the same interface.
"""
