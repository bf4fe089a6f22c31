"""Calls through deployment handles: Ray's errors as the client should see them, and a
Transcriber deployment as the pipeline uses a model (serve_app.transcription.pipeline.PieceTranscriber)."""

from __future__ import annotations

from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from serve_app.audio.pieces import PreparedAudio
from serve_app.core.errors import ModelUnavailable, Overloaded, unwrap
from serve_app.core.transcript import DecodeOptions, Transcript


def client_error(exc: Exception) -> BaseException:
    """The error to raise for a failed handle call: Ray wraps remote errors; unwrap them."""
    cause = unwrap(exc)
    if isinstance(cause, (BackPressureError, DeploymentUnavailableError)):
        # A queue is full (max_queued_requests): tell the client to come back, now.
        return Overloaded("The service is at capacity; retry in a few seconds.")
    if isinstance(cause, (RayActorError, ActorUnavailableError)):
        # The replica doing the work died (its node went away) or cannot be reached now.
        return ModelUnavailable("The replica working on this request went away; retry in a few seconds.")
    return cause


class HandleDiarizer:
    """The Diarizer deployment as the pipeline uses it (serve_app.transcription.pipeline.PieceDiarizer)."""

    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    async def embed(self, piece: PreparedAudio):
        try:
            return await self.handle.embed.remote(piece)
        except Exception as exc:
            raise client_error(exc) from None

    async def diarize(self, windows, options):
        try:
            return await self.handle.diarize.remote(windows, options)
        except Exception as exc:
            raise client_error(exc) from None


class HandleTranscriber:
    """A model's Transcriber deployment, called piece by piece."""

    def __init__(self, handle: DeploymentHandle, multilingual: bool):
        self.handle = handle
        self.multilingual = multilingual

    async def detect_language(self, piece: PreparedAudio) -> tuple[str, float]:
        try:
            return await self.handle.detect_language.remote(piece)
        except Exception as exc:
            raise client_error(exc) from None

    async def transcribe_piece(self, piece: PreparedAudio, options: DecodeOptions) -> Transcript:
        try:
            return await self.handle.transcribe_piece.remote(piece, options)
        except Exception as exc:
            raise client_error(exc) from None
