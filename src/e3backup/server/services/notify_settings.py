"""A job's notification settings (`notify_json`): validated and sealed on save, shown without
secrets. The webhook secret is write-only: stored as SecretBox ciphertext in
`webhook_secret_enc`, answered as `has_webhook_secret`."""

from __future__ import annotations

import re
from typing import Any

from e3backup.server import webhook_target
from e3backup.server.crypto import SecretBox
from e3backup.server.notify import validate_webhook_url
from e3backup.server.services.errors import Invalid

WEBHOOK_SECRET_CONTEXT = "jobs.notify_json.webhook_secret"
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+$")


def seal(
    new: dict[str, Any] | None,
    previous: dict[str, Any] | None,
    box: SecretBox,
    allow_private_targets: bool = False,
) -> dict[str, Any] | None:
    """The stored `notify_json`; Invalid names the field (an internal webhook target is refused
    unless the server allows them: see server/webhook_target.py)."""
    if new is None:
        return None
    doc = {k: v for k, v in new.items() if k != "webhook_secret"}
    for address in doc.get("emails") or []:
        if not _EMAIL.match(address):
            raise Invalid(f"{address!r} is not an e-mail address", "notify.emails")
    url = doc.get("webhook_url")
    if not url:
        return doc
    try:
        validate_webhook_url(url)
        webhook_target.check_on_save(url, allow_private_targets)
    except ValueError as exc:
        raise Invalid(str(exc), "notify.webhook_url") from None
    secret = new.get("webhook_secret")
    if secret:
        doc["webhook_secret_enc"] = box.seal(secret, WEBHOOK_SECRET_CONTEXT)
    elif previous and previous.get("webhook_url") == url and previous.get("webhook_secret_enc"):
        doc["webhook_secret_enc"] = previous["webhook_secret_enc"]  # unchanged hook keeps it
    else:
        raise Invalid("a webhook needs webhook_secret (16+ characters)", "notify.webhook_secret")
    return doc


def public(notify_json: dict[str, Any] | None) -> dict[str, Any] | None:
    if notify_json is None:
        return None
    out = {k: v for k, v in notify_json.items() if not k.endswith("_enc")}
    if notify_json.get("webhook_url"):
        out["has_webhook_secret"] = bool(notify_json.get("webhook_secret_enc"))
    return out
