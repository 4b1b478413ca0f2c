"""Trust in the control server: the server's certificate pinned on first contact (PBS/Kopia).

At enrollment the agent fetches the certificate the server presents and records its SHA-256;
afterwards it trusts exactly that certificate (a partial-chain trust anchor, no host-name check:
the pin is the identity), whoever signed it. Plain http is accepted only to a loopback address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import ssl
from urllib.parse import urlparse

from e3backup.core.errors import UsageError

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ("localhost",)


def server_address(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a server URL, refusing anything but https or loopback http."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"the server URL must be https://HOST[:PORT], not {url!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if parsed.scheme == "http" and not is_loopback(parsed.hostname):
        raise UsageError(
            f"refusing plain http to {parsed.hostname}: the agent token would travel in clear; "
            "use https (http is allowed only to 127.0.0.1 / localhost)"
        )
    return parsed.scheme, parsed.hostname, port


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CertificateUnavailable(UsageError):
    """The server could not be reached for its certificate."""


def fingerprint(pem: str) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as given by a person: colons, spaces and case ignored."""
    value = "".join(text.split()).replace(":", "").lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise UsageError(f"--fingerprint must be a SHA-256 (64 hex digits), not {text!r}")
    return value


def fetch_certificate(host: str, port: int, timeout_s: float = 10.0) -> str:
    """The certificate the server presents (PEM), unverified: the caller pins it."""
    try:
        return ssl.get_server_certificate((host, port), timeout=timeout_s)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateUnavailable(
            f"cannot fetch the TLS certificate of {host}:{port}: {exc}"
        ) from None


def first_contact(host: str, port: int, expected: str | None = None) -> tuple[str, str]:
    """(PEM, SHA-256) of the certificate to pin: whatever the server presents on first contact,
    or, with `expected` (a fingerprint obtained out of band), only that certificate."""
    pem = fetch_certificate(host, port)
    actual = fingerprint(pem)
    if expected is not None and normalize_fingerprint(expected) != actual:
        raise UsageError(
            f"{host}:{port} presents a certificate with SHA-256 {actual}, not the expected "
            f"{normalize_fingerprint(expected)}: refusing to connect"
        )
    return pem, actual


def pinned_context(pem: str, expected_sha256: str) -> ssl.SSLContext:
    """An SSL context trusting only the pinned certificate."""
    if fingerprint(pem) != expected_sha256.lower():
        raise UsageError("the pinned server certificate does not match its recorded fingerprint")
    context = ssl.create_default_context(cadata=pem)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False
    return context
