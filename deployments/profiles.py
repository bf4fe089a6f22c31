"""Deployment profiles (configs/profiles/<name>.yaml) as typed options, checked when the app is built.

Each section is a pydantic model: a mistyped key or a value of the wrong kind stops the deploy
with a message naming the file and the key, instead of being silently ignored. Every default
is written here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.asr.runner import DecodeLimits
from serve_app.core.settings import REPO_ROOT

PROFILES = REPO_ROOT / "configs" / "profiles"


class DeploymentOptions(BaseModel):
    """What Ray Serve's ``Deployment.options`` takes from a profile."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int | None = Field(None, ge=1)
    ray_actor_options: dict[str, Any] = Field(default_factory=dict)
    max_ongoing_requests: int | None = Field(None, ge=1)
    max_queued_requests: int | None = Field(None, ge=-1)
    autoscaling_config: dict[str, Any] | None = None
    # A stopping replica waits for its in-flight requests, checking every wait_loop seconds, at
    # most timeout seconds (Ray's defaults: 2 and 20).
    graceful_shutdown_wait_loop_s: float | None = Field(None, gt=0)
    graceful_shutdown_timeout_s: float | None = Field(None, ge=0)

    def serve_options(self) -> dict[str, Any]:
        """The keyword arguments of ``Deployment.options``: what the profile sets."""
        keys = DeploymentOptions.model_fields
        return {k: v for k, v in self.model_dump(include=set(keys)).items() if v not in (None, {})}


class IngressProfile(DeploymentOptions):
    nice: int = Field(0, description="Priority of the Ingress's threads (negative: ahead of the rest).")


IDLE = "Run those threads as SCHED_IDLE: only when nothing else on the box wants the CPU (Linux)."


class PreprocessorProfile(DeploymentOptions):
    nice: int = Field(0, description="Priority of decode and VAD threads.")
    idle: bool = Field(False, description=IDLE)


class TranscriberProfile(DeploymentOptions, DecodeLimits):
    cpu_threads: int = Field(1, ge=1, description="CTranslate2 threads per decode call.")
    model_workers: int = Field(1, ge=1, description="Decode calls running at once.")
    nice: int = Field(0, description="Priority of the decode threads.")
    idle: bool = Field(False, description=IDLE)
    allocator: Literal["system", "jemalloc"] = "system"

    def limits(self) -> DecodeLimits:
        return DecodeLimits(**self.model_dump(include=set(DecodeLimits.model_fields)))


class WorkerProfile(DeploymentOptions):
    pass


class DiarizerProfile(DeploymentOptions):
    nice: int = Field(0, description="Priority of the encoder's threads.")
    idle: bool = Field(False, description=IDLE)
    max_batch_size: int = Field(16, ge=1, description="Pieces of concurrent recordings per encoder batch.")


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ingress: IngressProfile = Field(default_factory=IngressProfile)
    preprocessor: PreprocessorProfile = Field(default_factory=PreprocessorProfile)
    transcriber: TranscriberProfile = Field(default_factory=TranscriberProfile)
    worker: WorkerProfile = Field(default_factory=WorkerProfile)
    diarizer: DiarizerProfile = Field(default_factory=DiarizerProfile)


class ProfileError(ValueError):
    """A profile that does not describe a deployment: the message says where and what."""


def load_profile(name: str, folder: Path = PROFILES) -> Profile:
    path = Path(folder) / f"{name}.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in Path(folder).glob("*.yaml")))
        raise ProfileError(f"no profile '{name}' in {folder} (known: {known})") from None
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ProfileError(f"profile {path}: {problems}") from None
