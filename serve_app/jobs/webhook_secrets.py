"""The generation of each tenant's webhook secret, in PostgreSQL (``webhook_secrets``): a
rotation starts a new generation, and the previous one keeps signing for ``OVERLAP`` so that a
receiver can switch without losing a delivery."""

from __future__ import annotations

from datetime import timedelta

OVERLAP = timedelta(days=1)

CURRENT = "SELECT generation, previous_until > now() AS overlap FROM webhook_secrets WHERE tenant = $1"
ROTATE = """
INSERT INTO webhook_secrets AS s (tenant, generation, previous_until) VALUES ($1, 1, now() + $2)
ON CONFLICT (tenant) DO UPDATE SET generation = s.generation + 1, previous_until = now() + $2
RETURNING generation
"""


async def current(store, tenant: str) -> tuple[int, bool]:
    """(generation, whether the previous generation still signs too)."""
    async with store.connection() as conn:
        row = await conn.fetchrow(CURRENT, tenant)
    return (row["generation"], row["overlap"]) if row else (0, False)


async def rotate(store, tenant: str) -> int:
    """Start the tenant's next generation; returns it."""
    async with store.connection() as conn:
        return await conn.fetchval(ROTATE, tenant, OVERLAP)
