"""Bounds on long-lived answers (event streams) of one Ingress replica.

Each open stream holds one of the replica's request slots for its whole life; without a bound,
one tenant's streams on a queued job would take every slot and the others' uploads would wait.
A replica holds at most ``per_replica`` streams (set below its slots, so uploads keep the rest)
and at most ``per_tenant`` of one tenant; past either, 429 ``too_many_streams``.
"""

from __future__ import annotations

from collections import Counter

from serve_app.core.errors import RateLimited

RETRY_S = 5.0


class StreamGate:
    def __init__(self, per_tenant: int, per_replica: int):
        self.per_tenant, self.per_replica = per_tenant, per_replica
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def admit(self, tenant: str) -> Ticket:
        """A ticket for one stream; RateLimited past a bound. Release it when the stream ends."""
        if self.per_replica and self.open >= self.per_replica:
            raise RateLimited(
                f"This replica holds its limit of {self.per_replica} open event streams; retry shortly, "
                "or poll the job.",
                retry_after=RETRY_S,
                code="too_many_streams",
            )
        if self.per_tenant and self._open[tenant] >= self.per_tenant:
            raise RateLimited(
                f"Tenant '{tenant}' has {self._open[tenant]} event streams open, its limit; close one first.",
                retry_after=RETRY_S,
                code="too_many_streams",
            )
        self._open[tenant] += 1
        return Ticket(self, tenant)


class Ticket:
    def __init__(self, gate: StreamGate, tenant: str):
        self._gate, self._tenant = gate, tenant

    def release(self) -> None:
        if self._gate is not None:
            self._gate._open[self._tenant] -= 1
            if self._gate._open[self._tenant] <= 0:
                del self._gate._open[self._tenant]
            self._gate = None
