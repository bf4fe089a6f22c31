"""What an upload is, checked before a job is accepted: a container that opens, holds an audio
stream, states nothing implausible, and whose first samples decode. Bytes that are not audio
are refused before a job exists (and their stored copy deleted by the caller), so the service
never keeps, or serves back, a file that only claims to be audio.

Also the upload's own media type, from the container FFmpeg recognised (never from the file
name the client chose), which ``/audio`` serves it as."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from serve_app.audio.decode import DecodedStream
from serve_app.core.errors import InvalidAudio

# FFmpeg's demuxer names (the first of a comma-separated list) and the type each is served as.
MEDIA_TYPES = {
    "wav": "audio/wav",
    "w64": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mov": "audio/mp4",
    "matroska": "audio/webm",
    "aac": "audio/aac",
    "amr": "audio/amr",
    "caf": "audio/x-caf",
    "aiff": "audio/aiff",
}
FALLBACK_TYPE = "application/octet-stream"
BYTES_PER_SECOND_GUESS = 16_000  # a container that states no length: 128 kbit/s


@dataclass(frozen=True)
class Inspection:
    seconds: float  # what the container states, or a guess from its size when it states nothing
    stated: bool
    media_type: str


def inspect(source: bytes | BinaryIO, *, max_seconds: float | None = None) -> Inspection:
    """Raise InvalidAudio (or UnsupportedMediaType) unless ``source`` is audio; blocking (run
    it in a thread). Decodes only the first block of samples."""
    with DecodedStream(source, max_seconds=max_seconds) as stream:
        if next(stream.blocks(), None) is None:
            raise InvalidAudio("The file holds no audio samples.", code="no_audio")
        name = stream.container_format.split(",")[0]
        declared, size = stream.declared, stream.size
    if declared is not None:
        return Inspection(declared, True, MEDIA_TYPES.get(name, FALLBACK_TYPE))
    return Inspection(size / BYTES_PER_SECOND_GUESS, False, MEDIA_TYPES.get(name, FALLBACK_TYPE))
