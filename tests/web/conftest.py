"""Browser tests: Playwright driving Debian's chromium (/usr/bin/chromium; never `playwright
install`) against a live `e3backup server` process.

Fixtures every page test gets:
- `web`: the session's server with an MSP tenant, a child tenant and one user per role
  (tests/web/world.py), shared by every module (building it costs several admin CLI runs).
  Assert on your own data; a test that needs exact counts makes `web.new_tenant(name)`
  (a child of the MSP) and switches to it with the tenant switcher.
- `browser` (tests/conftest.py): one chromium for the whole session; `page_as(role)`: a
  fresh context and page, signed in through the form. Every page fails its test on a console
  error or an uncaught page error (`errors.allow("403")` for one a test provokes on purpose).
- `check_page(page, name)`: axe-core (tests/web/vendor) at 1280x800 and 390x844, failing on
  serious or critical violations or on a page wider than a 390 px screen; screenshots of both
  into test-artifacts/screens/ (git-ignored; E3BACKUP_TEST_ARTIFACTS moves it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from world import WebWorld, build_world

from fixtures.server_process import running_server
from fixtures.vm import guest_image

__all__ = ["guest_image"]  # the tiny QEMU guest, for test_e2e_browser.py

AXE_JS = Path(__file__).parent / "vendor" / "axe-4.10.3.min.js"
ARTIFACTS = Path(
    os.environ.get("E3BACKUP_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")
)
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
BLOCKING_IMPACTS = ("serious", "critical")


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    data_dir = tmp_path_factory.mktemp("web-server")
    with running_server(data_dir, settings={"auth_failure_limit": "1000"}) as server:
        yield build_world(server)


@dataclass
class BrowserErrors:
    """Console errors and page errors seen so far; `allow` a substring a test expects."""

    seen: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def allow(self, substring: str) -> None:
        self.allowed.append(substring)

    def unexpected(self) -> list[str]:
        return [e for e in self.seen if not any(a in e for a in self.allowed)]


@dataclass
class Pages:
    browser: Any
    web: WebWorld
    errors: BrowserErrors
    contexts: list[Any] = field(default_factory=list)

    def new(self) -> Any:
        """A fresh context (no cookies) and page at 1280x800, errors recorded."""
        width, height = SIZES["desktop"]
        context = self.browser.new_context(
            base_url=self.web.url, viewport={"width": width, "height": height}
        )
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on(
            "console",
            lambda msg: (
                self.errors.seen.append(f"console: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.on("pageerror", lambda exc: self.errors.seen.append(f"page error: {exc}"))
        return page

    def signed_in(self, role: str) -> Any:
        page = self.new()
        page.goto("/login")
        page.get_by_label("Email").fill(self.web.email(role))
        page.get_by_label("Password").fill(self.web.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/$"))
        return page


@pytest.fixture
def errors() -> BrowserErrors:
    return BrowserErrors()


@pytest.fixture
def pages(browser: Any, web: WebWorld, errors: BrowserErrors) -> Iterator[Pages]:
    made = Pages(browser, web, errors)
    yield made
    for context in made.contexts:
        context.close()
    assert not errors.unexpected(), f"browser errors: {errors.unexpected()}"


@pytest.fixture
def page_as(pages: Pages) -> Callable[[str], Any]:
    """`page_as("viewer")`: a new browser context signed in as that role's user."""
    return pages.signed_in


def axe_violations(page: Any) -> list[str]:
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE_JS.read_text() + "\n;true")
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"
    )
    return [
        f"{v['impact']} {v['id']}: {v['help']} at {v['nodes']}"
        for v in result
        if v["impact"] in BLOCKING_IMPACTS
    ]


def check_page(page: Any, name: str) -> None:
    """axe and screenshots at both sizes; a phone-width page must not scroll sideways."""
    shots = ARTIFACTS / "screens"
    shots.mkdir(parents=True, exist_ok=True)
    problems = []
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        problems += [f"{size}: {v}" for v in axe_violations(page)]
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        if overflow > 0:
            problems.append(f"{size}: the page is {overflow} px wider than the window")
        page.screenshot(path=str(shots / f"{name}-{width}x{height}.png"), full_page=True)
    page.set_viewport_size(dict(zip(("width", "height"), SIZES["desktop"], strict=True)))
    assert not problems, "\n".join(problems)


@pytest.fixture(name="check_page")
def check_page_fixture() -> Callable[[Any, str], None]:
    return check_page
