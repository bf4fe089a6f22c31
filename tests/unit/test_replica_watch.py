"""The Ingress's watch of model replicas: a model it has never seen running is waited for (the
app or the replica starting), once; one it has seen running and lost is refused at once.

Serve's controller is replaced by a scripted list of answers here (``_running`` is the one call
the watch makes to it); tests/cluster/test_multinode.py runs the watch against a real cluster.
"""

from __future__ import annotations

import time

from deployments.ingress import ReplicaWatch


class ScriptedWatch(ReplicaWatch):
    """A watch whose controller answers from ``answers`` in turn (the last one repeats)."""

    def __init__(self, answers: list[dict[str, int]], **kwargs):
        super().__init__({"tiny.en": "Transcriber-tiny-en"}, parts={"preprocessing": "Preprocessor"}, **kwargs)
        self.answers = answers
        self.looks = 0

    async def start(self) -> None:
        await super().start()
        self._task.cancel()  # no background looks: each test drives the looks it counts

    def _running(self) -> dict[str, int]:
        answer = self.answers[min(self.looks, len(self.answers) - 1)]
        self.looks += 1
        return answer


STARTING = {"Transcriber-tiny-en": 0, "Preprocessor": 1}
RUNNING = {"Transcriber-tiny-en": 1, "Preprocessor": 1}


async def test_a_model_not_yet_seen_running_is_waited_for():
    watch = ScriptedWatch([STARTING, STARTING, RUNNING], first_wait=5.0)
    await watch.start()  # the first look: not running yet
    assert watch.unavailable() == {"tiny.en"}
    started = time.monotonic()
    assert not await watch.confirm("tiny.en")  # looked again until it ran
    assert time.monotonic() - started >= 0.5  # looks at least half a second apart
    assert watch.looks == 3


async def test_a_model_that_never_comes_is_refused_after_the_first_wait():
    watch = ScriptedWatch([STARTING], first_wait=1.2)
    await watch.start()
    started = time.monotonic()
    assert await watch.confirm("tiny.en")
    assert time.monotonic() - started >= 1.2 and watch.looks >= 3
    # Waited for in vain once: the next request is not held again (a model that cannot start).
    looks = watch.looks
    assert await watch.confirm("tiny.en")
    assert watch.looks <= looks + 1


async def test_a_model_seen_running_and_lost_is_refused_at_once():
    watch = ScriptedWatch([RUNNING, STARTING], first_wait=30.0)
    await watch.start()
    assert not await watch.confirm("tiny.en")
    await watch._look()  # the background look: its node is gone
    looks = watch.looks
    started = time.monotonic()
    assert await watch.confirm("tiny.en")  # its node gone: no waiting
    assert watch.looks <= looks + 1 and time.monotonic() - started < 30.0


async def test_readiness_names_what_is_not_running():
    watch = ScriptedWatch([{"Transcriber-tiny-en": 0}], first_wait=0.0)
    await watch.start()
    assert await watch.not_running() == ["tiny.en", "preprocessing"]
