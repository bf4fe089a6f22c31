"""Cursors of job listings: an opaque token for (created_at, id), the position after a page."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timezone

from serve_app.core.errors import InvalidParameter


def encode_cursor(job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, ident = raw.split("|")
        # In UTC here, so that a stamp PostgreSQL cannot hold (year 10000 once in UTC) is refused
        # now rather than failing the query.
        return datetime.fromisoformat(stamp).astimezone(timezone.utc), uuid.UUID(ident)
    except Exception:
        raise InvalidParameter(
            "The cursor is not one this API returned; pass next_cursor from the previous page.",
            code="invalid_cursor",
        ) from None
