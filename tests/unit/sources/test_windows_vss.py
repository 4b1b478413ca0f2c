"""VSS over recorded PowerShell exchanges (tests/fixtures/windows/vss.json): create → device →
delete on every exit path, Create's return codes and writer failures as clear errors, and the
language-independent `vssadmin list writers` parser."""

from __future__ import annotations

import base64
import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from e3backup.core.errors import CancelledError
from e3backup.sources.hypervisors.hyperv.powershell import PowerShell, op_of
from e3backup.sources.windows.vss import (
    Vss,
    VssError,
    delete_argv,
    describe_failed,
    normalize_volume,
    parse_writers,
)
from fixtures.hyperv_host import Replay

DOC = json.loads((Path(__file__).parents[2] / "fixtures/windows/vss.json").read_text())
SHADOW = "{5D1D4F2A-7C3E-4B8F-9A61-2E0C4D7B9F13}"


def replay(scenario: str) -> Replay:
    return Replay(copy.deepcopy(DOC["scenarios"][scenario]["exchanges"]))


def test_shadow_copy_created_read_and_deleted() -> None:
    transport = replay("ok")
    with Vss(PowerShell(transport)).shadow(normalize_volume("c:") or "") as shadow:
        assert shadow.device == "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy7"
        assert shadow.id == SHADOW
        assert transport.ops() == ["vss-create", "vss-get"]
    assert transport.ops() == ["vss-create", "vss-get", "vss-delete"]
    assert transport.calls[0][1] == {"volume": "C:\\"}
    assert transport.left() == {}


@pytest.mark.parametrize("failure", [RuntimeError("engine failed"), CancelledError("cancelled")])
def test_shadow_copy_deleted_when_the_backup_fails_or_is_cancelled(failure: Exception) -> None:
    transport = replay("ok")
    with pytest.raises(type(failure)), Vss(PowerShell(transport)).shadow("C:\\"):
        raise failure
    assert transport.ops() == ["vss-create", "vss-get", "vss-delete"]
    assert transport.calls[-1][1] == {"id": SHADOW}


def test_writer_veto_names_the_failed_writer_and_creates_nothing() -> None:
    transport = replay("writer-veto")
    with pytest.raises(VssError) as err, Vss(PowerShell(transport)).shadow("C:\\"):
        pytest.fail("no shadow copy exists")
    message = str(err.value)
    assert "vetoed" in message and "Win32_ShadowCopy.Create 10" in message
    assert "'SqlServerWriter' [8] Failed (last error: Non-retryable error)" in message
    assert "System Writer" not in message  # stable writers are not blamed
    assert transport.ops() == ["vss-create", "vss-writers"]  # nothing to delete


def test_provider_failure_without_writer_states_still_says_what_create_returned() -> None:
    transport = replay("provider-failure-no-writers")
    with pytest.raises(VssError, match=r"provider failed .*Create 12.*writer states unavailable"):
        Vss(PowerShell(transport)).create("D:\\")


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("access-denied", r"vss-create: Access denied"),
        ("no-storage", r"not enough shadow copy storage .*Create 6"),
    ],
)
def test_create_failures_are_clear(scenario: str, expected: str) -> None:
    with pytest.raises(VssError, match=expected):
        Vss(PowerShell(replay(scenario))).create("C:\\")


def test_vanished_shadow_copy_fails_and_still_tries_to_delete() -> None:
    transport = replay("vanished")
    with pytest.raises(VssError, match="vanished"), Vss(PowerShell(transport)).shadow("C:\\"):
        pytest.fail("no device to read")
    assert transport.ops() == ["vss-create", "vss-get", "vss-delete"]


def test_failed_delete_is_logged_and_the_runs_own_error_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = replay("delete-fails")
    vss = Vss(PowerShell(transport))
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(RuntimeError, match="read error"),
        vss.shadow("C:\\"),
    ):
        raise RuntimeError("read error")
    assert "could not delete VSS shadow copy" in caplog.text and "Generic failure" in caplog.text


@pytest.mark.parametrize("lang", ["de", "fr"])
def test_writer_parser_does_not_depend_on_the_language(lang: str) -> None:
    writers = parse_writers(DOC["writers_localized"][lang])
    assert writers and all(w.name and w.last_error for w in writers)
    failed = [w for w in writers if w.failed]
    assert len(failed) == 1
    expected = {"de": ("Microsoft Exchange Writer", 9), "fr": ("WMI Writer", 7)}[lang]
    assert (failed[0].name, failed[0].state) == expected
    assert expected[0] in describe_failed(writers)


def test_writer_parser_reads_every_block() -> None:
    lines = DOC["scenarios"]["writer-veto"]["exchanges"]["vss-writers"][0]["data"]["lines"]
    assert [(w.name, w.state, w.last_error) for w in parse_writers(lines)] == [
        ("Task Scheduler Writer", 1, "No error"),
        ("SqlServerWriter", 8, "Non-retryable error"),
        ("System Writer", 1, "No error"),
    ]


@pytest.mark.parametrize(
    ("source", "volume"),
    [
        ("C:", "C:\\"),
        ("d:\\", "D:\\"),
        ("\\\\?\\Volume{0c1f7a4e-9b2d-4e61-8a3f-5b7d2c9e1a04}", None),
        ("\\\\.\\PhysicalDrive0", None),
        ("C:\\Users", None),
        ("/dev/sda", None),
    ],
)
def test_volume_names(source: str, volume: Any) -> None:
    if "Volume{" in source:
        volume = source + "\\"
    assert normalize_volume(source) == volume


def test_crash_cleanup_command_deletes_the_shadow_copy() -> None:
    argv = delete_argv(SHADOW)
    script = base64.b64decode(argv[-1]).decode("utf-16-le")
    assert argv[0] == "powershell.exe" and "-NonInteractive" in argv
    assert op_of(script) == "vss-delete" and SHADOW in script and "Remove-CimInstance" in script
