"""The real application on a real local Ray cluster, shared by every test in this folder."""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import free_port


@dataclass
class RunningService:
    url: str
    handle: object  # DeploymentHandle of the Ingress

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 300), **kw)


@pytest.fixture(scope="session")
def service():
    import ray
    from ray import serve

    from deployments.app import APP_NAME, build_app

    port = free_port()
    ray.init(
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                                  "PYTHONPATH": str(Path(__file__).resolve().parents[2])}},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    handle = serve.run(build_app({}), name=APP_NAME, route_prefix="/")
    try:
        yield RunningService(url=f"http://127.0.0.1:{port}", handle=handle)
    finally:
        serve.shutdown()
        ray.shutdown()
