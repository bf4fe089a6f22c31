"""What routes need, as FastAPI dependencies: the service context and the caller (key, tenant,
rate limit)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from serve_app.api.schemas import ModelInfo
from serve_app.api.streams import StreamGate
from serve_app.core.errors import Forbidden, Unauthorized
from serve_app.core.settings import Settings
from serve_app.jobs.service import JobService
from serve_app.tenancy.keys import Authenticator, KeyStore, Principal
from serve_app.tenancy.limits import RateLimiter
from serve_app.transcription.service import TranscriptionService
from serve_app.transcription.watch import JobWatch


@dataclass
class ServiceContext:
    """Everything the HTTP layer knows about the running service."""

    service: TranscriptionService
    auth: Authenticator = field(init=False)
    keys: KeyStore | None = field(init=False)
    limiter: RateLimiter | None = field(init=False)
    streams: StreamGate = field(init=False)
    _watch: JobWatch | None = field(init=False, default=None)

    def __post_init__(self):
        store = self.service.jobs.store if self.service.jobs is not None else None
        self.keys = KeyStore(store) if store is not None else None
        self.limiter = RateLimiter(store) if store is not None else None
        self.auth = Authenticator(self.service.settings, self.keys)
        cfg = self.service.settings
        self.streams = StreamGate(cfg.limit_event_streams, cfg.max_event_streams)

    @property
    def watch(self) -> JobWatch:
        """The job watchers of this replica (one per followed job)."""
        if self._watch is None:
            self._watch = JobWatch(self.jobs.store)
        return self._watch

    def key_store(self) -> KeyStore:
        self.service.job_service()  # no database: the one "unavailable" answer
        return self.keys

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def served(self) -> list[str]:
        return self.service.served

    @property
    def jobs(self) -> JobService:
        return self.service.job_service()

    @property
    def batches(self):
        return self.batches_for(None)

    def batches_for(self, caller: Principal | None):
        """The batch service, admitting within ``caller``'s quotas (None: reading only)."""
        from serve_app.jobs.admission import Quotas
        from serve_app.jobs.batches import BatchService

        return BatchService(
            self.jobs,
            max_files=self.settings.max_batch_files,
            quotas=Quotas.of(caller.limits) if caller is not None else None,
            max_seconds=self.settings.max_audio_seconds,
        )

    def model_info(self, name: str) -> ModelInfo:
        spec = self.service.catalog.get(name)
        return ModelInfo(
            id=name,
            description=spec.description,
            multilingual=spec.multilingual,
            languages=spec.languages,
            tasks=spec.tasks,
            device=self.settings.resolved_device,
            compute_type=self.settings.resolved_compute_type,
            default=name == self.settings.default_model,
            diarization=self.settings.diarization,
        )


def get_context(request: Request) -> ServiceContext:
    return request.app.state.context


Context = Annotated[ServiceContext, Depends(get_context)]


def _given_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key")


UPLOAD_ROUTES = {"/api/v1/transcriptions", "/api/v1/batches", "/v1/audio/transcriptions", "/v1/audio/translations"}


async def admit_upload(request: Request) -> None:
    """Before an upload's body is read: its key, its tenant's rate limit and daily quota, and
    for a batch its queue, from the headers alone. A refused upload then costs its sender its
    own bandwidth, not the Ingress's parsing of it (a flood of refused 16 MB batches would).
    Raises ServiceError; the route's own dependency reuses the principal checked here."""
    if request.method != "POST" or request.url.path.rstrip("/") not in UPLOAD_ROUTES:
        return
    principal = await _caller(request, transcription=True)
    if request.url.path.rstrip("/") == "/api/v1/batches" and principal.limits is not None:
        from serve_app.jobs.admission import Quotas

        ctx: ServiceContext = request.app.state.context
        await ctx.jobs.precheck(principal.tenant, Quotas.of(principal.limits), jobs=1)


async def _caller(request: Request, *, transcription: bool) -> Principal:
    ctx: ServiceContext = request.app.state.context
    checked = getattr(request.state, "admitted", None)
    if checked is not None:  # admit_upload did this before the body was read
        return checked
    try:
        principal = await ctx.auth.authenticate(_given_key(request), request.headers.get("host", ""))
    except Unauthorized:
        # Guessing keys costs the guesser: wrong keys are limited per client address.
        if ctx.limiter is not None and ctx.settings.limit_bad_keys_per_minute:
            address = request.client.host if request.client else "unknown"
            await ctx.limiter.hit_bad_key(address, ctx.settings.limit_bad_keys_per_minute)
        raise
    request.state.principal = principal
    if principal.limits is not None and ctx.limiter is not None:
        window = await ctx.limiter.hit(
            principal.tenant,
            principal.limits,
            transcription=transcription,
            openai=request.url.path.startswith("/v1/"),
        )
        request.state.rate_window = window
    if transcription:
        request.state.admitted = principal
    return principal


async def caller(request: Request) -> Principal:
    """The principal of a request: its key checked (``Authorization: Bearer <key>``, what the
    openai SDK sends, or ``X-API-Key``) and a request counted against its tenant's rate limit."""
    return await _caller(request, transcription=False)


async def transcribing_caller(request: Request) -> Principal:
    """``caller``, for a route that transcribes: the tenant's daily audio quota is checked too."""
    return await _caller(request, transcription=True)


async def admin_caller(request: Request) -> Principal:
    principal = await _caller(request, transcription=False)
    if not principal.is_admin:
        raise Forbidden("This route needs an admin key.")
    return principal


Caller = Annotated[Principal, Depends(caller)]
TranscribingCaller = Annotated[Principal, Depends(transcribing_caller)]
AdminCaller = Annotated[Principal, Depends(admin_caller)]
