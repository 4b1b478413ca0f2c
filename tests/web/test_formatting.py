"""Sizes and durations are rendered human on the server (templating.py) and again by
static/js/app.js in the browser: the two must agree, or a page's text would change under the
reader (and a test reading a fragment before app.js ran would see something else)."""

from __future__ import annotations

from typing import Any

from e3backup.server.web.templating import STATIC_DIR, human_bytes, human_duration

SIZES = [0, 1, 512, 1023, 1024, 1536, 10 * 1024 - 1, 99 * 1024, 123_456_789, 21474836480,
         107374182400, 3 * 1024**4, 5 * 1024**5, 7 * 1024**6]  # fmt: skip
DURATIONS = [0, 0.4, 0.5, 2.5, 42, 59.6, 60, 200, 3599, 3600, 7500, 86399, 86400, 97_200, 10**6]


def test_server_and_browser_format_alike(browser: Any) -> None:
    page = browser.new_page()
    try:
        page.set_content("<!doctype html><title>t</title>")
        page.add_script_tag(path=str(STATIC_DIR / "js" / "app.js"))
        in_browser = page.evaluate(
            "([sizes, durations]) => [sizes.map(window.e3.humanBytes),"
            " durations.map(window.e3.humanDuration)]",
            [SIZES, DURATIONS],
        )
    finally:
        page.close()
    assert in_browser == [[human_bytes(n) for n in SIZES], [human_duration(s) for s in DURATIONS]]


def test_server_side_examples() -> None:
    assert [human_bytes(n) for n in (512, 1536, 21474836480, 107374182400)] == [
        "512 B", "1.50 KiB", "20.0 GiB", "100 GiB"]  # fmt: skip
    assert [human_duration(s) for s in (42, 200, 7500, 97_200)] == [
        "42 s", "3 min 20 s", "2 h 5 min", "1 d 3 h"]  # fmt: skip
