"""The event catalog: every id an engine emits has a template; formatting never raises and
never leaks markup-moving characters or third-party product names."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest

from e3backup.server.event_catalog import (
    ALIASES,
    CANCELLED_TEXT,
    MAX_VALUE_CHARS,
    MISSING,
    TEMPLATES,
    canonical_id,
    format_event,
)

SEEDS = Path("/work/shared/seeds")
# Packages whose code emits run events (the agent arrives in a later issue).
EMITTING_PACKAGES = ("e3backup.engines", "e3backup.agent")
EVENT_CALLS = {"emit", "VmEvent", "push_event", "RunEvent"}


def _emitted_ids() -> set[str]:
    """Message ids passed to an event call anywhere in the emitting packages, resolved by
    evaluating the argument expression in the module's own namespace."""
    found: set[str] = set()
    for package_name in EMITTING_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ModuleNotFoundError:
            continue
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            module = importlib.import_module(info.name)
            assert module.__file__ is not None
            tree = ast.parse(Path(module.__file__).read_text())
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name not in EVENT_CALLS:
                    continue
                args = [kw.value for kw in node.keywords if kw.arg == "message_id"]
                args = args or node.args[:1]
                for arg in args:
                    try:
                        value = eval(compile(ast.Expression(arg), "<arg>", "eval"), vars(module))
                    except NameError:  # a parameter passed through (the emit helper itself)
                        continue
                    if isinstance(value, str):
                        found.add(value)
    return found


def test_engine_ids_found() -> None:
    """Guard the scanner itself: it must see the VM engine's ids."""
    ids = _emitted_ids()
    assert {"HYPERV_VM_STARTING", "HYPERV_DISK_PLAN", "CANCELLED"} <= ids


def test_every_engine_id_has_a_template() -> None:
    missing = sorted(i for i in _emitted_ids() if canonical_id(i) not in TEMPLATES)
    assert missing == []


def test_every_seed_id_formats_with_a_template() -> None:
    if not SEEDS.is_dir():
        pytest.skip("seed documents not present")
    text = "\n".join(p.read_text() for p in SEEDS.glob("*.txt"))
    pattern = r"\b((?:HYPERV|KOPIA|CANCEL|STORAGE|DISK_IMAGE|RESTORE)_[A-Z_]*[A-Z]|CANCELLED)\b"
    seed_ids = set(re.findall(pattern, text)) - {"HYPERV_BACKUP_ENGINE"}  # a document's name
    assert len(seed_ids) > 30
    missing = sorted(i for i in seed_ids if canonical_id(i) not in TEMPLATES)
    assert missing == []


def test_no_third_party_product_names_in_templates() -> None:
    for message_id, template in TEMPLATES.items():
        assert not re.search(r"kopia|restic|borg|rclone|eazybackup", template, re.I), message_id


def _sample_params(template: str) -> dict[str, Any]:
    return {name: f"<{name}>" for name in re.findall(r"\{([a-z_]+)\}", template)}


@pytest.mark.parametrize("message_id", sorted(TEMPLATES))
def test_each_template_formats(message_id: str) -> None:
    params = _sample_params(TEMPLATES[message_id])
    text = format_event(message_id, params)
    assert "{" not in text and "}" not in text
    for name, value in params.items():
        assert value in text, name
    assert text.strip() == text and "\n" not in text
    # every placeholder missing: still a sentence, never an exception
    bare = format_event(message_id, {})
    assert "{" not in bare
    if params:
        assert MISSING in bare


@pytest.mark.parametrize(
    ("message_id", "params", "expected"),
    [
        (
            "HYPERV_VM_COMPLETE",
            {"vm_name": "web", "backup_type": "Incremental", "consistency_level": "Application"},
            "VM 'web' backed up successfully (Incremental, Application-consistent).",
        ),
        (
            "HYPERV_VM_STARTING",
            {"vm_name": "db", "extra": 1},
            "Starting backup of virtual machine 'db'.",
        ),
        (
            "HYPERV_RESTORE_DISK_PROGRESS",
            {"disk_name": "d0.vhdx", "bytes_done": 1536, "bytes_total": 3 * 1024**3},
            "Restoring disk: d0.vhdx - 1.5 KiB of 3.0 GiB.",
        ),
        ("CANCEL_REQUESTED", {}, "Backup cancellation requested by user."),
        ("CANCELLED", {"message": "Upload was cancelled."}, CANCELLED_TEXT),
        # a failure whose error is a cancellation reads as a cancellation (seed)
        ("HYPERV_VM_FAILED", {"vm_name": "x", "message": "context canceled"}, CANCELLED_TEXT),
        ("BACKUP_UPLOAD_FAILED", {"error": "Operation Cancelled by caller"}, CANCELLED_TEXT),
        ("BACKUP_UPLOAD_FAILED", {"error": "disk full"}, "Upload failed: disk full."),
        # old seed ids still format, through the alias table or the prefix rule
        ("KOPIA_UPLOAD_FAILED", {"error": "timeout"}, "Upload failed: timeout."),
        ("KOPIA_POLICY", {"compression": "zstd"}, "Backup policy applied: compression zstd."),
        ("KOPIA_RESTORE_COMPLETED", {}, "Restore completed."),
        # product names in params are replaced
        (
            "BACKUP_UPLOAD_FAILED",
            {"error": "kopia: repository not found (Restic-style)"},
            "Upload failed: e3backup: repository not found (e3backup-style).",
        ),
        (
            "HYPERV_BACKUP_COMPLETE",
            {"message": "2 of 2 VM(s) backed up (success)"},
            "2 of 2 VM(s) backed up (success)",
        ),
        (
            "AGENT_OFFLINE",
            {"silent_seconds": 720},
            "The agent stopped reporting (no heartbeat for 720 s); the run was marked failed.",
        ),
        # non-string values
        (
            "HYPERV_DISK_PLAN",
            {"vm_name": "v", "disk": 0, "read_plan": True, "reason": None},
            "Disk 0 of 'v': yes read ((unknown)).",
        ),
        (
            "HYPERV_VM_FAILED",
            {"vm_name": ["a", 1], "message": {"k": "v"}},
            'VM \'["a", 1]\' backup failed: {"k": "v"}.',
        ),
    ],
)
def test_format_examples(message_id: str, params: dict[str, Any], expected: str) -> None:
    assert format_event(message_id, params) == expected


@pytest.mark.parametrize(
    ("message_id", "params", "expected"),
    [
        ("SOMETHING_NEW", {"message": "A thing happened"}, "A thing happened"),
        ("SOMETHING_NEW", {"size": 3}, "Something new (size: 3)."),
        ("SOMETHING_NEW", {}, "Something new."),
        ("<script>alert(1)</script>", {}, "Scriptalert1script."),
        ("", {}, "Unknown."),
        ("KOPIA_SNAPSHOT_X", {}, "e3backup snapshot x."),
    ],
)
def test_unknown_ids_fall_back_readably(
    message_id: str, params: dict[str, Any], expected: str
) -> None:
    assert format_event(message_id, params) == expected


def test_hostile_params_stay_one_plain_line() -> None:
    hostile = {
        "vm_name": "a\nb\r\x1b[31mred\x1b[0m\u202eevil\u200b\x00",
        "message": "x" * 10_000,
    }
    text = format_event("HYPERV_VM_FAILED", hostile)
    assert not re.search("[\x00-\x1f\x7f\u202e\u200b]", text)
    assert "a b" in text and "red" in text
    assert len(text) < 2 * MAX_VALUE_CHARS + 100
    # braces in values are not re-interpreted as placeholders
    assert format_event("HYPERV_VM_STARTING", {"vm_name": "{message}"}) == (
        "Starting backup of virtual machine '{message}'."
    )
    # wrong types for the arguments themselves
    assert format_event("HYPERV_VM_STARTING", "not a dict") == (  # type: ignore[arg-type]
        f"Starting backup of virtual machine '{MISSING}'."
    )
    assert format_event(None, None) == "Unknown."  # type: ignore[arg-type]


def test_aliases_point_at_templates() -> None:
    assert all(target in TEMPLATES for target in ALIASES.values())
