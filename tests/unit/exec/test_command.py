"""The subprocess wrapper against real tools (sh is on every machine the tests run on)."""

from __future__ import annotations

import logging

import pytest

from e3backup.core.errors import CommandFailed
from e3backup.exec.command import Command


def test_runs_and_captures_output() -> None:
    result = Command("sh").run(["-c", "echo out; echo err >&2"])
    assert result.returncode == 0
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.argv[1:] == ("-c", "echo out; echo err >&2")


def test_unexpected_exit_status_raises_with_stderr_tail() -> None:
    with pytest.raises(CommandFailed, match=r"status 3: boom"):
        Command("sh").run(["-c", "echo boom >&2; exit 3"])


def test_allowed_exit_codes_are_not_errors() -> None:
    result = Command("sh", allowed_exit_codes=(0, 1)).run(["-c", "exit 1"])
    assert result.returncode == 1


def test_missing_binary_is_a_clear_error() -> None:
    command = Command("e3backup-no-such-tool")
    assert not command.available()
    with pytest.raises(CommandFailed, match="not installed"):
        command.run([])


def test_timeout_is_a_clear_error() -> None:
    with pytest.raises(CommandFailed, match="did not finish within 1 s"):
        Command("sleep").run(["5"], timeout_s=1)


def test_stderr_is_logged_as_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="e3backup.exec.command"):
        Command("sh").run(["-c", "echo visible >&2"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["visible"]
