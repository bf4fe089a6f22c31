"""The JobWorker's backlog policy asks for enough replicas for the jobs waiting and running."""

from __future__ import annotations

from types import SimpleNamespace

from deployments.autoscaling import decode_load_policy, job_backlog_policy


def ctx(queue: dict, running: dict, target=8, minimum=1):
    return SimpleNamespace(
        aggregated_metrics={"queue_depth": queue, "running_jobs": running},
        config=SimpleNamespace(target_ongoing_requests=target),
        capacity_adjusted_min_replicas=minimum,
    )


def test_scales_with_backlog():
    assert job_backlog_policy(ctx({"r1": 0.0}, {"r1": 0.0}))[0] == 1  # never below min
    assert job_backlog_policy(ctx({"r1": 30.0}, {"r1": 8.0}))[0] == 5  # ceil(38 / 8)
    # Replicas report the same shared queue: it is counted once, running jobs are summed.
    assert job_backlog_policy(ctx({"r1": 8.0, "r2": 8.0}, {"r1": 8.0, "r2": 8.0}))[0] == 3


def test_no_metrics_yet_keeps_the_minimum():
    empty = SimpleNamespace(aggregated_metrics=None, config=None, capacity_adjusted_min_replicas=2)
    assert job_backlog_policy(empty)[0] == 2


def test_the_preprocessor_scales_with_recordings_still_decoding_not_with_open_streams():
    def load(decoding, target=4, minimum=1):
        return SimpleNamespace(
            aggregated_metrics={"decoding": decoding},
            config=SimpleNamespace(target_ongoing_requests=target),
            capacity_adjusted_min_replicas=minimum,
        )

    assert decode_load_policy(load({"r1": 0.0}))[0] == 1  # streams only waiting for text: no more replicas
    assert decode_load_policy(load({"r1": 6.0, "r2": 3.0}))[0] == 3  # ceil(9 / 4)
    assert (
        decode_load_policy(SimpleNamespace(aggregated_metrics=None, config=None, capacity_adjusted_min_replicas=1))[0]
        == 1
    )
