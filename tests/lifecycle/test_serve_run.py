"""`serve run serve_config.yaml`, the README's other way to run the service, as a person runs it:
started from the deployable config (on the machine's PostgreSQL, a database of its own), ready,
then stopped with Ctrl-C (SIGINT to its process group, as a terminal sends it), leaving nothing
running or listening."""

from __future__ import annotations

import signal

from testkit.process import ServiceProcess


def test_serve_run_stops_on_ctrl_c_and_leaves_nothing(tmp_path, keyed_dsn):
    """`serve run serve_config.yaml`, the README's other way, stopped as Ctrl-C stops it (SIGINT
    to its process group)."""
    # Its warm-up is not what this is about (tests/lifecycle/test_stop.py has it): CPU spared.
    instance = ServiceProcess(tmp_path, keyed_dsn, command="serve-run", env={"STT_WARMUP": "false"})
    instance.start()
    try:
        instance.wait_ready()
        took = instance.stop(sig=signal.SIGINT)
        print(f"serve run stopped {took:.1f} s after Ctrl-C")
        assert instance.leftovers() == [] and instance.listening() == []
    finally:
        if instance.proc.poll() is None:
            instance.proc.kill()
        instance.kill_leftovers()
