"""The PowerShell runner and its parsers: envelope, single object vs array, nulls, enums as
ints or names, /Date(ms)/, escaped non-ASCII, CLIXML stderr, WMI job polling and timeouts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from e3backup.agent.handlers.hyperv import supported
from e3backup.sources.hypervisors.base import HypervisorError
from e3backup.sources.hypervisors.hyperv import discovery, paths, rct
from e3backup.sources.hypervisors.hyperv.powershell import (
    PowerShell,
    PowerShellError,
    TransportResult,
    as_list,
    enum_name,
    op_of,
    parse_date,
    parse_envelope,
    script_for,
)
from e3backup.sources.hypervisors.hyperv.wmi import Wmi, WmiError
from fixtures.hyperv_host import script_params


class Answers:
    def __init__(self, *stdout: object) -> None:
        self.stdout = list(stdout)
        self.scripts: list[str] = []

    def run(self, script: str, timeout_s: float) -> TransportResult:
        self.scripts.append(script)
        return TransportResult(json.dumps({"ok": True, "data": self.stdout.pop(0)}))


def test_script_carries_params_as_inert_json() -> None:
    name = "it's $(Remove-Item C:\\) \"quoted\" 'Web & DB'"
    script = script_for("describe-vms", "Get-VM", {"name": name})
    assert op_of(script) == "describe-vms"
    assert script_params(script) == {"name": name}
    assert "$(Remove-Item" not in script.split("@'")[0]  # only inside the JSON here-string


def test_envelope_parsing() -> None:
    escaped = '{"ok":true,"data":{"Name":"Sicherung \\u00fcber \\ud83d\\ude00"}}'
    assert parse_envelope("x", TransportResult(escaped))["Name"] == "Sicherung über 😀"
    with pytest.raises(PowerShellError, match="x: Access is denied"):
        parse_envelope("x", TransportResult('{"ok":false,"error":{"message":"Access is denied"}}'))
    clixml = '#< CLIXML\r\n<Objs><S S="Error">Get-VM : not recognized_x000D__x000A_</S></Objs>'
    with pytest.raises(HypervisorError, match=r"exit code 1.*Get-VM : not recognized"):
        parse_envelope("x", TransportResult("", clixml, 1))
    with pytest.raises(HypervisorError, match="no usable answer"):
        parse_envelope("x", TransportResult("WARNING: something", "", 0))


def test_value_parsers() -> None:
    assert as_list(None) == [] and as_list({"a": 1}) == [{"a": 1}] and as_list([1, None]) == [1]
    states = discovery.VM_STATES
    assert enum_name(2, states) == enum_name("2", states) == enum_name("running", states)
    assert enum_name(424242, states) == "424242"
    expected = datetime(2024, 12, 11, 7, 33, 20, tzinfo=UTC)
    assert parse_date("/Date(1733902400000)/") == expected
    assert parse_date("\\/Date(1733902400000)\\/") == expected
    assert parse_date("2024-12-11T07:33:20Z") == expected and parse_date(None) is None


def test_lookup_refs_and_paths() -> None:
    assert discovery.clean_ref(" Web &amp; DB 01 ") == "Web & DB 01"
    assert discovery.is_guid("{9E479325-C193-45E2-A918-5A09A06FF251}")
    assert not discovery.is_guid("web01")
    long_form = "\\\\?\\C:\\ClusterStorage\\Volume1\\VMs\\a b\\d.vhdx"
    assert paths.same_path(long_form, "c:/clusterstorage/volume1/VMs/a b//d.vhdx")
    assert paths.display("\\\\?\\UNC\\srv\\share\\d.vhdx") == "\\\\srv\\share\\d.vhdx"
    assert not paths.same_path("\\\\srv\\share\\d.vhdx", "C:\\share\\d.vhdx")
    assert supported("win32") and not supported("linux")


def test_rct_extents_are_aligned_clipped_and_merged() -> None:
    got = rct.align([(1000, 10), (1024, 100), (4000, 500), (0, 0)], 4096, 512)
    assert got == [(512, 1024 - 512 + 512), (3584, 512)]
    assert rct.Token.decode("e3b-1-abc") is None
    token = rct.Token("Microsoft:S", "disk", 5)
    assert rct.Token.decode(token.encode()) == token


def test_job_polling_maps_failures_and_times_out() -> None:
    running = {"JobState": 4, "PercentComplete": 50}
    failed = {"JobState": 10, "ErrorCode": 32779, "ErrorDescription": ""}
    wmi = Wmi(PowerShell(Answers(running, failed)), sleep=lambda _s: None)
    with pytest.raises(WmiError, match="error 32779: file not found") as caught:
        wmi.wait("JOB-1", "reading")
    assert caught.value.code == 32779

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    answers = Answers(*[running] * 5)
    wmi = Wmi(PowerShell(answers), job_timeout_s=3, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(HypervisorError, match=r"did not finish within 3 s \(Running, 50 %\)"):
        wmi.wait("JOB-2", "creating")
    with pytest.raises(HypervisorError, match="unexpected WMI job id"):
        wmi.wait("x'; Remove-Item", "creating")
