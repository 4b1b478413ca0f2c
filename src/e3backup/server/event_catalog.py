"""Event messages: message_id → template (seed 002 CloudBackupEventFormatter), and
`format_event`, which turns an agent's event into one line of plain text for people.

Templates name their parameters in braces. Formatting never raises: a missing parameter reads
"(unknown)", extra ones are ignored, values are flattened to one short line of plain text
(HTML escaping is the UI's job), third-party product names are replaced by ours, and a failure
whose error is really a cancellation reads "Operation was cancelled." (seed "Cancellation
Detection"). Ids the seed named after the repository tool (KOPIA_*) live on as aliases of
neutral REPO_*/BACKUP_*/RESTORE_* ids so an old agent's events still format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from e3backup.core.units import format_bytes

PRODUCT_NAME = "e3backup"
CANCELLED_TEXT = "Operation was cancelled."
MISSING = "(unknown)"
MAX_VALUE_CHARS = 300

TEMPLATES: dict[str, str] = {
    # --- run lifecycle (seed 002) -------------------------------------------------------------
    "BACKUP_STARTING": "Starting backup.",
    "BACKUP_UPLOAD_START": "Starting upload from {source} to {bucket}/{prefix}.",
    "BACKUP_UPLOAD_COMPLETE": "Upload completed.",
    "BACKUP_PROGRESS_UPDATE": "Update received.",
    "BACKUP_UPLOAD_FAILED": "Upload failed: {error}.",
    "BACKUP_COMPLETE": "Backup finished: {status}.",
    "BACKUP_FAILED": "Backup failed: {error}.",
    "REPO_POLICY": "Backup policy applied: compression {compression}.",
    "REPO_CONNECTED": "Connected to the repository at {repository}.",
    "REPO_INITIALIZED": "Created a new repository at {repository}.",
    "REPO_MAINTENANCE_STARTING": "Repository maintenance ({mode}) started.",
    "REPO_MAINTENANCE_COMPLETE": "Repository maintenance ({mode}) completed.",
    "REPO_MAINTENANCE_FAILED": "Repository maintenance ({mode}) failed: {error}.",
    "CANCEL_REQUESTED": "Backup cancellation requested by user.",
    "CANCELLED": CANCELLED_TEXT,
    # --- restores (seed 002 "Restore Pipeline") ------------------------------------------------
    "RESTORE_QUEUED": "Restore queued to {target_path}.",
    "RESTORE_STARTING": "Starting restore to {target_path}.",
    "RESTORE_PROGRESS": "Restored {bytes_done} of {bytes_total}.",
    "RESTORE_COMPLETED": "Restore completed.",
    "RESTORE_FAILED": "Restore failed: {error}.",
    # --- VM engine (seed 002 "Hyper-V Backup Engine"; ids of engines/vm_result.py) -------------
    "HYPERV_VM_STARTING": "Starting backup of virtual machine '{vm_name}'.",
    "HYPERV_CHECKPOINT_CREATED": (
        "Checkpoint created for '{vm_name}' ({consistency_level}-consistent)."
    ),
    "HYPERV_DISK_PLAN": "Disk {disk} of '{vm_name}': {read_plan} read ({reason}).",
    "HYPERV_CHECKPOINTS_DISABLED": (
        "Checkpoints are disabled for '{vm_name}'. Using crash-consistent backup."
    ),
    "HYPERV_QUIESCE_FAILED": (
        "The guest of '{vm_name}' could not be quiesced; using crash-consistent backup: {message}."
    ),
    "HYPERV_VERIFY_MISMATCH": (
        "Disk {disk} of '{vm_name}': change tracking missed a change (chunk {chunk}); "
        "reading the whole disk."
    ),
    "HYPERV_VM_COMPLETE": (
        "VM '{vm_name}' backed up successfully ({backup_type}, {consistency_level}-consistent)."
    ),
    "HYPERV_VM_FAILED": "VM '{vm_name}' backup failed: {message}.",
    "HYPERV_BACKUP_COMPLETE": "{message}",
    # --- VM restore (seed 001 "Event Messages"; worded for any hypervisor) ---------------------
    "HYPERV_RESTORE_QUEUED": 'Restore queued for VM "{vm_name}" ({disk_count} disks).',
    "HYPERV_RESTORE_STARTING": (
        'Starting disk restore for VM "{vm_name}" ({disk_count} disks) to {target_path}.'
    ),
    "HYPERV_RESTORE_PLAN": 'Restore plan for VM "{vm_name}": {message}.',
    "HYPERV_RESTORE_DISK_STARTING": "Restoring disk {disk_index}/{total_disks}: {disk_name}.",
    "HYPERV_RESTORE_DISK_PROGRESS": "Restoring disk: {disk_name} - {bytes_done} of {bytes_total}.",
    "HYPERV_RESTORE_DISK_COMPLETE": (
        "Disk {disk_name} restored successfully ({disk_index}/{total_disks})."
    ),
    "HYPERV_RESTORE_DISK_FAILED": "Disk {disk_name} restore failed: {message}.",
    "HYPERV_RESTORE_COMPLETE": (
        "VM restore completed: {restored_disks}/{total_disks} disks restored to {target_path}."
    ),
    "HYPERV_RESTORE_FAILED": "VM restore failed: {message}.",
    # --- disk image engine (seed 003 "How Disk Image Backup Works") ----------------------------
    "DISK_IMAGE_STREAM_START": "Reading disk {source} ({bytes_total}).",
    "DISK_IMAGE_READ_PLAN_FALLBACK": (
        "No usable allocation map for {source}; reading the whole device: {reason}."
    ),
    "DISK_IMAGE_READ_RECOVERED": (
        "Read error on {source} at offset {offset}; {length} bytes were zero-filled: {message}."
    ),
    "DISK_IMAGE_FINALIZING_SLOW": "Finishing the upload of {source} is taking longer than usual.",
    "DISK_IMAGE_FINALIZING_STALLED": (
        "Finishing the upload of {source} has made no progress for {stalled_seconds} s."
    ),
    "DISK_IMAGE_STREAM_COMPLETED": "Disk {source} backed up ({bytes_processed} read).",
    "DISK_IMAGE_FAILED": "Disk image backup of {source} failed: {error}.",
    # --- storage preflight diagnostics (seed 003) -----------------------------------------------
    "STORAGE_DNS_FAILED": "Cannot resolve the storage endpoint {host}: {error}.",
    "STORAGE_TCP_REFUSED": "The storage endpoint {host}:{port} refused the connection.",
    "STORAGE_TCP_TIMEOUT": "Connecting to the storage endpoint {host}:{port} timed out.",
    "STORAGE_TLS_FAILED": "TLS handshake with the storage endpoint {host} failed: {error}.",
    "STORAGE_HTTP_BLOCKED": (
        "The storage endpoint {host} answered HTTP {status_code}; a firewall or proxy may be "
        "blocking it."
    ),
    "STORAGE_ENDPOINT_UNREACHABLE": "The storage endpoint {endpoint} is unreachable: {error}.",
    # --- server-side events (scheduler, watchdog) ---------------------------------------------
    "AGENT_OFFLINE": (
        "The agent stopped reporting (no heartbeat for {silent_seconds} s); the run was marked "
        "failed."
    ),
    "MISSED_SCHEDULE": (
        "Scheduled run for {scheduled_for} missed: the agent has been offline since {last_seen}."
    ),
    "SCHEDULE_SKIPPED_ACTIVE_RUN": (
        "Scheduled run for {scheduled_for} skipped: run {active_run_id} is still {active_status}."
    ),
    "CANCEL_TIMEOUT": (
        "The agent did not confirm the cancellation within {timeout_seconds} s; the run was "
        "closed as cancelled."
    ),
    "COMMAND_EXPIRED": "The {command_type} command expired before the agent picked it up.",
}

# Old (seed) ids → the neutral ids above.
ALIASES: dict[str, str] = {
    "KOPIA_UPLOAD_START": "BACKUP_UPLOAD_START",
    "KOPIA_UPLOAD_COMPLETE": "BACKUP_UPLOAD_COMPLETE",
    "KOPIA_PROGRESS_UPDATE": "BACKUP_PROGRESS_UPDATE",
    "KOPIA_UPLOAD_FAILED": "BACKUP_UPLOAD_FAILED",
    "KOPIA_POLICY": "REPO_POLICY",
}
_ALIAS_PREFIXES = (("KOPIA_RESTORE_", "RESTORE_"), ("KOPIA_", "REPO_"))

# Parameters holding byte counts read better as "1.5 GiB".
_BYTE_PARAMS = {"bytes_done", "bytes_total", "bytes_processed", "bytes_transferred", "size_bytes"}
_CANCEL_PHRASES = (
    "context canceled",
    "context cancelled",
    "operation cancelled",
    "operation canceled",
    "was cancelled",
    "was canceled",
)
_THIRD_PARTY = re.compile(r"\b(kopia|restic|borg(?:backup)?|rclone)\b", re.IGNORECASE)
# C0/C1 controls, zero-width and bidirectional overrides: nothing that moves or hides text.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]+")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_ID_CHARS = re.compile(r"[^A-Z0-9_]")


def canonical_id(message_id: str) -> str:
    """The catalog id for `message_id` (aliases resolved); unknown ids are returned unchanged."""
    if message_id in TEMPLATES:
        return message_id
    if message_id in ALIASES:
        return ALIASES[message_id]
    for old, new in _ALIAS_PREFIXES:
        if message_id.startswith(old) and new + message_id[len(old) :] in TEMPLATES:
            return new + message_id[len(old) :]
    return message_id


def is_cancellation_error(text: str) -> bool:
    lower = text.lower()
    return any(phrase in lower for phrase in _CANCEL_PHRASES)


def plain_text(value: Any, key: str = "") -> str:
    """One short line of plain text for a parameter value."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int | float) and key in _BYTE_PARAMS:
        text = format_bytes(value)
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        try:
            text = json.dumps(value, default=str, sort_keys=True, separators=(", ", ": "))
        except (TypeError, ValueError):
            text = MISSING
    text = _UNPRINTABLE.sub(" ", text).strip()
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return sanitize_branding(text) or MISSING


def sanitize_branding(text: str) -> str:
    return _THIRD_PARTY.sub(PRODUCT_NAME, text)


def format_event(message_id: str, params: Mapping[str, Any] | None = None) -> str:
    """The human message for an event; never raises, whatever the agent sent."""
    params = params if isinstance(params, Mapping) else {}
    message_id = message_id if isinstance(message_id, str) else ""
    key = canonical_id(message_id)
    template = TEMPLATES.get(key)
    if template is None:
        return _fallback(message_id, params)
    if key.endswith("_FAILED") and _is_cancelled(params):
        return CANCELLED_TEXT
    text = _PLACEHOLDER.sub(lambda m: plain_text(params.get(m[1]), m[1]), template)
    return sanitize_branding(text)


def _is_cancelled(params: Mapping[str, Any]) -> bool:
    return any(
        isinstance(params.get(name), str) and is_cancellation_error(params[name])
        for name in ("error", "message")
    )


def _fallback(message_id: str, params: Mapping[str, Any]) -> str:
    """Seed: use the `message` param; else say which event it was, readably."""
    message = params.get("message")
    if isinstance(message, str) and message.strip():
        return plain_text(message)
    safe_id = _ID_CHARS.sub("", message_id.upper())[:64] or "UNKNOWN"
    words = sanitize_branding(safe_id.replace("_", " ").strip().capitalize())
    details = ", ".join(
        f"{plain_text(k)}: {plain_text(v, str(k))}" for k, v in list(params.items())[:5]
    )
    return f"{words} ({details})." if details else f"{words}."
