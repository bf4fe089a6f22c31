"""The HTTP API: a FastAPI app built around a TranscriptionBackend."""

from serve_app.api.app import create_app

__all__ = ["create_app"]
