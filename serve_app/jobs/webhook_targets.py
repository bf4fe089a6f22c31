"""Where a webhook may go: URLs that would turn the service on its own network are refused
(SSRF, OWASP API7), at submission and again at every delivery attempt, and a delivery
connects to the very address that was checked.

An address is refused unless it is global unicast. IPv6 forms that carry an IPv4 address
(IPv4-mapped and IPv4-compatible, SIIT, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged
by the IPv4 address they carry, so ``[64:ff9b::7f00:1]`` is loopback; Teredo, NAT64's
local-use ``64:ff9b:1::/48`` and the deprecated site-local ``fec0::/10`` are refused outright
(what they reach depends on relays inside someone's network).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from serve_app.core.errors import InvalidParameter

RESOLVE_TIMEOUT_S = 5.0
MAX_URL_CHARS = 2000

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_REFUSED_V6 = {
    ipaddress.ip_network("64:ff9b:1::/48"): "NAT64 local-use",
    ipaddress.ip_network("2001::/32"): "Teredo",
    ipaddress.ip_network("fec0::/10"): "site-local",
}


class WebhookRefused(InvalidParameter):
    """A webhook URL the service will not call: malformed, unresolvable, or inside the network."""

    code = "invalid_webhook_url"


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries by a translation or tunnel scheme, if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64 or address in _SIIT:
        return low32
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # ::a.b.c.d (:: and ::1 are themselves)
        return low32
    return None


def refusal(address: Address) -> str | None:
    """Why a webhook may not go to ``address``; None when it may (a global unicast address)."""
    if isinstance(address, ipaddress.IPv6Address):
        for network, name in _REFUSED_V6.items():
            if address in network:
                return f"a {name} IPv6 address"
        inner = embedded_ipv4(address)
        if inner is not None:
            why = refusal(inner)
            return f"an IPv6 form of {inner}, {why}" if why else None
    if address.is_multicast:
        return "a multicast address"
    if not address.is_global:
        return "not a global address (loopback, private, link-local or reserved)"
    return None


async def check_webhook_url(url: str, allow: Sequence[str] = ()) -> str | None:
    """Refuse URLs that would turn the service on its own network: every address the host
    resolves to must be global, unless the host or a network it is in is in ``allow``
    (STT_WEBHOOK_ALLOW_HOSTS: host names, addresses or CIDRs of internal receivers).

    Returns the checked address to connect to (None for a host allowed by name)."""
    if len(url) > MAX_URL_CHARS or not url.isprintable():
        raise WebhookRefused(f"webhook_url must be printable and at most {MAX_URL_CHARS} characters.")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookRefused(f"webhook_url is not a URL: {exc}.") from None
    if parts.scheme not in ("http", "https") or not host:
        raise WebhookRefused("webhook_url must be an http:// or https:// URL with a host.")
    if host in allow:
        return None
    try:
        found = await asyncio.wait_for(
            asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, UnicodeError, asyncio.TimeoutError):
        raise WebhookRefused(f"webhook_url's host '{host}' cannot be resolved.") from None
    networks = [ipaddress.ip_network(a, strict=False) for a in allow if _is_network(a)]
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if any(_within(address, net) for net in networks):
            continue
        why = refusal(address)
        if why:
            raise WebhookRefused(
                f"webhook_url's host '{host}' is {address}, {why}: only global unicast addresses are "
                "called (STT_WEBHOOK_ALLOW_HOSTS admits internal receivers)."
            )
    return found[0][-1][0]


def pinned(url: str, address: str | None) -> tuple[str, dict, dict]:
    """The URL, headers and httpx extensions that connect to ``address`` (the one checked)
    while the receiver still sees its own host name (Host header, TLS SNI and certificate)."""
    if address is None:
        return url, {}, {}
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host + (f":{parts.port}" if parts.port else "")
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), headers, extensions


def _within(address: Address, network) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.1.2.3 is in an allowed 10.0.0.0/8
    return address.version == network.version and address in network


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
