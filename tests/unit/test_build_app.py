"""serve_config.yaml builds the application the way `serve run` and `serve deploy` build it.

Ray's controller imports the config's ``import_path``, calls it with ``args`` and turns the
result into deployments (ray/serve/_private/application_state.py, build_serve_application);
the same steps here, without a cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# Building the app only hands this URL on to the replicas; nothing connects to it here.
UNUSED_DATABASE = "postgresql://nobody@127.0.0.1:1/none"


def build_from_config(config: dict):
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.parse_obj(config)
    [app] = schema.applications
    built = build_app(
        call_user_app_builder_with_args_if_necessary(import_attr(app.import_path), app.args), name=app.name
    )
    built.validate_single_fastapi_ingress()
    return {d.name: d for d in built.deployments}


@pytest.fixture
def config(monkeypatch):
    monkeypatch.setenv("STT_DATABASE_URL", UNUSED_DATABASE)  # no embedded PostgreSQL in this process
    return yaml.safe_load((REPO / "serve_config.yaml").read_text())


def test_serve_config_builds_every_deployment_with_its_profile(config):
    deployments = build_from_config(config)
    expected = {"Ingress", "Preprocessor", "Transcriber-tiny-en", "Transcriber-base", "JobWorker", "Diarizer"}
    assert set(deployments) == expected
    tiny = deployments["Transcriber-tiny-en"]
    assert tiny.user_config == {"max_batch_size": 4, "batch_wait_timeout_s": 0.1, "decode_batch_size": 4}
    assert "LD_PRELOAD" in tiny.ray_actor_options["runtime_env"]["env_vars"]
    assert deployments["Preprocessor"].max_queued_requests == 256


def test_a_mistyped_arg_in_the_config_stops_the_build(config):
    config["applications"][0]["args"]["max_batch_sise"] = 8
    with pytest.raises(ValueError, match="unknown build_app args \\['max_batch_sise'\\]"):
        build_from_config(config)


def test_config_deploys_get_the_same_latency_buckets_as_local_clusters(config):
    """Serve's latency histograms reach hours wherever the app runs (its default stops at 10 min)."""
    from deployments.local_cluster import LATENCY_BUCKETS_MS

    env = config["applications"][0]["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS"] == LATENCY_BUCKETS_MS
    assert float(LATENCY_BUCKETS_MS.split(",")[-1]) >= 4 * 3600 * 1000
