"""Driving runs as an agent would, through the real agent API (an enrolled agent's credentials):
claim with next_run, progress with update_run, events with push_events, cancel and restore
commands with poll_commands / complete_command. The pages then follow what the server stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from world import AgentApi, WebWorld

VM_DISKS = ("/var/lib/libvirt/images/{vm}-root.qcow2", "/var/lib/libvirt/images/{vm}-data.qcow2")


def create_job(web: WebWorld, agent: AgentApi, name: str, vms: list[str] | None = None) -> int:
    """A KVM job over `vms`, or a disk_image job without; into a local repository."""
    body: dict[str, Any] = {
        "name": name,
        "agent_id": agent.agent_id,
        "engine": "kvm" if vms else "disk_image",
        "dest_type": "local",
        "dest_local_path": f"/srv/repos/{name}",
        "repository_password": "repo-password-never-shown",
    }
    if vms:
        body["vms"] = vms
    else:
        body["disk_source_volume"] = "/dev/vg0/root"
    answer = web.api("POST", "/jobs", json=body)
    assert answer.status_code == 201, answer.text
    job_id: int = answer.json()["id"]
    return job_id


def vm_result(vm: str, manifests: bool = True) -> dict[str, Any]:
    """A successful VM's result as the VM engine reports it (vm_result.VmResult.to_dict)."""
    disks = {path.format(vm=vm): f"manifest-{vm}-{i}" for i, path in enumerate(VM_DISKS)}
    return {
        "vm_id": f"uuid-{vm}",
        "vm_name": vm,
        "backup_type": "Full",
        "snapshot_id": f"snap-{vm}",
        "disk_manifests": disks if manifests else {},
        "total_bytes": 3 * 2**30,
        "consistency_level": "Application",
        "status": "success",
        "warnings": [],
    }


@dataclass
class SimRun:
    """One run driven by `agent`."""

    agent: AgentApi
    run_id: int

    def claim(self) -> dict[str, Any]:
        answer = self.agent.post("next_run")
        assert answer.status_code == 200, answer.text
        doc: dict[str, Any] = answer.json()
        assert doc["run_id"] == self.run_id, doc
        return doc

    def update(self, **fields: Any) -> dict[str, Any]:
        answer = self.agent.post("update_run", {"run_id": self.run_id, **fields})
        assert answer.status_code == 200, answer.text
        doc: dict[str, Any] = answer.json()
        return doc

    def events(self, *events: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
        body = {
            "run_id": self.run_id,
            "events": [
                {"event_id": eid, "message_id": mid, "params": params}
                for eid, mid, params in events
            ],
        }
        answer = self.agent.post("push_events", body)
        assert answer.status_code == 200, answer.text
        doc: dict[str, Any] = answer.json()
        return doc

    def poll_commands(self) -> dict[str, Any]:
        answer = self.agent.post("poll_commands", {"run_id": self.run_id})
        assert answer.status_code == 200, answer.text
        doc: dict[str, Any] = answer.json()
        return doc


def start_run(web: WebWorld, agent: AgentApi, job_id: int) -> SimRun:
    answer = web.api("POST", f"/jobs/{job_id}/runs")
    assert answer.status_code == 201, answer.text
    return SimRun(agent, answer.json()["id"])


def finished_vm_backup(web: WebWorld, agent: AgentApi, name: str, results: list[Any]) -> SimRun:
    """A KVM job over the results' VMs, run once to success with those results."""
    job_id = create_job(web, agent, name, [r["vm_name"] for r in results])
    run = start_run(web, agent, job_id)
    run.claim()
    run.update(status="running")
    run.update(status="success", progress_pct=100, vm_results=results)
    return run
