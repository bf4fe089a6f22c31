"""The service's Prometheus metrics: what is counted, where, and with which labels. No Ray here.

The instruments come from a factory that each deployment installs at start
(``deployments/ray_metrics.py``: Ray Serve's ``ray.serve.metrics``, exported by every node's
metrics agent on its metrics port with a ``ray_`` prefix, beside Ray's own ``ray_serve_*``).
Until one is installed (unit tests, the CLI) they record nothing. Every label takes bounded
values only: routes as declared (``/api/v1/transcriptions/{job_id}``), model names, HTTP
statuses, job statuses and outcomes; never a job id, a tenant or a file name.
"""

from __future__ import annotations

from typing import Protocol

# Seconds: a lone short request takes a fraction of a second, a 4-hour recording an hour on a
# small CPU (Ray's default latency buckets stop at 10 minutes).
PROCESSING_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
AUDIO_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
# Real-time factor: processing seconds per second of audio (0.02: fifty times faster than real time).
RTF_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1, 2, 5)
WINDOW_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
REQUEST_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)


class Instrument(Protocol):
    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None: ...
    def set(self, value: float, tags: dict[str, str] | None = None) -> None: ...
    def observe(self, value: float, tags: dict[str, str] | None = None) -> None: ...


class InstrumentFactory(Protocol):
    def counter(self, name: str, description: str, tag_keys: tuple[str, ...]) -> Instrument: ...
    def gauge(self, name: str, description: str, tag_keys: tuple[str, ...]) -> Instrument: ...
    def histogram(
        self, name: str, description: str, boundaries: tuple[float, ...], tag_keys: tuple[str, ...]
    ) -> Instrument: ...


class _Nothing:
    """An instrument that records nothing (no factory installed), but refuses what Ray's
    counters refuse, so that in-process runs fail where a deployment would."""

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        if value <= 0:
            raise ValueError(f"value must be >0, got {value}")

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass


class NoMetrics:
    def counter(self, name, description, tag_keys):
        return _Nothing()

    def gauge(self, name, description, tag_keys):
        return _Nothing()

    def histogram(self, name, description, boundaries, tag_keys):
        return _Nothing()


class ServiceMetrics:
    """Every metric of the service, recorded through named methods (the call sites stay short)."""

    def __init__(self, factory: InstrumentFactory | None = None):
        self.install(factory or NoMetrics())

    def install(self, factory: InstrumentFactory) -> None:
        f = factory
        self._requests = f.counter(
            "stt_requests",
            "Requests answered, by route (as declared), model and HTTP status.",
            ("route", "model", "status"),
        )
        self._audio = f.counter("stt_audio_seconds", "Seconds of audio transcribed.", ("model", "kind"))
        self._transcriptions = f.counter("stt_transcriptions", "Transcriptions completed.", ("model", "kind"))
        self._processing = f.histogram(
            "stt_processing_seconds",
            "Seconds the service worked on one transcription (queue time excluded).",
            PROCESSING_BUCKETS,
            ("model", "kind"),
        )
        self._duration = f.histogram(
            "stt_audio_duration_seconds", "Length of each transcribed recording.", AUDIO_BUCKETS, ("model",)
        )
        self._rtf = f.histogram(
            "stt_real_time_factor", "Processing seconds per second of audio.", RTF_BUCKETS, ("model", "kind")
        )
        self._windows = f.histogram(
            "stt_decode_windows", "30 s windows in one model decode call.", WINDOW_BUCKETS, ("model",)
        )
        self._sharing = f.histogram(
            "stt_decode_requests", "Requests whose speech shared one model decode call.", REQUEST_BUCKETS, ("model",)
        )
        self._redecoded = f.counter("stt_redecoded_chunks", "Chunks of shared windows decoded again alone.", ("model",))
        self._invented = f.counter(
            "stt_invented_segments",
            "Decoded text dropped as invented (no_speech: Whisper's no-speech or unsure-words rule; "
            "repetition: a loop), by model.",
            ("model", "rule"),
        )
        self._jobs = f.gauge("stt_jobs", "Jobs waiting or running now, by status (all tenants).", ("status",))
        self._queue = f.gauge("stt_queue_depth", "Jobs waiting for a worker (PENDING).", ())
        self._finished = f.counter(
            "stt_jobs_finished",
            "Jobs ended, by status; RETRIED: an attempt failed and the job went back to the queue.",
            ("status",),
        )
        self._webhooks = f.counter(
            "stt_webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered, retried, failed (gave up), refused (address).",
            ("outcome",),
        )
        self._db_errors = f.counter("stt_database_errors", "Database calls that failed, by kind.", ("kind",))

    def request(self, route: str, model: str | None, status: int) -> None:
        self._requests.inc(1, {"route": route, "model": model or "", "status": str(status)})

    def transcribed(self, model: str, kind: str, audio_seconds: float, processing_seconds: float) -> None:
        tags = {"model": model, "kind": kind}
        self._transcriptions.inc(1, tags)
        if audio_seconds > 0:  # Ray's counters refuse 0 (a file of one sample lasts 0.0 s)
            self._audio.inc(audio_seconds, tags)
        self._processing.observe(processing_seconds, tags)
        self._duration.observe(audio_seconds, {"model": model})
        if audio_seconds > 0:
            self._rtf.observe(processing_seconds / audio_seconds, tags)

    def decode_call(self, model: str, windows: int, requests: int) -> None:
        self._windows.observe(windows, {"model": model})
        self._sharing.observe(requests, {"model": model})

    def redecoded(self, model: str, chunks: int) -> None:
        if chunks > 0:
            self._redecoded.inc(chunks, {"model": model})

    def invented(self, model: str, rule: str) -> None:
        self._invented.inc(1, {"model": model, "rule": rule})

    def active_jobs(self, pending: int, processing: int) -> None:
        self._jobs.set(pending, {"status": "PENDING"})
        self._jobs.set(processing, {"status": "PROCESSING"})
        self._queue.set(pending)

    def job_finished(self, status: str) -> None:
        self._finished.inc(1, {"status": status})

    def webhook(self, outcome: str) -> None:
        self._webhooks.inc(1, {"outcome": outcome})

    def database_error(self, kind: str) -> None:
        self._db_errors.inc(1, {"kind": kind})


METRICS = ServiceMetrics()
