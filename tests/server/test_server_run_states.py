"""The run state machine, table-driven: forward only, a terminal status is final."""

from __future__ import annotations

import pytest

from e3backup.server.services.errors import Conflict, Invalid
from e3backup.server.services.run_states import transition

TERMINAL = ["success", "warning", "partial_success", "failed", "cancelled"]
FORWARD = [
    ("queued", "starting"),
    ("queued", "running"),
    ("queued", "cancelled"),
    ("starting", "running"),
    ("starting", "failed"),
    *[("running", t) for t in TERMINAL],
]
REFUSED = [
    ("running", "starting"),
    ("running", "queued"),
    ("starting", "queued"),
    *[(t, "running") for t in TERMINAL],
    *[(t, "queued") for t in TERMINAL],
    ("success", "failed"),
    ("cancelled", "success"),
    ("failed", "cancelled"),
]


@pytest.mark.parametrize(("current", "new"), FORWARD)
def test_forward_moves_change_the_status(current: str, new: str) -> None:
    assert transition(current, new) is True


@pytest.mark.parametrize(("current", "new"), REFUSED)
def test_backward_moves_and_moves_out_of_a_terminal_status_are_refused(
    current: str, new: str
) -> None:
    with pytest.raises(Conflict):
        transition(current, new)


@pytest.mark.parametrize("status", ["queued", "starting", "running", *TERMINAL])
def test_repeating_the_current_status_is_a_no_op(status: str) -> None:
    assert transition(status, status) is False


def test_unknown_status_is_invalid() -> None:
    with pytest.raises(Invalid):
        transition("running", "paused")
