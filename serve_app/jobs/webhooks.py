"""Webhook delivery: a signed POST when a job completes or fails, retried with backoff.

Signature: ``X-STT-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact request body with
the job's tenant's key: ``tenant_secret(STT_WEBHOOK_SECRET, tenant)``, which a tenant reads at
``GET /api/v1/webhook-secret`` (it is derived, never stored). ``X-STT-Event`` is ``job.completed`` or ``job.failed``;
``X-STT-Delivery`` is ``<job id>:<attempt>``. A receiver verifies with
``hmac.compare_digest(header, "sha256=" + hmac.new(secret, body, sha256).hexdigest())``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from serve_app.core.errors import InvalidParameter
from serve_app.core.metrics import METRICS

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-STT-Signature"
RESOLVE_TIMEOUT_S = 5.0
MAX_URL_CHARS = 2000


class WebhookRefused(InvalidParameter):
    """A webhook URL the service will not call: malformed, unresolvable, or inside the network."""

    code = "invalid_webhook_url"


def tenant_secret(master: str, tenant: str) -> str:
    """The key a tenant's webhooks are signed with: one per tenant, derived from the master key."""
    return hmac.new(master.encode(), f"webhook:{tenant}".encode(), hashlib.sha256).hexdigest()


async def check_webhook_url(url: str, allow: Sequence[str] = ()) -> str | None:
    """Refuse URLs that would turn the service on its own network (SSRF): every address the
    host resolves to must be public, unless the host or a network it is in is in ``allow``
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
    except (OSError, asyncio.TimeoutError):
        raise WebhookRefused(f"webhook_url's host '{host}' cannot be resolved.") from None
    networks = [ipaddress.ip_network(a, strict=False) for a in allow if _is_network(a)]
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 is loopback
        if any(address in net for net in networks):
            continue
        if not address.is_global or address.is_multicast:
            raise WebhookRefused(
                f"webhook_url's host '{host}' is {address}: loopback, private, link-local, multicast and "
                "reserved addresses are refused (STT_WEBHOOK_ALLOW_HOSTS admits internal receivers)."
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


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature or "")


@dataclass
class WebhookSender:
    secret: str  # the master key; each tenant's deliveries are signed with its tenant_secret
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    timeout_seconds: float = 10.0
    allow: Sequence[str] = field(default_factory=tuple)  # see check_webhook_url

    @classmethod
    def from_settings(cls, cfg) -> WebhookSender | None:
        """None when webhooks are off (no STT_WEBHOOK_SECRET)."""
        if not cfg.webhook_secret:
            return None
        return cls(
            cfg.webhook_secret,
            max_attempts=cfg.webhook_max_attempts,
            backoff_seconds=cfg.webhook_backoff_seconds,
            timeout_seconds=cfg.webhook_timeout_seconds,
            allow=cfg.webhook_allow_hosts,
        )

    async def deliver(self, store, job, event: str, payload: dict) -> bool:
        """POST until a 2xx or attempts run out; every attempt is recorded in the store."""
        job_id, url = job.id, job.webhook_url
        body = json.dumps(payload, default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "X-STT-Event": event,
            SIGNATURE_HEADER: sign(tenant_secret(self.secret, job.user_id), body),
        }
        if job.request_id:  # the request that made the job, as its log line names it
            headers["X-Request-ID"] = job.request_id
        async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
            for attempt in range(1, self.max_attempts + 1):
                status, error = None, None
                try:
                    # Again at delivery: what the name resolves to may have changed since, and
                    # the connection goes to the address checked now, not to a second lookup.
                    address = await check_webhook_url(url, self.allow)
                except WebhookRefused as exc:
                    METRICS.webhook("refused")
                    await self._record(store, job_id, url, event, attempt, None, f"refused: {exc.message}", False)
                    return False
                target, host, extensions = pinned(url, address)
                try:
                    response = await client.post(
                        target,
                        content=body,
                        headers={**headers, **host, "X-STT-Delivery": f"{job_id}:{attempt}"},
                        extensions=extensions,
                    )
                    status = response.status_code
                    if not 200 <= status < 300:
                        error = f"HTTP {status}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                delivered = error is None
                METRICS.webhook("delivered" if delivered else "retried" if attempt < self.max_attempts else "failed")
                await self._record(store, job_id, url, event, attempt, status, error, delivered)
                if delivered:
                    return True
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        log.warning("webhook for job %s to %s failed after %s attempts", job_id, url, self.max_attempts)
        return False

    @staticmethod
    async def _record(store, job_id, url, event, attempt, status, error, delivered) -> None:
        try:
            await store.record_delivery(job_id, url, event, attempt, status, error, delivered)
        except Exception:  # a lost record must not stop the delivery itself
            log.warning("could not record webhook attempt %s of job %s", attempt, job_id)
