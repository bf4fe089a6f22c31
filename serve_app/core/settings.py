"""Service configuration: one pydantic-settings object read from STT_* environment variables."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_serializer, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET_FIELDS = ("api_key", "webhook_secret", "s3_secret_key")
WEAK_SECRETS = {"change-me", "changeme", "secret", "webhook-secret"}


def is_loopback(host: str) -> bool:
    """A loopback address or name (``localhost``, ``127.0.0.5``, ``::1``, ``[::1]``)."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything the service reads from its environment (prefix ``STT_``)."""

    model_config = SettingsConfigDict(env_prefix="STT_", env_file=None, extra="ignore")

    host: str = Field("127.0.0.1", description="Address the HTTP proxy binds.")
    port: int = Field(8000, description="Port of the HTTP proxy.")
    proxy: Literal["haproxy", "python"] = Field(
        "haproxy",
        description="HTTP front of a local cluster: HAProxy (bundled with ray[serve]) forwarding "
        "straight to the Ingress replica, or Serve's Python proxy actor.",
    )
    metrics_port: int = Field(
        8080,
        ge=0,
        le=65535,
        description="Prometheus port of the local cluster `stt serve` starts (Ray's metrics agent: "
        "ray_stt_* and ray_serve_*); 0: any free port. On a cluster: `ray start --metrics-export-port`.",
    )
    profile: Literal["cpu", "gpu", "cluster"] = Field(
        "cpu", description="Deployment profile: resources and batch limits (configs/profiles/)."
    )
    device: Literal["cpu", "cuda"] | None = Field(
        None, description="Device the models run on; default from the profile."
    )
    compute_type: str | None = Field(
        None, description="CTranslate2 compute type; default int8 on cpu, float16 on cuda."
    )
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["tiny.en", "base"],
        description="Catalog names to serve, comma separated; one Transcriber each.",
    )
    default_model: str = Field("tiny.en", description="Model used when a request names none.")
    catalog_path: Path = Field(REPO_ROOT / "configs" / "models.yaml")
    cache_dir: Path = Field(Path.home() / ".cache" / "speechtotext", description="Assembled model files.")
    data_dir: Path = Field(Path.home() / ".local" / "share" / "speechtotext", description="Jobs, blobs, database.")
    cpu_threads: int | None = Field(
        None, description="CTranslate2 threads per decode; default from the profile (cpu: 1)."
    )
    model_workers: int | None = Field(
        None, description="Decodes one Transcriber runs at once; default from the profile (cpu: 2)."
    )
    beam_size: int = Field(5, ge=1, le=10, description="Beam size of the decoder.")
    vad_method: Literal["silero", "pyannote"] = Field(
        "silero", description="Voice activity detector run by the Preprocessor."
    )
    max_batch_size: int | None = Field(
        None, description="30 s windows of speech per cross-request batch; default from the profile."
    )
    batch_wait_timeout_s: float | None = Field(
        None,
        description="How long a free model worker waits for a fuller batch while another "
        "decodes (0: no wait); default from the profile.",
    )
    warmup: bool = Field(
        True,
        description="Transcribers and Preprocessors decode bundled speech at start, before they "
        "take requests (serve_app/warmup.py): the first requests then run at steady speed.",
    )
    diarization: bool = Field(
        True,
        description="Serve speaker diarization (diarize=true): a Diarizer deployment with "
        "resemblyzer's bundled encoder; off, asking for it is a 400.",
    )
    speech_guards: bool = Field(
        True,
        description="Drop decoded text Whisper invents where nobody speaks (its no-speech rule, "
        "unsure words, loops: serve_app/asr/guards.py); off only to measure what they catch.",
    )
    pack_short_chunks: bool = Field(
        True, description="Decode short chunks of different requests in shared 30 s windows."
    )
    align_models: dict[str, str] = Field(
        default_factory=dict,
        description="Local WhisperX (wav2vec2) alignment models for word times, as JSON "
        '{"<language>": "<model folder>"}; other languages use Whisper\'s own word times.',
    )
    api_key: SecretStr | None = Field(
        None,
        description="Bootstrap admin key (tenant default_user). With it, or once any key is in the "
        "database, requests must send Authorization: Bearer <key> (or X-API-Key).",
    )
    auth: Literal["auto", "required"] = Field(
        "auto",
        description="auto: open for one local user until a key exists; required: a key always.",
    )
    allow_open_network: bool = Field(
        False,
        description="Start open (no key required) even though STT_HOST is not a loopback address. "
        "Without it, such a start is refused: anyone who reaches the port could read and delete "
        "every transcript.",
    )
    open_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names an open service answers besides loopback ones (localhost, 127.0.0.1, "
        "[::1]); any other Host header is refused, so a DNS-rebinding page cannot use it.",
    )
    auth_cache_seconds: float = Field(
        2.0, gt=0, le=5, description="How long an Ingress trusts a key it looked up (revocations show within it)."
    )
    # Defaults of each tenant's limits (the tenants table overrides them); 0: no limit.
    limit_requests_per_minute: int = Field(600, ge=0, description="Requests per minute per tenant.")
    limit_max_concurrent: int = Field(
        48,
        ge=0,
        description="Transcriptions a tenant runs at once, sync and async together: as many as a JobWorker "
        "runs, so that one tenant's batch fills the Transcribers' batches as 16 concurrent requests do.",
    )
    limit_audio_hours_per_day: float = Field(24.0, ge=0, description="Audio hours a tenant transcribes per UTC day.")
    limit_event_streams: int = Field(
        8, ge=0, description="Event streams (GET .../events) a tenant may hold open on one Ingress replica."
    )
    max_event_streams: int = Field(
        50,
        ge=0,
        description="Event streams one Ingress replica holds open: a quarter of its 200 request slots "
        "(cpu profile), so uploads keep the rest.",
    )
    limit_bad_keys_per_minute: int = Field(
        30, ge=0, description="Requests with a wrong API key one client address may make per minute (then 429)."
    )
    limit_max_queued: int = Field(1000, ge=0, description="Async jobs a tenant may have waiting in the queue.")
    limit_storage_gb: float = Field(20.0, ge=0, description="GB of audio and results a tenant may keep stored.")
    retention_days: float = Field(
        30.0, ge=0, description="Days after which a finished job's audio is deleted (0: kept until the job is)."
    )
    retention_results: bool = Field(
        False, description="Delete the finished job itself (its result and row) at the retention age too."
    )
    max_upload_mb: int = Field(100, description="Largest accepted upload in MiB.")
    max_audio_seconds: float = Field(4 * 3600, description="Longest accepted audio.")
    preprocess_memory_seconds: float = Field(
        8 * 3600,
        gt=0,
        description="Decoded audio one Preprocessor replica holds at once, in seconds (230 MB an hour); "
        "uploads beyond it wait. At least max_audio_seconds.",
    )

    # -- durable jobs ---------------------------------------------------------------------------
    database_url: str | None = Field(
        None, description="PostgreSQL DSN; none: an embedded PostgreSQL in data_dir/pgdata."
    )
    db_pool_min: int = Field(1, ge=0)
    db_pool_max: int = Field(10, ge=1)
    blob_url: str | None = Field(None, description="Where audio and results go: file:///path or s3://bucket/prefix.")
    s3_endpoint_url: str | None = Field(None, description="S3-protocol endpoint (MinIO, ...).")
    s3_region: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    default_user: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Tenant of the open mode and of STT_API_KEY.",
    )
    job_max_attempts: int = Field(3, ge=1, description="Tries of a job before it is FAILED.")
    lease_seconds: float = Field(30.0, gt=0, description="Worker lease on a job; renewed at 1/3.")
    ingress_replicas: int | None = Field(
        None, ge=1, description="Ingress replicas (HTTP and handle entry points); default from the profile."
    )
    worker_replicas: int = Field(
        1, ge=0, description="JobWorker replicas when the profile does not autoscale them; 0: none."
    )
    worker_concurrency: int = Field(
        48,
        ge=1,
        description="Jobs one worker runs at once: enough that many short jobs fill the Transcribers' "
        "batches as concurrent sync requests do (each waits on the models, not on the CPU).",
    )
    max_batch_files: int = Field(1000, ge=1, description="Files in one batch (POST /api/v1/batches).")
    max_batch_mb: int = Field(2048, ge=1, description="Largest batch upload in MiB (all its files).")
    worker_poll_seconds: float = Field(5.0, gt=0, description="Fallback poll when NOTIFY is missed.")
    webhook_secret: SecretStr | None = Field(
        None,
        description="Master key of webhook signatures (each tenant signs with a key derived from it); "
        "none: webhooks are off. At least 16 characters, and not the example 'change-me'.",
    )
    webhook_max_attempts: int = Field(5, ge=1)
    webhook_backoff_seconds: float = Field(1.0, ge=0, description="First retry delay; doubles.")
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Internal webhook receivers to allow, comma separated: host names, addresses or "
        "CIDRs. Any other URL that resolves to a loopback, private, link-local, multicast or "
        "reserved address is refused.",
    )

    @field_validator("models", "webhook_allow_hosts", "open_hosts", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _real_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and (value.get_secret_value() in WEAK_SECRETS or len(value.get_secret_value()) < 16):
            raise ValueError(
                "STT_WEBHOOK_SECRET must be a real secret of at least 16 characters (not the example "
                "'change-me'); leave it unset to turn webhooks off."
            )
        return value

    @field_serializer(*SECRET_FIELDS, when_used="json")
    def _hidden(self, value: SecretStr | None, info):
        """Secrets print as stars; only ``replica_args`` carries their values."""
        if value is None:
            return None
        return value.get_secret_value() if (info.context or {}).get("reveal") else str(value)

    def replica_args(self) -> dict:
        """These settings for a replica's constructor (which makes Settings of them again):
        the one dump that carries the secrets' values. Never log it."""
        return self.model_dump(mode="json", context={"reveal": True})

    def secret(self, name: str) -> str | None:
        """A secret setting's value (``api_key``, ``webhook_secret``, ``s3_secret_key``)."""
        value = getattr(self, name)  # a plain str where a copy was updated without validation
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    @property
    def may_be_open(self) -> bool:
        """Whether requests may come without a key (until one exists in the database)."""
        return self.auth != "required" and not self.api_key

    def check_exposure(self) -> None:
        """Refuse to serve open on an address other hosts reach, unless told to."""
        if self.may_be_open and not is_loopback(self.host) and not self.allow_open_network:
            raise ValueError(
                f"STT_HOST={self.host} is reachable from other machines, and with no STT_API_KEY and "
                "STT_AUTH=auto the service starts open to anyone who reaches it. Set STT_API_KEY (or "
                "STT_AUTH=required and create keys with `stt keys create`), or STT_ALLOW_OPEN_NETWORK=true "
                "if that is really meant."
            )

    @property
    def resolved_device(self) -> str:
        return self.device or ("cuda" if self.profile == "gpu" else "cpu")

    @property
    def resolved_compute_type(self) -> str:
        if self.compute_type:
            return self.compute_type
        return "float16" if self.resolved_device == "cuda" else "int8"
