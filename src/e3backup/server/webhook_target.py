"""Where a job's webhook may point: internal addresses are refused (SSRF) unless the server
setting `notify_allow_private_targets` is on (on-prem receivers on a private network).

Checked twice: when the job is saved (a literal address, or a name that resolves now) and when
a notification is sent. At send time the name is resolved once, every address is checked, and
the request goes to a checked address with the name kept as Host header and TLS SNI (and for
certificate checks), so a DNS answer that changes between check and connect (rebinding) cannot
redirect it. Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

SETTING_HINT = (
    "internal targets are refused unless the server setting notify_allow_private_targets "
    "is on (E3BACKUP_SERVER_NOTIFY_ALLOW_PRIVATE_TARGETS=true)"
)
_RULES: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("::/128", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata service)"),
    ("fe80::/10", "link-local"),
    ("10.0.0.0/8", "private network"),
    ("172.16.0.0/12", "private network"),
    ("192.168.0.0/16", "private network"),
    ("fc00::/7", "unique local (private network)"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/96", "IPv4-compatible"),
)
_NETWORKS = tuple((ipaddress.ip_network(net), rule) for net, rule in _RULES)


class TargetRefused(ValueError):
    """The webhook target is an internal address (the message names the rule)."""


class TargetUnresolvable(OSError):
    """The webhook's host name does not resolve (now)."""


def refusal(address: IPAddress) -> str | None:
    """The rule `address` breaks ("loopback", ...), or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return refusal(embedded)
    for network, rule in _NETWORKS:
        if address.version == network.version and address in network:
            return rule
    return None if address.is_global else "non-public (reserved)"


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolvable(f"cannot resolve the webhook host {host}: {exc}") from None
    return [str(info[4][0]) for info in infos]


def resolve(host: str, port: int, resolver: Resolver = system_resolver) -> list[IPAddress]:
    """The addresses `host` stands for (a literal is itself), unique, in resolver order."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    out: list[IPAddress] = []
    for text in resolver(host, port):
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
        if address not in out:
            out.append(address)
    if not out:
        raise TargetUnresolvable(f"the webhook host {host} has no address")
    return out


def check_addresses(host: str, addresses: Sequence[IPAddress]) -> None:
    """TargetRefused when any address `host` resolves to is internal."""
    for address in addresses:
        rule = refusal(address)
        if rule is None:
            continue
        if _literal(host) is not None:
            raise TargetRefused(f"webhook target {address} is a {rule} address; {SETTING_HINT}")
        raise TargetRefused(
            f"webhook host {host} resolves to {address}, a {rule} address; {SETTING_HINT}"
        )


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise TargetRefused("webhook URL has no host")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def check_on_save(url: str, allow_private: bool, resolver: Resolver = system_resolver) -> None:
    """Save-time check: a literal or a name that resolves now must be public. A name that does
    not resolve yet is accepted; the send-time check decides then."""
    if allow_private:
        return
    host, port = _host_port(url)
    try:
        addresses = resolve(host, port, resolver)
    except TargetUnresolvable:
        return
    check_addresses(host, addresses)


@dataclass(frozen=True)
class PinnedTarget:
    """One checked address to connect to, and the name the request is for."""

    address: IPAddress
    host: str
    port: int


def pin(url: str, allow_private: bool, resolver: Resolver = system_resolver) -> list[PinnedTarget]:
    """Send-time: resolve once, check every address, return them in connection order.
    TargetUnresolvable when the name does not resolve, TargetRefused when one is internal."""
    host, port = _host_port(url)
    addresses = resolve(host, port, resolver)
    if not allow_private:
        check_addresses(host, addresses)
    return [PinnedTarget(address, host, port) for address in addresses]
