"""The Ingress's watch of model replicas: a model it has never seen running is waited for (the
app or the replica starting), once; one it has seen running and lost is refused at once. And
the adapter to Ray that it reads through: shaped as Ray's own classes are, and loud when an
answer is not.

Serve's controller is replaced by a scripted adapter here (``ServeStatus`` is the one thing the
watch asks); tests/serve/test_service.py reads a running application through the real adapter,
and tests/cluster/test_multinode.py runs the watch against a real cluster.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import types

import pytest

from deployments.replica_watch import STATUSES, RayAnswerChanged, ReplicaWatch, ServeStatus


class ScriptedRay:
    """The controller's answers, in turn (the last one repeats): running replicas per deployment."""

    def __init__(self, answers: list[dict[str, int]]):
        self.answers, self.looks = answers, 0

    def _answer(self) -> dict[str, int]:
        answer = self.answers[min(self.looks, len(self.answers) - 1)]
        self.looks += 1
        return answer

    def overview(self) -> dict[str, str]:
        return {name: "UPDATING" for name in self.answers[0]}  # never HEALTHY: the details are read

    def running(self) -> dict[str, int]:
        return self._answer()


async def watch_of(answers: list[dict[str, int]], **kwargs) -> tuple[ReplicaWatch, ScriptedRay]:
    ray = ScriptedRay(answers)
    watch = ReplicaWatch(ray, {"tiny.en": "Transcriber-tiny-en"}, parts={"preprocessing": "Preprocessor"}, **kwargs)
    await watch.start()
    watch._task.cancel()  # no background looks: each test drives the looks it counts
    return watch, ray


STARTING = {"Transcriber-tiny-en": 0, "Preprocessor": 1}
RUNNING = {"Transcriber-tiny-en": 1, "Preprocessor": 1}


async def test_a_model_not_yet_seen_running_is_waited_for():
    watch, ray = await watch_of([STARTING, STARTING, RUNNING], first_wait=5.0)
    assert watch.unavailable() == {"tiny.en"}  # the first look: not running yet
    started = time.monotonic()
    assert not await watch.confirm("tiny.en")  # looked again until it ran
    assert time.monotonic() - started >= 0.5  # looks at least half a second apart
    assert ray.looks == 3


async def test_a_model_that_never_comes_is_refused_after_the_first_wait():
    watch, ray = await watch_of([STARTING], first_wait=1.2)
    started = time.monotonic()
    assert await watch.confirm("tiny.en")
    assert time.monotonic() - started >= 1.2 and ray.looks >= 3
    # Waited for in vain once: the next request is not held again (a model that cannot start).
    looks = ray.looks
    assert await watch.confirm("tiny.en")
    assert ray.looks <= looks + 1


async def test_a_model_seen_running_and_lost_is_refused_at_once():
    watch, ray = await watch_of([RUNNING, STARTING], first_wait=30.0)
    assert not await watch.confirm("tiny.en")
    await watch._look()  # the background look: its node is gone
    looks = ray.looks
    started = time.monotonic()
    assert await watch.confirm("tiny.en")  # its node gone: no waiting
    assert ray.looks <= looks + 1 and time.monotonic() - started < 30.0


async def test_readiness_names_what_is_not_running():
    watch, _ = await watch_of([{"Transcriber-tiny-en": 0}], first_wait=0.0)
    assert await watch.not_running() == ["tiny.en", "preprocessing"]


def test_the_adapter_reads_what_rays_own_classes_hold():
    """The fields ServeStatus reads exist on the classes Ray answers with. A Ray upgrade that
    renames or moves them fails here, before it can make the watch read nothing."""
    from ray.serve._private.application_state import StatusOverview
    from ray.serve._private.client import ServeControllerClient
    from ray.serve._private.common import DeploymentStatus, DeploymentStatusInfo, ReplicaState
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ApplicationStatusOverview, DeploymentStatusOverview
    from ray.serve.schema import ServeStatus as Status

    def fields(cls) -> set[str]:
        if dataclasses.is_dataclass(cls):
            return {f.name for f in dataclasses.fields(cls)}
        return set(getattr(cls, "model_fields", None) or getattr(cls, "__fields__", {}))

    assert callable(_get_global_client) and callable(ServeControllerClient.get_serve_status)
    assert "deployment_statuses" in fields(StatusOverview)
    assert {"name", "status"} <= fields(DeploymentStatusInfo)
    assert {s.value for s in DeploymentStatus} == STATUSES
    assert "applications" in fields(Status) and "deployments" in fields(ApplicationStatusOverview)
    assert "replica_states" in fields(DeploymentStatusOverview)
    assert ReplicaState.RUNNING.value == "RUNNING"


def test_an_answer_of_another_shape_is_an_error_not_an_empty_one(monkeypatch):
    import ray.serve.context

    monkeypatch.setattr(
        ray.serve.context,
        "_get_global_client",
        lambda: types.SimpleNamespace(
            get_serve_status=lambda app: types.SimpleNamespace(statuses=[])  # renamed field
        ),
    )
    with pytest.raises(RayAnswerChanged, match="deployment_statuses"):
        ServeStatus("speechtotext").overview()
    info = types.SimpleNamespace(name="Ingress", status="SERVING")  # a status this code does not know
    monkeypatch.setattr(
        ray.serve.context,
        "_get_global_client",
        lambda: types.SimpleNamespace(get_serve_status=lambda app: types.SimpleNamespace(deployment_statuses=[info])),
    )
    with pytest.raises(RayAnswerChanged, match="unknown shape"):
        ServeStatus("speechtotext").overview()


async def test_a_watch_that_cannot_read_ray_says_so_loudly(caplog):
    class Changed(ScriptedRay):
        def overview(self):
            raise RayAnswerChanged("status overview without a list of deployment_statuses")

    watch = ReplicaWatch(Changed([RUNNING]), {"tiny.en": "Transcriber-tiny-en"})
    with caplog.at_level(logging.ERROR, logger="speechtotext"):
        await watch._look()
    assert watch.broken and "deployment_statuses" in watch.broken
    assert any("changed shape" in r.message for r in caplog.records if r.levelno == logging.ERROR)
