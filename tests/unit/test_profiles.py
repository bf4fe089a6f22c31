"""Deployment profiles as typed options, and what build_app derives from them (no Ray cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.app import build_settings
from deployments.profiles import ProfileError, load_profile
from deployments.transcriber import allocator_env, transcriber_deployment, with_env
from serve_app.core.settings import Settings


def test_the_cpu_profile_preloads_the_jemalloc_that_ships_with_ray():
    env = allocator_env(load_profile("cpu").transcriber.allocator)
    assert Path(env["LD_PRELOAD"]).name == "libjemalloc.so" and Path(env["LD_PRELOAD"]).exists()
    assert "dirty_decay_ms:-1" in env["MALLOC_CONF"]  # freed pages are kept for reuse


def test_the_allocator_joins_the_runtime_env_without_dropping_what_is_there():
    options = {"ray_actor_options": {"num_cpus": 0.5, "runtime_env": {"env_vars": {"A": "1"}}}}
    merged = with_env(options, {"LD_PRELOAD": "/x.so"})
    assert merged["ray_actor_options"] == {
        "num_cpus": 0.5,
        "runtime_env": {"env_vars": {"A": "1", "LD_PRELOAD": "/x.so"}},
    }
    assert options["ray_actor_options"]["runtime_env"]["env_vars"] == {"A": "1"}  # not mutated
    assert with_env(options, {}) is options
    assert allocator_env("system") == {}


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_shipped_profiles_are_valid(name):
    profile = load_profile(name)
    assert profile.transcriber.max_batch_size >= 1 and profile.ingress.max_ongoing_requests


@pytest.mark.parametrize(
    "text, where",
    [
        ("transcriber:\n  max_batch_sise: 4\n", "transcriber.max_batch_sise"),
        ("transcriber:\n  allocator: tcmalloc\n", "transcriber.allocator"),
        ("ingres:\n  num_replicas: 1\n", "ingres"),
        ("preprocessor:\n  num_replicas: 0\n", "preprocessor.num_replicas"),
    ],
)
def test_a_mistyped_profile_fails_the_build_with_the_key_named(tmp_path, text, where):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ProfileError, match=f"bad.yaml: {where}"):
        load_profile("bad", tmp_path)
    with pytest.raises(ProfileError, match="known: bad"):
        load_profile("absent", tmp_path)


def test_unknown_build_args_fail():
    with pytest.raises(ValueError, match="unknown build_app args \\['modles'\\]"):
        build_settings({"modles": ["tiny.en"]})


def test_transcriber_options_come_from_the_profile_with_settings_overriding_it():
    profile = load_profile("cpu").transcriber
    app = transcriber_deployment("tiny.en", profile, Settings(max_batch_size=16, model_workers=3))
    deployment = app._bound_deployment
    assert deployment.name == "Transcriber-tiny-en"
    assert deployment.user_config == {"max_batch_size": 16, "batch_wait_timeout_s": 0.1, "decode_batch_size": 4}
    assert deployment.max_ongoing_requests == 256  # the profile's, above a full batch per worker and as many queued
    big = transcriber_deployment("tiny.en", profile, Settings(max_batch_size=64, model_workers=3))._bound_deployment
    assert big.max_ongoing_requests == 2 * 3 * 64
    assert deployment.ray_actor_options["num_cpus"] == 0.5
    assert "LD_PRELOAD" in deployment.ray_actor_options["runtime_env"]["env_vars"]
    with pytest.raises(ValueError, match="max_batch_size"):
        transcriber_deployment("tiny.en", profile, Settings(max_batch_size=0))
