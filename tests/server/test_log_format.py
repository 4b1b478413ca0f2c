"""`log_json` "auto" (the default): JSON lines when stderr is not a terminal, plain lines on a
terminal (a real pseudo-terminal here); true/false force either."""

from __future__ import annotations

import io
import os
import sys

import pytest

from e3backup.server.logging_json import use_json
from e3backup.server.settings import ServerSettings


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_auto_is_plain_on_a_terminal_and_json_elsewhere() -> None:
    leader, follower = os.openpty()
    with open(follower, "w") as tty, open(os.devnull, "w") as devnull:
        assert use_json("auto", tty) is False
        assert use_json(True, tty) is True
        assert use_json("auto", devnull) is True
        assert use_json(False, devnull) is False
    os.close(leader)
    assert use_json("auto", io.StringIO()) is True


def test_setting_defaults_to_auto_and_accepts_booleans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E3BACKUP_SERVER_LOG_JSON", raising=False)
    assert ServerSettings().log_json == "auto"
    for text, value in (("true", True), ("false", False), ("auto", "auto")):
        monkeypatch.setenv("E3BACKUP_SERVER_LOG_JSON", text)
        assert ServerSettings().log_json == value
