"""Webhook URLs that would turn the service on its own network are refused (SSRF).

Only validation and name resolution run here: nothing is sent to any of these addresses.
"""

from __future__ import annotations

import pytest

from serve_app.jobs.webhooks import WebhookRefused, check_webhook_url


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
    ],
)
async def test_internal_and_malformed_targets_are_refused(url):
    with pytest.raises(WebhookRefused) as caught:
        await check_webhook_url(url)
    assert (caught.value.status_code, caught.value.code) == (422, "invalid_webhook_url")


async def test_public_addresses_and_allowed_internal_receivers_pass():
    await check_webhook_url("https://8.8.8.8/hook")  # an address literal: resolving sends nothing
    await check_webhook_url("http://127.0.0.1:9000/hook", allow=["127.0.0.1"])
    await check_webhook_url("http://10.1.2.3/hook", allow=["10.0.0.0/8"])
    await check_webhook_url("http://localhost:9000/hook", allow=["localhost"])
    with pytest.raises(WebhookRefused):
        await check_webhook_url("http://10.1.2.3/hook", allow=["192.168.0.0/16"])


def test_a_delivery_connects_to_the_address_it_checked():
    """The checked address is the one connected to (DNS cannot change between check and
    connect); the receiver still sees its own host name."""
    from serve_app.jobs.webhooks import pinned

    assert pinned("https://hooks.example.com:8443/a?b=1", "93.184.216.34") == (
        "https://93.184.216.34:8443/a?b=1",
        {"Host": "hooks.example.com:8443"},
        {"sni_hostname": "hooks.example.com"},
    )
    assert pinned("http://v6.example.com/h", "2606:2800:220:1::1")[0] == "http://[2606:2800:220:1::1]/h"
    assert pinned("http://allowed-by-name/h", None) == ("http://allowed-by-name/h", {}, {})
