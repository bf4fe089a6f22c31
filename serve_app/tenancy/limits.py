"""Rate limits and quotas per tenant, kept in PostgreSQL so that every Ingress replica shares them.

- **Requests per minute**: GCRA (the generic cell rate algorithm) in one upsert per request. A
  tenant with a limit of N per minute may make one request every 60/N seconds, with a burst of
  ``ceil(N * BURST_FRACTION)`` at once: over any minute at most N + burst get through.
- **Concurrent transcriptions**: a tenant's PROCESSING jobs, counted when a synchronous
  transcription starts (429 over the limit) and when a worker claims a job (the tenant's other
  jobs wait in the queue).
- **Audio hours per day**: what a tenant transcribed in this UTC day (``tenant_usage``, added
  when a job completes; deleting jobs gives nothing back), plus what its queued and running
  async jobs reserve (serve_app/jobs/admission.py). Checked when a transcription starts, for
  an async job or a batch with the audio it states, before it is accepted.
- **Queued jobs** and **stored bytes** (audio and results kept): checked when async jobs are
  submitted (serve_app/jobs/admission.py).

Headers: every response of a limited route carries the IETF ``RateLimit-Policy`` and
``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers), and on ``/v1`` OpenAI's
``x-ratelimit-*-requests`` ones; a 429 adds ``Retry-After`` (and ``retry-after-ms``, which the
openai SDK reads first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from serve_app.core.errors import RateLimited
from serve_app.tenancy import queries

BURST_FRACTION = 0.05
BAD_KEY_BURST = 10


@dataclass(frozen=True)
class Limits:
    """A tenant's limits; None: take the default; 0: no limit."""

    requests_per_minute: int | None = None
    max_concurrent: int | None = None
    audio_hours_per_day: float | None = None
    max_queued: int | None = None
    storage_gb: float | None = None

    @classmethod
    def from_row(cls, row) -> Limits:
        return cls(
            row["requests_per_minute"],
            row["max_concurrent"],
            row["audio_hours_per_day"],
            row["max_queued"],
            row["storage_gb"],
        )

    def over(self, defaults: Limits) -> Limits:
        """These limits, with the defaults where none is set."""
        return replace(
            defaults,
            **{k: v for k, v in self.__dict__.items() if v is not None},
        )


@dataclass(frozen=True)
class Window:
    """Where a tenant stands after a request: for the RateLimit headers."""

    limit: int
    remaining: int
    reset_s: float

    def headers(self, openai: bool = False) -> dict[str, str]:
        out = {
            "RateLimit-Policy": f'"requests";q={self.limit};w=60',
            "RateLimit": f'"requests";r={self.remaining};t={math.ceil(self.reset_s)}',
        }
        if openai:
            out |= {
                "x-ratelimit-limit-requests": str(self.limit),
                "x-ratelimit-remaining-requests": str(self.remaining),
                "x-ratelimit-reset-requests": f"{self.reset_s:.3f}s",
            }
        return out


def burst(per_minute: int) -> int:
    return max(1, math.ceil(per_minute * BURST_FRACTION))


class RateLimiter:
    """Counts requests of each tenant in PostgreSQL (``store`` is a JobStore)."""

    def __init__(self, store):
        self.store = store

    async def hit_bad_key(self, address: str, per_minute: int) -> None:
        """Count a request whose key was wrong, from ``address``; RateLimited past
        ``per_minute`` (a bucket of its own per address, beside the tenants')."""
        interval = 60.0 / per_minute
        allowance = max(burst(per_minute), BAD_KEY_BURST) * interval  # a person mistyping is never refused
        async with self.store.connection() as conn:
            row = await conn.fetchrow(queries.RATE_HIT, f"bad-key:{address[:64]}", interval, allowance)
        if row["ahead"] is None:
            wait = row["prior_ahead"] - (allowance - interval)
            raise RateLimited(
                f"Too many requests with a wrong API key from {address[:64]}; retry in {wait:.0f} s.",
                retry_after=wait,
                code="too_many_bad_keys",
            )

    async def hit(self, tenant: str, limits: Limits, *, transcription: bool, openai: bool = False) -> Window | None:
        """Count one request; raise RateLimited over a limit. None when nothing limits it."""
        per_minute = limits.requests_per_minute or 0
        quota_s = (limits.audio_hours_per_day or 0) * 3600 if transcription else 0
        if not per_minute and not quota_s:
            return None
        interval = 60.0 / per_minute if per_minute else 0.0
        allowance = burst(per_minute) * interval if per_minute else 1.0
        async with self.store.connection() as conn:
            row = await conn.fetchrow(queries.RATE_HIT, tenant, interval, allowance)
        window = None
        if per_minute:
            if row["ahead"] is None:  # refused: the upsert's condition did not hold
                wait = row["prior_ahead"] - (allowance - interval)
                window = Window(per_minute, 0, row["prior_ahead"])
                raise RateLimited(
                    f"Rate limit reached: {per_minute} requests per minute for tenant '{tenant}'; "
                    f"retry in {wait:.2f} s.",
                    retry_after=wait,
                    headers=window.headers(openai),
                )
            remaining = int((allowance - row["ahead"]) // interval)
            window = Window(per_minute, max(remaining, 0), row["ahead"])
        used = row["used"] or 0.0
        if quota_s and used >= quota_s:
            now = datetime.now(timezone.utc)
            midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
            raise RateLimited(
                f"Daily audio quota used: {used / 3600:.2f} of {quota_s / 3600:g} hours for tenant '{tenant}' "
                "(the count starts again at 00:00 UTC).",
                retry_after=(midnight - now).total_seconds(),
                code="quota_exceeded",
                headers=window.headers(openai) if window else None,
            )
        return window
