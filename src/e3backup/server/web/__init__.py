"""The web UI: server-rendered Jinja2 pages on the control server's FastAPI app, enhanced by
htmx and Alpine.js (vendored in static/vendor), one stylesheet (static/css/app.css) and one
helper script (static/js/app.js). Pages call the same services as the client API; a page
handler holds no query and no business rule.

How to add a page (e.g. Jobs)
-----------------------------
1. Router: ``web/routes_jobs.py`` with ``router = APIRouter(include_in_schema=False)`` (UI
   routes never enter the OpenAPI document) and add it to ``ROUTERS`` below. Plain ``def``
   handlers (they run in the threadpool, like the API's).
2. Handler: take ``page: PageView`` (web/view.py). It is the signed-in session: anonymous →
   303 to /login; for POST/PUT/DELETE the CSRF token was already checked. Use
   ``page.actor``, ``page.db``, ``page.ctx`` (``.box``, ``.settings``) and call services
   exactly as the API does, e.g. ``jobs.list_jobs(page.db, page.actor, None, 100, 0)``.
   Missing reads go into ``services/<domain>.py`` (tenant-scoped by ``actor.tenant_ids``).
   Answer with ``page.render("jobs.html", jobs=rows)`` or, after a POST,
   ``page.redirect("/jobs", "Job saved.")`` (303 + flash message).
3. Roles: services enforce them (``actor.require("operator")``); templates only hide what
   would be refused: ``{% if view.can("operator") %}<button>Run now</button>{% endif %}``
   (viewer < operator < admin; the same rule, ``Actor.allows``).
4. Errors: a ServiceError raised in a handler becomes the error page with the API's status
   (404/403/409/422...). To show an ``Invalid`` next to its field instead, catch it and
   re-render the form with ``exc.field`` and ``str(exc)``.
5. Template: ``web/templates/jobs.html`` starting ``{% extends "base.html" %}``, blocks
   ``title`` and ``content`` (``scripts`` for a page script in static/js/<page>.js: no inline
   scripts, the CSP forbids them). Components in ``_ui.html`` (imported as ``ui``):
   ``ui.badge(status)``, ``ui.time(dt)`` / ``ui.time(dt, "relative")``, ``ui.bytes(n)``,
   ``ui.duration(s)``, ``ui.empty_state(title, text, url, label)``, ``ui.scroll_region(label)``
   (wraps every wide table),
   ``ui.confirm_button(action, label, message, csrf_token)``, ``ui.csrf_field(csrf_token)``.
   Every form that POSTs carries ``{{ ui.csrf_field(csrf_token) }}``; htmx requests get the
   X-CSRF-Token header automatically. Confirmation: ``data-confirm="..."`` on a form or
   ``hx-confirm="..."`` on an htmx element opens the accessible dialog (never confirm()).
   Every input has a <label>; live regions get ``aria-live="polite"``.
6. htmx / Alpine: a POST renders the whole page; htmx takes the fragment it needs
   (``hx-post="/agents/tokens" hx-select="#token-panel" hx-target="#token-panel"
   hx-swap="outerHTML"``), so the form also works without JavaScript. A refused htmx
   request shows the error page's message as a flash. Polling: ``hx-get`` +
   ``hx-trigger="every 2s"`` on a fragment route; stop by answering without the trigger.
   Alpine components go in static/js/<page>.js (``Alpine.data`` in ``alpine:init``),
   included by the ``scripts`` block (it loads before Alpine).
7. Navigation: add a ``NavItem`` to ``web/nav.py`` (it shows once a GET route serves it).
8. Browser test: ``tests/web/test_<page>.py`` (tests/web/conftest.py). Fixtures: ``web`` (the
   session's live server: ``web.email("viewer")``, ``web.password``, ``web.api(...)`` with
   the MSP admin's token, ``web.enroll_new(host)``, ``web.new_tenant(name)`` for a view of
   your own), ``page_as("operator")`` → a signed-in Playwright page, ``pages.new()`` → an
   anonymous one; any console error or page error fails the test (``errors.allow("403")``
   when the test provokes one); ``check_page(page, "jobs")`` → axe (serious/critical fail),
   no sideways scrolling at 390 px, screenshots at 1280x800 and 390x844 in
   test-artifacts/screens/. Prefer ``page.request.post(...)`` (shares the cookies) to prove
   the server refuses what the page hides. One server and one browser per session: lean tests.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from e3backup.server.web import (
    errors,
    routes_admin,
    routes_agents,
    routes_auth,
    routes_dashboard,
    routes_job_fragments,
    routes_job_wizard,
    routes_jobs,
    routes_live,
    routes_repositories,
    routes_restore,
    routes_runs,
    routes_vms,
)
from e3backup.server.web.nav import remember_pages
from e3backup.server.web.templating import STATIC_DIR

ROUTERS = (
    routes_auth.router,
    routes_dashboard.router,
    routes_agents.router,
    routes_runs.router,
    routes_live.router,
    routes_vms.router,
    routes_restore.router,
    routes_repositories.router,
    routes_admin.router,
    routes_jobs.router,
    routes_job_wizard.router,
    routes_job_fragments.router,
)


def install(app: FastAPI) -> None:
    """Pages, static files and HTML error answers on UI paths (after the API's handlers)."""
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    remember_pages(app, ROUTERS)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
