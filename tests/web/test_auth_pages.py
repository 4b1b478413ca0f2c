"""Sign-in, sign-out, CSRF and roles in a real browser against a live server."""

from __future__ import annotations

import re

import httpx
from world import PASSWORD


def _csrf(page) -> str:
    token: str = page.locator('meta[name="csrf-token"]').get_attribute("content")
    return token


def test_anonymous_pages_redirect_to_sign_in_and_back(pages) -> None:
    page = pages.new()
    page.goto("/agents")
    assert re.search(r"/login\?next=%2Fagents$", page.url), page.url
    page.get_by_label("Email").fill(pages.web.email("operator"))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/agents$"))
    assert page.get_by_role("heading", name="Agents", level=1).is_visible()
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Agents").get_attribute("aria-current") == "page"
    assert nav.get_by_role("link", name="Dashboard").get_attribute("aria-current") is None


def test_wrong_password_and_unknown_email_get_the_same_clear_error(pages, check_page) -> None:
    page = pages.new()
    answers = []
    for email, password in ((pages.web.email("admin"), "not the password"), ("no@one.test", "x")):
        page.goto("/login")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        alert = page.get_by_role("alert")
        answers.append(alert.inner_text())
        assert page.url.endswith("/login")
        assert page.get_by_label("Email").input_value() == email  # kept for the retry
    assert answers == ["Wrong email or password."] * 2
    assert not [c for c in page.context.cookies() if c["name"] == "e3_session"]
    check_page(page, "login-error")


def test_keyboard_only_sign_in_then_sign_out_ends_the_session(pages) -> None:
    page = pages.new()
    page.goto("/login")
    assert page.evaluate("document.activeElement.id") == "email"  # autofocus
    page.keyboard.type(pages.web.email("admin"))
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Sign in"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/$"))
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    session = next(c["value"] for c in page.context.cookies() if c["name"] == "e3_session")
    me = httpx.get(f"{pages.web.url}/api/v1/me", cookies={"e3_session": session})
    assert me.json()["email"] == pages.web.email("admin")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login$"))
    assert "You are signed out." in page.get_by_role("status").first.inner_text()
    page.goto("/")
    assert "/login" in page.url
    stale = httpx.get(f"{pages.web.url}/api/v1/me", cookies={"e3_session": session})
    assert stale.status_code == 401  # ended on the server, not just forgotten by the browser


def test_a_form_post_without_the_csrf_token_is_refused(page_as, web) -> None:
    page = page_as("admin")
    page.goto("/agents")
    before = web.api("GET", "/agents").json()["total"]
    for form in ({"expires_in_s": "3600"}, {"expires_in_s": "3600", "csrf_token": "csrf_wrong"}):
        answer = page.request.post("/agents/tokens", form=form)
        assert answer.status == 403, answer.text()
        assert "CSRF" in answer.text()
    good = page.request.post(
        "/agents/tokens", form={"expires_in_s": "3600", "csrf_token": _csrf(page)}
    )
    assert good.status == 200 and "e3backup agent enroll" in good.text()
    # htmx sends the token as the X-CSRF-Token header (no form field here)
    page.evaluate(
        "htmx.ajax('POST', '/agents/tokens', {values: {expires_in_s: 3600},"
        " target: '#token-panel', select: '#token-panel', swap: 'outerHTML'})"
    )
    assert page.locator("#enroll-command").inner_text().startswith("e3backup agent enroll")
    assert page.url.endswith("/agents")
    assert web.api("GET", "/agents").json()["total"] == before


def test_a_viewer_sees_no_admin_controls_and_a_direct_post_is_refused(page_as, web, errors) -> None:
    agent = web.enroll_new("viewer-sees-me")
    page = page_as("viewer")
    page.goto("/agents")
    row = page.locator(f'tr[data-agent-id="{agent.agent_id}"]')
    assert "viewer-sees-me" in row.inner_text()
    for name in ("Disable", "Delete", "Create enrollment token"):
        assert page.get_by_role("button", name=name).count() == 0, name
    assert page.get_by_role("heading", name="Download / install the agent").is_visible()
    csrf = _csrf(page)
    for path in (f"/agents/{agent.agent_id}/disable", f"/agents/{agent.agent_id}/delete"):
        refused = page.request.post(path, form={"csrf_token": csrf})
        assert refused.status == 403, (path, refused.status)
        assert "needs the admin role" in refused.text()
    token = page.request.post("/agents/tokens", form={"expires_in_s": "3600", "csrf_token": csrf})
    assert token.status == 403
    errors.allow("403")  # the htmx request below is refused on purpose (htmx logs it too)
    page.evaluate(f"htmx.ajax('POST', '/agents/{agent.agent_id}/disable', {{target: 'main'}})")
    assert "needs the admin role" in page.locator(".flash-error").inner_text()
    assert web.api("GET", f"/agents/{agent.agent_id}").json()["status"] == "enabled"
