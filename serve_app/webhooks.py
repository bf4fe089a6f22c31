"""Webhook delivery: a signed POST when a job completes or fails, retried with backoff.

Signature: ``X-STT-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact request body with
the key STT_WEBHOOK_SECRET. ``X-STT-Event`` is ``job.completed`` or ``job.failed``;
``X-STT-Delivery`` is ``<job id>:<attempt>``. A receiver verifies with
``hmac.compare_digest(header, "sha256=" + hmac.new(secret, body, sha256).hexdigest())``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-STT-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature or "")


@dataclass
class WebhookSender:
    secret: str
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    timeout_seconds: float = 10.0

    async def deliver(self, store, job_id, url: str, event: str, payload: dict) -> bool:
        """POST until a 2xx or attempts run out; every attempt is recorded in the store."""
        body = json.dumps(payload, default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "X-STT-Event": event,
            SIGNATURE_HEADER: sign(self.secret, body),
        }
        async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
            for attempt in range(1, self.max_attempts + 1):
                status, error = None, None
                try:
                    response = await client.post(
                        url, content=body, headers={**headers, "X-STT-Delivery": f"{job_id}:{attempt}"}
                    )
                    status = response.status_code
                    if not 200 <= status < 300:
                        error = f"HTTP {status}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                delivered = error is None
                try:
                    await store.record_delivery(job_id, url, event, attempt, status, error, delivered)
                except Exception:  # a lost record must not stop the delivery itself
                    log.warning("could not record webhook attempt %s of job %s", attempt, job_id)
                if delivered:
                    return True
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        log.warning("webhook for job %s to %s failed after %s attempts", job_id, url, self.max_attempts)
        return False
