"""Storage preflight against real sockets: a closed port, a full listen queue, a plain HTTP
server spoken to with TLS, an unresolvable name, a proxy-style 407, and a healthy endpoint."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from e3backup.agent.preflight import normalize_endpoint, probe


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_HEAD(self) -> None:
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "text/html")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url(server: ThreadingHTTPServer, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.server_address[1]}"


def test_closed_port_is_tcp_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = probe(f"http://127.0.0.1:{port}")
    assert (result.ok, result.message_id, result.steps) == (False, "STORAGE_TCP_REFUSED", ("dns",))


def test_full_listen_queue_is_tcp_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the accept queue: further SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            result = probe(f"http://127.0.0.1:{port}", timeout_s=1.0)
        finally:
            for filler in fillers:
                filler.close()
    assert result.message_id == "STORAGE_TCP_TIMEOUT"


def test_tls_to_a_plain_http_server_is_tls_failed(http_server: ThreadingHTTPServer) -> None:
    result = probe(url(http_server, "https"))
    assert result.message_id == "STORAGE_TLS_FAILED"
    assert result.steps == ("dns", "tcp")


def test_unresolvable_name_is_dns_failed() -> None:
    result = probe("https://nonexistent.invalid")
    assert result.message_id == "STORAGE_DNS_FAILED"
    assert result.params["host"] == "nonexistent.invalid"


@pytest.mark.parametrize("status", [407, 403])
def test_proxy_answers_are_http_blocked(http_server: ThreadingHTTPServer, status: int) -> None:
    http_server.status = status  # type: ignore[attr-defined]
    result = probe(url(http_server))
    assert (result.message_id, result.params["status_code"]) == ("STORAGE_HTTP_BLOCKED", status)


def test_a_healthy_endpoint_passes_every_step(http_server: ThreadingHTTPServer) -> None:
    result = probe(url(http_server))
    assert result.ok and result.steps == ("dns", "tcp", "http")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("s3.example.com", "https://s3.example.com"),
        ("s3.example.com:9000", "https://s3.example.com:9000"),
        ("http://127.0.0.1:8333/", "http://127.0.0.1:8333"),
        ("https://s3.example.com/some/path", "https://s3.example.com"),
        ("", ""),
    ],
)
def test_endpoint_with_or_without_scheme(given: str, expected: str) -> None:
    assert normalize_endpoint(given) == expected


def test_endpoint_with_another_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="neither"):
        normalize_endpoint("ftp://host")
