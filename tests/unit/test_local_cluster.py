"""The environment `make run`, the tests and the load tests give a local cluster they start."""

from __future__ import annotations

import os

from deployments.local_cluster import local_cluster_env, stop_haproxy


def test_each_instance_gets_its_own_haproxy_files_and_the_real_binary(monkeypatch):
    """A second instance started by the same process (the bench, the diarization load test)
    found the first one's wrapper as the binary to run: HAProxy exec'd itself and never came up."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    first = local_cluster_env(free_ports=True)
    binary = os.environ["STT_HAPROXY_BINARY"]
    second = local_cluster_env(free_ports=True)
    try:
        assert first != second and first.is_dir() and second.is_dir()
        assert os.environ["STT_HAPROXY_BINARY"] == binary
        assert not binary.endswith("haproxy-local") and os.access(binary, os.X_OK)
        assert os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"].endswith("haproxy-local")
        assert os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"].startswith(str(second))
        assert os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "0"
    finally:
        assert stop_haproxy(first) == [] and stop_haproxy(second) == []  # none ran
    assert not first.exists() and not second.exists()


def test_serves_private_calls_that_stt_serve_starts_serve_with_are_where_it_reads_them():
    """`stt serve` creates Serve's controller itself, so that the app deploys while the proxies
    start; a Ray upgrade that moves these calls makes it fall back to serve.start (slower)."""
    import inspect

    from ray.serve._private.api import _coerce_controller_options, _create_controller_and_proxy_refs
    from ray.serve._private.client import ServeControllerClient
    from ray.serve.context import _set_global_client

    params = list(inspect.signature(_create_controller_and_proxy_refs).parameters)
    assert params[:6] == [
        "http_options",
        "grpc_options",
        "global_logging_config",
        "global_tracing_config",
        "controller_options",
        "proxy_location",
    ]
    assert callable(_coerce_controller_options) and callable(_set_global_client) and ServeControllerClient


def test_serves_private_calls_that_the_stop_uses_are_where_it_reads_them():
    """The stop looks at the controller once (check_alive) before Serve's own stop waits on it,
    and forgets the client after; a Ray upgrade that moves these makes the stop use serve.shutdown."""
    from ray.serve._private.controller import ServeController
    from ray.serve.context import _disconnect, _get_global_client

    assert callable(_disconnect) and callable(_get_global_client)
    assert callable(getattr(ServeController, "check_alive", None))


def test_a_stop_after_a_signal_to_the_whole_group_does_not_wait_on_a_gone_gcs(monkeypatch):
    # The driver's task-event flush at ray.shutdown waited 5 s on the GCS that the group's
    # SIGTERM had stopped: `make run` took 12-16 s to exit instead of under 10.
    monkeypatch.setattr(os, "environ", {})
    local_cluster_env(proxy="ray")
    flush_ms = "RAY_task_events_shutdown_flush_timeout_ms"  # Ray's spelling of its setting
    assert int(os.environ[flush_ms]) <= 1000
