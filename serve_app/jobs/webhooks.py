"""Webhook delivery: a signed POST when a job or a batch ends, retried with backoff.

Signed as the Standard Webhooks specification says (standardwebhooks.com), so a receiver can
use any of its libraries: ``webhook-id`` (the same on every attempt of one message),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``: ``v1,`` and the
base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` keyed with the tenant's secret
(``whsec_`` and base64). A receiver refuses a timestamp far from its clock and an id it has
seen, so a captured delivery cannot be replayed. The secret is derived from the master key
(STT_WEBHOOK_SECRET), the tenant and the secret's generation, and never stored; a tenant reads
it at ``GET /api/v1/webhook-secret`` and rotates it with ``POST /api/v1/webhook-secret/rotate``
(for a day after, deliveries carry the old generation's signature too). ``X-STT-Event`` names
the event, ``X-STT-Delivery`` is ``<id>:<attempt>``.

Bounded for a worker that serves every tenant: the receiver's answer body is never read (only
its status line and headers, which the HTTP parser caps), one attempt has a total deadline (a
receiver trickling a byte at a time cannot hold it), and deliveries wait in a bounded queue
with a share per tenant; past either bound a delivery is dropped, logged and counted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from serve_app.core.metrics import METRICS
from serve_app.jobs import webhook_secrets
from serve_app.jobs.webhook_targets import WebhookRefused, check_webhook_url, pinned

log = logging.getLogger(__name__)
SECRET_PREFIX = "whsec_"
TOLERANCE_S = 300  # how far from now a receiver should accept webhook-timestamp


def tenant_secret(master: str, tenant: str, generation: int = 0) -> str:
    """The secret a tenant's webhooks are signed with in one generation, in Standard
    Webhooks' form: derived from the master key, so nothing secret is stored."""
    key = hmac.new(master.encode(), f"webhook:{tenant}:{generation}".encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(key).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of a message."""
    digest = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers, body: bytes, *, now: float | None = None, tolerance: int = TOLERANCE_S) -> bool:
    """What a receiver does: the timestamp is recent and one of the signatures is ours."""
    try:
        msg_id, timestamp = headers["webhook-id"], int(headers["webhook-timestamp"])
        offered = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


@dataclass
class WebhookSender:
    secret: str  # the master key; each tenant's deliveries are signed with its tenant_secret
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    timeout_seconds: float = 10.0  # one attempt, connection to answer, in all
    allow: Sequence[str] = field(default_factory=tuple)  # see check_webhook_url
    max_pending: int = 1000  # deliveries a worker holds (sending or waiting to)
    max_pending_per_tenant: int = 100
    concurrency: int = 32  # attempts in flight at once
    secrets: object = None  # where generations are kept (a JobStore); None: generation 0

    def __post_init__(self):
        self._pending: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(self.concurrency)

    @classmethod
    def from_settings(cls, cfg, secrets=None) -> WebhookSender | None:
        """None when webhooks are off (no STT_WEBHOOK_SECRET)."""
        if not cfg.webhook_secret:
            return None
        return cls(
            cfg.secret("webhook_secret"),
            max_attempts=cfg.webhook_max_attempts,
            backoff_seconds=cfg.webhook_backoff_seconds,
            timeout_seconds=cfg.webhook_timeout_seconds,
            allow=cfg.webhook_allow_hosts,
            secrets=secrets,
        )

    @property
    def pending(self) -> int:
        return sum(self._pending.values())

    def submit(self, recorder, target, event: str, payload: dict) -> bool:
        """Queue a delivery (``deliver`` in a task); False when a bound refuses it."""
        tenant = target.user_id
        if self.pending >= self.max_pending or self._pending[tenant] >= self.max_pending_per_tenant:
            METRICS.webhook("dropped")
            log.warning("webhook %s for %s dropped: %s deliveries pending", event, target.id, self._pending[tenant])
            return False
        self._pending[tenant] += 1
        task = asyncio.create_task(self.deliver(recorder, target, event, payload))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, tenant))
        return True

    def _done(self, task: asyncio.Task, tenant: str) -> None:
        self._tasks.discard(task)
        self._pending[tenant] -= 1
        if self._pending[tenant] <= 0:
            del self._pending[tenant]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def signing_secrets(self, tenant: str) -> list[str]:
        """The secrets a delivery is signed with now: the current generation, and the previous
        one for a day after a rotation."""
        generation, previous_too = (0, False)
        if self.secrets is not None:
            generation, previous_too = await webhook_secrets.current(self.secrets, tenant)
        secrets = [tenant_secret(self.secret, tenant, generation)]
        if previous_too and generation > 0:
            secrets.append(tenant_secret(self.secret, tenant, generation - 1))
        return secrets

    async def deliver(self, recorder, target, event: str, payload: dict) -> bool:
        """POST until a 2xx or attempts run out; every attempt is recorded by ``recorder``."""
        target_id, url = target.id, target.webhook_url
        body = json.dumps(payload, default=str).encode()
        msg_id = f"msg_{target_id}_{event.replace('.', '_')}"
        headers = {"Content-Type": "application/json", "X-STT-Event": event, "webhook-id": msg_id}
        if getattr(target, "request_id", None):  # the request that made the job, as its log line names it
            headers["X-Request-ID"] = target.request_id
        secrets = await self.signing_secrets(target.user_id)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=self.timeout_seconds, limits=limits) as client:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    # Again at delivery: what the name resolves to may have changed since, and
                    # the connection goes to the address checked now, not to a second lookup.
                    address = await check_webhook_url(url, self.allow)
                except WebhookRefused as exc:
                    METRICS.webhook("refused")
                    await self._record(recorder, target_id, url, event, attempt, None, f"refused: {exc.message}", False)
                    return False
                stamp = int(time.time())
                signed = {
                    **headers,
                    "webhook-timestamp": str(stamp),
                    "webhook-signature": " ".join(sign(s, msg_id, stamp, body) for s in secrets),
                    "X-STT-Delivery": f"{target_id}:{attempt}",
                }
                async with self._slots:
                    status, error = await self._attempt(client, url, address, body, signed)
                delivered = error is None
                METRICS.webhook("delivered" if delivered else "retried" if attempt < self.max_attempts else "failed")
                await self._record(recorder, target_id, url, event, attempt, status, error, delivered)
                if delivered:
                    return True
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        log.warning("webhook for %s to %s failed after %s attempts", target_id, url, self.max_attempts)
        return False

    async def _attempt(self, client, url, address, body, headers) -> tuple[int | None, str | None]:
        """One POST under a total deadline; the answer's status only, its body never read."""
        target, host, extensions = pinned(url, address)
        try:
            async with asyncio.timeout(self.timeout_seconds):
                request = client.build_request(
                    "POST", target, content=body, headers={**headers, **host}, extensions=extensions
                )
                response = await client.send(request, stream=True)
                await response.aclose()  # the body stays unread: a receiver cannot fill the worker
        except TimeoutError:
            return None, f"no answer within {self.timeout_seconds:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        status = response.status_code
        return status, None if 200 <= status < 300 else f"HTTP {status}"

    @staticmethod
    async def _record(recorder, target_id, url, event, attempt, status, error, delivered) -> None:
        try:
            await recorder.record_delivery(target_id, url, event, attempt, status, error, delivered)
        except Exception:  # a lost record must not stop the delivery itself
            log.warning("could not record webhook attempt %s of %s", attempt, target_id)
