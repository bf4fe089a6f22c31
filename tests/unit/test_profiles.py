"""The deployment options build_app derives from configs/profiles (no Ray cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.app import _allocator_env, _with_env, load_profile


def test_the_cpu_profile_preloads_the_jemalloc_that_ships_with_ray():
    env = _allocator_env(load_profile("cpu")["transcriber"]["allocator"])
    assert Path(env["LD_PRELOAD"]).name == "libjemalloc.so" and Path(env["LD_PRELOAD"]).exists()
    assert "dirty_decay_ms:-1" in env["MALLOC_CONF"]  # freed pages are kept for reuse


def test_the_allocator_joins_the_runtime_env_without_dropping_what_is_there():
    options = {"ray_actor_options": {"num_cpus": 0.5, "runtime_env": {"env_vars": {"A": "1"}}}}
    merged = _with_env(options, {"LD_PRELOAD": "/x.so"})
    assert merged["ray_actor_options"] == {
        "num_cpus": 0.5,
        "runtime_env": {"env_vars": {"A": "1", "LD_PRELOAD": "/x.so"}},
    }
    assert options["ray_actor_options"]["runtime_env"]["env_vars"] == {"A": "1"}  # not mutated
    assert _with_env(options, {}) is options
    assert _allocator_env("system") == {} and _allocator_env(None) == {}
    with pytest.raises(ValueError, match="allocator"):
        _allocator_env("tcmalloc")
