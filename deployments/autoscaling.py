"""Autoscaling policies: the JobWorker by the job backlog in PostgreSQL, the Preprocessor by
the recordings it is decoding; neither by the requests a replica merely holds.

A JobWorker pulls its work, so Ray Serve's default policy (ongoing requests per replica)
would always read zero. Each worker replica reports the queue depth and the jobs it is
running (``record_autoscaling_stats``); this policy asks for enough replicas to give every
waiting or running job a slot, ``target_ongoing_requests`` jobs per replica. Ray applies
min/max replicas and the up/down-scale delays around it.
"""

from __future__ import annotations

import math
from typing import Any


def job_backlog_policy(ctx: Any) -> tuple[int, dict]:
    metrics = ctx.aggregated_metrics or {}
    # Every replica sees the same queue; take the freshest largest report.
    backlog = max((metrics.get("queue_depth") or {}).values(), default=0.0)
    running = sum((metrics.get("running_jobs") or {}).values())
    per_replica = getattr(ctx.config, "target_ongoing_requests", None) or 4
    wanted = math.ceil((backlog + running) / per_replica)
    return max(wanted, ctx.capacity_adjusted_min_replicas), {}


def decode_load_policy(ctx: Any) -> tuple[int, dict]:
    """The Preprocessor: a recording's request stays open while its text streams back, which
    for a long one is mostly waiting on the Transcriber; only recordings with audio left to
    decode load a replica. Each replica reports them (``record_autoscaling_stats``); this asks
    for ``target_ongoing_requests`` of them per replica."""
    metrics = ctx.aggregated_metrics or {}
    decoding = sum((metrics.get("decoding") or {}).values())
    per_replica = getattr(ctx.config, "target_ongoing_requests", None) or 4
    return max(math.ceil(decoding / per_replica), ctx.capacity_adjusted_min_replicas), {}
