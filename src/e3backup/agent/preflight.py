"""Storage preflight (seed 003): before touching storage, probe the endpoint step by step — DNS,
TCP, TLS, HTTP — and name the first step that failed with the seed's diagnostic id.

Ids: STORAGE_DNS_FAILED, STORAGE_TCP_REFUSED, STORAGE_TCP_TIMEOUT, STORAGE_TLS_FAILED,
STORAGE_HTTP_BLOCKED (an answer a proxy or firewall gives: 407, 451, an HTML 403),
STORAGE_ENDPOINT_UNREACHABLE (anything else: reset, no HTTP answer at all).
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

DEFAULT_TIMEOUT_S = 5.0
BLOCKING_STATUSES = (407, 451)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    steps: tuple[str, ...] = ()  # the steps that passed

    @property
    def error(self) -> str:
        detail = self.params.get("error") or self.params.get("status_code") or ""
        return f"{self.message_id}: {detail}" if detail else self.message_id


def normalize_endpoint(endpoint: str) -> str:
    """`host[:port]` or a URL → `scheme://host[:port]` (https when no scheme is given; seed 002's
    bug was a scheme the S3 client did not expect — here both spellings mean the same)."""
    text = endpoint.strip().rstrip("/")
    if not text:
        return ""
    if "://" not in text:
        text = "https://" + text
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"S3 endpoint {endpoint!r} is neither a host name nor an http(s) URL")
    return f"{parsed.scheme}://{parsed.netloc}"


def probe(endpoint_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ProbeResult:
    parsed = urlparse(endpoint_url)
    host = parsed.hostname or ""
    use_tls = parsed.scheme == "https"
    port = parsed.port or (443 if use_tls else 80)
    base = {"host": host, "port": port, "endpoint": endpoint_url}
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return ProbeResult(False, "STORAGE_DNS_FAILED", {**base, "error": _text(exc)})
    steps = ["dns"]
    try:
        sock = _connect(addresses, timeout_s)
    except ConnectionRefusedError:
        return ProbeResult(False, "STORAGE_TCP_REFUSED", base, tuple(steps))
    except TimeoutError:
        return ProbeResult(False, "STORAGE_TCP_TIMEOUT", base, tuple(steps))
    except OSError as exc:
        params = {**base, "error": _text(exc)}
        return ProbeResult(False, "STORAGE_ENDPOINT_UNREACHABLE", params, tuple(steps))
    steps.append("tcp")
    try:
        if use_tls:
            try:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, OSError) as exc:
                params = {**base, "error": _text(exc)}
                return ProbeResult(False, "STORAGE_TLS_FAILED", params, tuple(steps))
            steps.append("tls")
        return _http_check(sock, host, base, steps)
    finally:
        sock.close()


def _connect(addresses: list[Any], timeout_s: float) -> socket.socket:
    last: OSError = OSError("no address")
    for family, kind, proto, _name, address in addresses:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout_s)
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last


def _http_check(
    sock: socket.socket, host: str, base: dict[str, Any], steps: list[str]
) -> ProbeResult:
    conn = http.client.HTTPConnection(host, base["port"], timeout=sock.gettimeout())
    conn.sock = sock
    try:
        conn.request("HEAD", "/", headers={"User-Agent": "e3backup-agent-preflight"})
        response = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        error = f"no HTTP answer: {_text(exc)}"
        params = {**base, "error": error}
        return ProbeResult(False, "STORAGE_ENDPOINT_UNREACHABLE", params, tuple(steps))
    html = "html" in (response.getheader("Content-Type") or "").lower()
    if response.status in BLOCKING_STATUSES or (response.status == 403 and html):
        params = {**base, "status_code": response.status}
        return ProbeResult(False, "STORAGE_HTTP_BLOCKED", params, tuple(steps))
    steps.append("http")
    return ProbeResult(True, "", {**base, "status_code": response.status}, tuple(steps))


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
