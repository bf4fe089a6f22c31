"""What every Ray worker process of our clusters runs before it becomes an actor or runs a task
(``runtime_env={"worker_process_setup_hook": "deployments.worker_setup.setup"}``), and what the
driver runs before it imports Serve.

Ray Serve imports pandas whenever it is installed (``ray.serve._private.utils`` registers a JSON
encoder for DataFrames, which our app never returns), and whisperx brings pandas along: every
Serve process (controller, proxies, each replica) then spent ~1.9 CPU-seconds importing it and
what it brings, ~14 of the ~100 CPU-seconds a `make run` start costs on 2 cores (measured:
docs/PERFORMANCE.md). ``setup`` makes that one import fail as it would without pandas
installed; every other importer (whisperx's alignment and diarization) gets pandas as usual.
"""

from __future__ import annotations

import importlib.abc
import sys

SERVE_UTILS = "ray.serve._private.utils"


class SkipPandasForServe(importlib.abc.MetaPathFinder):
    """Refuses ``import pandas`` when, and only when, Serve's utils module asks for it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "pandas":
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith("importlib"):
            frame = frame.f_back
        if frame is not None and frame.f_globals.get("__name__") == SERVE_UTILS:
            raise ModuleNotFoundError("pandas is not imported for Ray Serve's encoders", name="pandas")
        return None


def setup() -> None:
    """Install the finder once, first in line; a no-op where Serve is already imported."""
    if SERVE_UTILS in sys.modules or any(isinstance(f, SkipPandasForServe) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, SkipPandasForServe())


def worker_runtime_env(env_vars: dict[str, str]) -> dict:
    """The runtime_env of a cluster this project starts: ``env_vars`` and ``setup`` run first in
    every worker process."""
    return {"env_vars": env_vars, "worker_process_setup_hook": f"{__name__}.setup"}
