"""Which models have a running Transcriber replica, as the Serve controller says: the Ingress's
watch (a sync request for a model with none gets a 503 at once instead of waiting in the
handle) and its readiness.

Ray has no public call that is both cheap and complete. ``serve.status()`` builds every
deployment's whole details on both sides (~50 ms of the Ingress's CPU); the controller's
status overview is a few ms but private. Both are read by ``ServeStatus``, the one adapter to
Ray here, which checks the shape of each answer and raises ``RayAnswerChanged`` where it is not
what this code reads: a Ray upgrade that moves them is an error in the log and a failing test
(tests/unit/test_replica_watch.py against Ray's classes, tests/serve/test_service.py against a
running app), never a watch that quietly reports every model available.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("speechtotext")

STATUSES = {"UPDATING", "HEALTHY", "UNHEALTHY", "DEPLOY_FAILED", "UPSCALING", "DOWNSCALING"}
SCALING = {"HEALTHY", "UPSCALING", "DOWNSCALING"}


class RayAnswerChanged(RuntimeError):
    """Ray's status answer is not shaped as this code reads it (a Ray upgrade moved it)."""


def _value(member) -> str:
    """An enum member's value (Ray's statuses are str enums), or the string itself."""
    return str(getattr(member, "value", member))


class ServeStatus:
    """One application's deployments as the Serve controller reports them."""

    def __init__(self, app: str):
        self.app = app

    def overview(self) -> dict[str, str]:
        """Each deployment's status (HEALTHY, UPSCALING, ...), from the controller's overview."""
        try:
            from ray.serve.context import _get_global_client

            overview = _get_global_client().get_serve_status(self.app)
        except (ImportError, AttributeError, TypeError) as exc:
            raise RayAnswerChanged(f"the Serve controller's status overview cannot be asked: {exc!r}") from exc
        statuses = getattr(overview, "deployment_statuses", None)
        if not isinstance(statuses, list):
            raise RayAnswerChanged(f"status overview without a list of deployment_statuses: {overview!r}")
        found = {}
        for info in statuses:
            name, status = getattr(info, "name", None), _value(getattr(info, "status", None))
            if not isinstance(name, str) or status not in STATUSES:
                raise RayAnswerChanged(f"deployment status of unknown shape: {info!r}")
            found[name] = status
        return found

    def running(self) -> dict[str, int]:
        """Running replicas of each deployment, from ``serve.status()``'s whole details."""
        from ray import serve

        applications = getattr(serve.status(), "applications", None)
        if not isinstance(applications, dict):
            raise RayAnswerChanged("serve.status() without a dict of applications")
        application = applications.get(self.app)
        deployments = getattr(application, "deployments", None) if application is not None else {}
        if not isinstance(deployments, dict):
            raise RayAnswerChanged(f"application status without a dict of deployments: {application!r}")
        found = {}
        for name, details in deployments.items():
            states = getattr(details, "replica_states", None)
            if not isinstance(states, dict):
                raise RayAnswerChanged(f"deployment {name} without a dict of replica_states: {details!r}")
            found[name] = sum(n for state, n in states.items() if _value(state) == "RUNNING")
        return found


class ReplicaWatch:
    """Which models have no running Transcriber replica, asked of the Serve controller every
    ``period`` seconds, so that sync requests for them get a 503 at once instead of waiting in
    the handle until a replica comes back."""

    def __init__(
        self,
        ray: ServeStatus,
        deployments: dict[str, str],
        period: float = 2.0,
        parts: dict[str, str] | None = None,
        first_wait: float = 15.0,
    ):
        self.ray = ray
        self.deployments = deployments  # model -> deployment name
        self.parts = parts or {}  # what else must run for readiness: label -> deployment name
        self.period = period
        # How long a sync request waits for a model this replica has never seen running (the
        # app or this replica starting, a model's first replica coming up) before its 503.
        self.first_wait = first_wait
        self._unavailable: set[str] = set()
        # Models refused at once when they have no replica: seen running (and lost since), or
        # waited for in vain once (a model that cannot start does not hold every request 15 s).
        self._no_wait: set[str] = set()
        self._parts_missing: set[str] = set()
        self._looked_at = 0.0
        self._looking: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self.broken: str | None = None  # why Ray's answer could not be read, while it cannot

    async def start(self) -> None:
        """A first look now, then the watch in the background (on the replica's event loop)."""
        await self._look()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def unavailable(self) -> set[str]:
        return self._unavailable

    async def confirm(self, model: str) -> bool:
        """Whether ``model`` has no running replica, asked again when the last answer (which
        says so) is older than half a second: a replica that has just started (the app
        coming up, a node back) serves at once, not at the next look. Requests that arrive
        while a look is under way wait for its answer, not for the one before it.

        A model this replica has never seen running is waited for, looked at every half
        second for up to ``first_wait`` seconds: an Ingress replica that starts before the
        model's (or looks before Serve reports it) would otherwise refuse the first requests.
        One it has seen running and lost (its node gone), or already waited for in vain, is
        refused at once."""
        deadline = time.monotonic() + (self.first_wait if model not in self._no_wait else 0.0)
        while True:
            if model in self._unavailable:
                await self._fresh()
            if model not in self._unavailable or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        if model in self._unavailable:
            self._no_wait.add(model)
            log.warning("replica watch: no running replica of %s; refusing a sync request", model)
        return model in self._unavailable

    async def not_running(self) -> list[str]:
        """Models and parts with no running replica, from a look at most half a second old."""
        await self._fresh()
        return sorted(self._unavailable) + sorted(self._parts_missing)

    async def _fresh(self) -> None:
        """A look at most half a second old (one look at a time; others wait for its answer)."""
        if self._looking is None and time.monotonic() - self._looked_at > 0.5:
            self._looking = asyncio.ensure_future(self._look())
        if self._looking is not None:
            await asyncio.shield(self._looking)

    async def _look(self) -> None:
        self._looked_at = time.monotonic()
        try:
            running = await asyncio.to_thread(self._running)
            self._unavailable = {
                model for model, name in self.deployments.items() if name in running and not running[name]
            }
            self._no_wait |= {model for model, name in self.deployments.items() if running.get(name)}
            self._parts_missing = {label for label, name in self.parts.items() if not running.get(name)}
            self.broken = None
        except RayAnswerChanged as exc:
            if self.broken != str(exc):
                log.error("replica watch: Ray's status answer changed shape; models are not watched: %s", exc)
            self.broken = str(exc)
        except Exception:  # the controller restarting: keep the last answer
            log.warning("replica watch: no status from the Serve controller", exc_info=True)
        finally:
            self._looking = None

    def _running(self) -> dict[str, int]:
        """Running replicas of each of this application's deployments (called in a thread).

        First the controller's overview (a few ms): a HEALTHY deployment runs all its target
        replicas, at least one here; so does a part (the Preprocessor, whose minimum is one)
        that is scaling up or down. Only when a model is not HEALTHY (starting, scaling, its
        node gone) or a part is starting or failing comes ``serve.status()``'s whole details
        (py-spy found ~5% of the Ingress's busy samples there under load)."""
        status = self.ray.overview()
        if all(status.get(name) == "HEALTHY" for name in self.deployments.values()) and all(
            status.get(name) in SCALING for name in self.parts.values()
        ):
            return dict.fromkeys(status, 1)
        return self.ray.running()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            await self._look()
