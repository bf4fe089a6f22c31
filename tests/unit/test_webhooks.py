"""Webhook URLs that would turn the service on its own network are refused (SSRF).

Only validation and name resolution run here: nothing is sent to any of these addresses.
"""

from __future__ import annotations

import pytest

from serve_app.jobs.webhook_targets import WebhookRefused, check_webhook_url

# IPv6 spellings that reach an internal IPv4 address through a translator or tunnel, or that
# are not global themselves (tests/app/test_jobs_flow.py tries them at submission and delivery).
INTERNAL_IPV6_FORMS = [
    "http://[64:ff9b::7f00:1]/hook",  # NAT64 (RFC 6052) of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 of the cloud metadata address
    "http://[64:ff9b::10.1.2.3]/hook",  # NAT64, dotted
    "http://[64:ff9b:1::a01:203]/hook",  # NAT64 local-use prefix (RFC 8215)
    "http://[2002:7f00:1::1]/hook",  # 6to4 of 127.0.0.1
    "http://[2002:c0a8:101::1]/hook",  # 6to4 of 192.168.1.1
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",  # Teredo
    "http://[::127.0.0.1]/hook",  # IPv4-compatible (deprecated)
    "http://[::a9fe:a9fe]/hook",  # IPv4-compatible, hex
    "http://[::ffff:0:127.0.0.1]/hook",  # SIIT (RFC 6145)
    "http://[::ffff:a9fe:a9fe]/hook",  # IPv4-mapped, hex
    "http://[fec0::1]/hook",  # site-local (deprecated)
    "http://[fc00::1]/hook",  # unique local
    "http://[2001:db8::1]/hook",  # documentation
]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5432/",  # PostgreSQL on the box
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://localhost:8265/api/jobs/",  # Ray's dashboard job API, by name
        "http://10.1.2.3/hook",
        "http://172.16.0.9/hook",
        "http://192.168.1.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4 loopback dressed as IPv6
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://100.64.0.1/hook",  # carrier-grade NAT
        "ftp://example.com/hook",
        "http:///no-host",
        "http://example.com:99999/hook",
        "http://example.com/\x00",
        *INTERNAL_IPV6_FORMS,
    ],
)
async def test_internal_and_malformed_targets_are_refused(url):
    with pytest.raises(WebhookRefused) as caught:
        await check_webhook_url(url)
    assert (caught.value.status_code, caught.value.code) == (422, "invalid_webhook_url")


async def test_public_addresses_and_allowed_internal_receivers_pass():
    await check_webhook_url("https://8.8.8.8/hook")  # an address literal: resolving sends nothing
    await check_webhook_url("http://[2606:4700:4700::1111]/hook")
    await check_webhook_url("http://[64:ff9b::808:808]/hook")  # NAT64 of a public address
    await check_webhook_url("http://[2002:808:808::1]/hook")  # 6to4 of a public address
    await check_webhook_url("http://127.0.0.1:9000/hook", allow=["127.0.0.1"])
    await check_webhook_url("http://10.1.2.3/hook", allow=["10.0.0.0/8"])
    await check_webhook_url("http://localhost:9000/hook", allow=["localhost"])
    with pytest.raises(WebhookRefused):
        await check_webhook_url("http://10.1.2.3/hook", allow=["192.168.0.0/16"])


def test_a_delivery_connects_to_the_address_it_checked():
    """The checked address is the one connected to (DNS cannot change between check and
    connect); the receiver still sees its own host name."""
    from serve_app.jobs.webhook_targets import pinned

    assert pinned("https://hooks.example.com:8443/a?b=1", "93.184.216.34") == (
        "https://93.184.216.34:8443/a?b=1",
        {"Host": "hooks.example.com:8443"},
        {"sni_hostname": "hooks.example.com"},
    )
    assert pinned("http://v6.example.com/h", "2606:2800:220:1::1")[0] == "http://[2606:2800:220:1::1]/h"
    assert pinned("http://allowed-by-name/h", None) == ("http://allowed-by-name/h", {}, {})
