"""Admission of async jobs: what a tenant may still queue, held before the work and not after.

A job (or a batch of them) is admitted in the transaction that commits it, under a lock on its
tenant, so two submissions at once cannot both take the last of a quota:

- **audio seconds per day**: what the tenant transcribed today, plus what its queued and
  running jobs reserve (each job reserves the duration its container states; a job that ends
  gives its reservation back, a completed one counts what it really held), plus what the new
  jobs state. A batch of 1000 files over the quota is refused whole, at submission.
- **queued jobs**: the tenant's PENDING jobs, plus the new ones.
- **stored bytes**: the audio and results the tenant keeps, plus the new uploads.

Each is a 429 with its own code. Before a job is admitted its upload is inspected
(serve_app/audio/inspect.py): bytes that are not audio are refused and never kept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from serve_app.audio.inspect import Inspection, inspect
from serve_app.core.errors import RateLimited

TENANT_LOCK = "SELECT pg_advisory_xact_lock(7301948, hashtext($1))"
STANDING = """
SELECT
    COALESCE((SELECT audio_seconds FROM tenant_usage
              WHERE tenant = $1 AND day = (now() AT TIME ZONE 'UTC')::date), 0)::float8 AS used,
    COALESCE((SELECT sum(reserved_seconds) FROM transcription_jobs
              WHERE user_id = $1 AND status IN ('PENDING', 'PROCESSING')), 0)::float8 AS reserved,
    (SELECT count(*) FROM transcription_jobs WHERE user_id = $1 AND status = 'PENDING') AS queued,
    COALESCE((SELECT sum(CASE WHEN audio_key IS NOT NULL THEN COALESCE(audio_bytes, 0) ELSE 0 END
                         + COALESCE(result_bytes, 0))
              FROM transcription_jobs WHERE user_id = $1), 0)::int8 AS stored"""
QUEUE_RETRY_S = 60.0


@dataclass(frozen=True)
class Quotas:
    """A tenant's admission limits (0: none)."""

    audio_seconds_per_day: float = 0.0
    max_queued: int = 0
    storage_bytes: int = 0

    @classmethod
    def of(cls, limits) -> Quotas:
        """From a tenancy Limits (its effective values); None: no limits (an admin's own use)."""
        if limits is None:
            return cls()
        return cls(
            (limits.audio_hours_per_day or 0) * 3600,
            limits.max_queued or 0,
            int((limits.storage_gb or 0) * 1e9),
        )


async def inspect_stored(blobs, key: str, *, max_seconds: float | None) -> Inspection:
    """Inspect an upload where it is stored (read in a thread, never held whole)."""

    def run() -> Inspection:
        with blobs.open_read(key) as fh:
            return inspect(fh, max_seconds=max_seconds)

    return await asyncio.to_thread(run)


async def admit(conn, tenant: str, quotas: Quotas, *, jobs: int, seconds: float, size: int) -> None:
    """Raise RateLimited unless ``jobs`` more jobs of ``seconds`` audio in ``size`` bytes fit;
    call inside the transaction that inserts them (it takes the tenant's lock until commit)."""
    await conn.execute(TENANT_LOCK, tenant)
    if not (quotas.audio_seconds_per_day or quotas.max_queued or quotas.storage_bytes):
        return
    row = await conn.fetchrow(STANDING, tenant)
    if quotas.max_queued and row["queued"] + jobs > quotas.max_queued:
        raise RateLimited(
            f"Tenant '{tenant}' has {row['queued']} jobs queued; {jobs} more would pass its limit of "
            f"{quotas.max_queued}. Submit again when some have run.",
            retry_after=QUEUE_RETRY_S,
            code="too_many_queued",
        )
    if quotas.storage_bytes and row["stored"] + size > quotas.storage_bytes:
        raise RateLimited(
            f"Tenant '{tenant}' keeps {row['stored'] / 1e9:.2f} GB of audio and results; {size / 1e6:.1f} MB more "
            f"would pass its storage quota of {quotas.storage_bytes / 1e9:g} GB. Delete finished jobs first.",
            retry_after=QUEUE_RETRY_S,
            code="storage_quota_exceeded",
        )
    quota = quotas.audio_seconds_per_day
    if quota and row["used"] + row["reserved"] + seconds > quota:
        now = datetime.now(timezone.utc)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
        raise RateLimited(
            f"Daily audio quota: tenant '{tenant}' used {row['used'] / 3600:.2f} h today and its queued jobs "
            f"hold {row['reserved'] / 3600:.2f} h; {seconds / 3600:.2f} h more would pass its {quota / 3600:g} h "
            "(the count starts again at 00:00 UTC).",
            retry_after=(midnight - now).total_seconds(),
            code="quota_exceeded",
        )
