"""The Hyper-V provider: PowerShell (Hyper-V module) and WMI `root\\virtualization\\v2`,
driven through one runner whose every script answers in JSON.

Point in time = a WMI *recovery* snapshot (the guest writes to a new AVHDX, the frozen parent
VHDX is read with the project's own VHDX reader); change tracking = RCT reference points
(`GetVirtualDiskChanges` since the stored RCT id). `powershell` runs scripts (injectable
transport: tests replay recorded exchanges), `wmi` calls methods and polls their jobs,
`discovery` describes VMs, `rct` queries and validates change tracking, `provider` ties them
behind `base.HypervisorProvider`.
"""
