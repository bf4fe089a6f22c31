"""Audio in: any container PyAV reads decoded to 16 kHz mono float32, block by block, with the
limits checked as it decodes (length, truncation, decompression bombs)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

import av
import numpy as np

from serve_app.audio.pieces import SAMPLE_RATE
from serve_app.core.errors import InvalidAudio, UnsupportedMediaType

# A container that declares more audio than it holds is truncated; allow for encoder padding.
TRUNCATION_TOLERANCE = 0.9


# A decompression bomb (a few KB of FLAC that say nothing of their length and decode to hours
# of silence) is stopped while it decodes: no real codec needs less than ~100 bytes a second
# (Opus at its lowest is 750), so an upload may decode to at most this many seconds per KiB.
MAX_SECONDS_PER_KIB = 10.0
MIN_SECONDS_ALLOWED = 30.0


def plausible_seconds(size: int) -> float:
    """The longest audio an upload of ``size`` bytes may decode to."""
    return max(MIN_SECONDS_ALLOWED, size / 1024 * MAX_SECONDS_PER_KIB)


def decode(data: bytes, *, max_seconds: float | None = None) -> np.ndarray:
    """Decode the first audio stream of any container PyAV reads to mono 16 kHz float32.

    Raises InvalidAudio for non-audio, truncated or corrupt input (an empty upload never gets
    here: serve_app/uploads.py refuses it), for audio over ``max_seconds``, and for a file that
    decodes to more than a file its size can hold (``plausible_seconds``), as soon as it does.
    """
    with DecodedStream(data, max_seconds=max_seconds) as stream:
        blocks = list(stream.blocks())
    return np.concatenate(blocks).astype(np.float32, copy=False)


class DecodedStream:
    """The audio of an upload (bytes) or a stored object (a seekable file object), decoded
    block by block to mono 16 kHz float32 as PyAV reads the container: memory holds one block,
    however long the audio.

    The limits are enforced while decoding: more than ``max_seconds``, or more than a file of
    this size can hold (a decompression bomb), raises InvalidAudio at the block that crosses
    the line; a file that decodes to less than its header declares raises it at the end.
    """

    def __init__(self, source: bytes | BinaryIO, *, max_seconds: float | None = None):
        self.size = _size_of(source)
        head = _head(source)
        _check_wav_length(head, self.size)
        self.max_seconds = max_seconds
        self.plausible = plausible_seconds(self.size)
        self.decoded = 0  # samples handed out so far
        try:
            self._container = av.open(
                io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source,
                mode="r",
                metadata_errors="ignore",
                options=_probe_options(head),
            )
        except (av.FFmpegError, ValueError, UnicodeDecodeError) as exc:
            raise InvalidAudio(
                "The uploaded file is not audio that can be decoded "
                f"(formats such as wav, mp3, flac, ogg, m4a, webm are accepted): {_reason(exc)}"
            ) from exc
        try:
            if not self._container.streams.audio:
                raise UnsupportedMediaType("The uploaded file has no audio stream.", code="no_audio_stream")
            self._stream = self._container.streams.audio[0]
            self.declared = _declared_seconds(self._container, self._stream)
            self._check_declared()
        except BaseException:
            self._container.close()
            raise

    @property
    def seconds(self) -> float:
        return self.decoded / SAMPLE_RATE

    @property
    def container_format(self) -> str:
        """FFmpeg's name of the container (``wav``, ``mov,mp4,m4a,3gp,3g2,mj2``, ...)."""
        return self._container.format.name

    def _check_declared(self) -> None:
        declared = self.declared
        if self.max_seconds is not None and declared is not None and declared > self.max_seconds:
            raise InvalidAudio(
                f"The audio is {declared:.0f} s long; the limit is {self.max_seconds:.0f} s.",
                code="audio_too_long",
            )
        if declared is not None and declared > self.plausible:
            raise InvalidAudio(
                f"The file says it holds {declared:.0f} s of audio in {self.size / 1024:.1f} KiB, more than any "
                "real recording of that size; it is refused as a decompression bomb.",
                code="implausible_audio",
            )

    def blocks(self) -> Iterator[np.ndarray]:
        """Decoded samples, a block (one or a few codec frames) at a time, in order."""
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in self._container.decode(self._stream):
                for out in resampler.resample(frame):
                    yield self._count(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                yield self._count(out.to_ndarray().reshape(-1))
        except av.FFmpegError as exc:
            raise InvalidAudio(f"The audio is corrupt or truncated: {_reason(exc)}") from exc
        self._check_end()

    def _count(self, block: np.ndarray) -> np.ndarray:
        self.decoded += block.size
        if self.max_seconds is not None and self.decoded > self.max_seconds * SAMPLE_RATE:
            raise InvalidAudio(
                f"The audio is longer than the limit of {self.max_seconds:.0f} s.", code="audio_too_long"
            )
        if self.decoded > self.plausible * SAMPLE_RATE:
            raise InvalidAudio(
                f"The file decodes to more than {self.plausible:.0f} s of audio from {self.size / 1024:.1f} KiB, "
                "more than any real recording of that size holds; it is refused as a decompression bomb.",
                code="implausible_audio",
            )
        return block.astype(np.float32, copy=False)

    def _check_end(self) -> None:
        if self.decoded == 0:
            raise InvalidAudio("The file holds no audio samples.", code="no_audio")
        declared, seconds = self.declared, self.seconds
        if declared is not None and declared > 1.0 and seconds < declared * TRUNCATION_TOLERANCE:
            raise InvalidAudio(
                f"The audio is truncated: its header declares {declared:.2f} s "
                f"but only {seconds:.2f} s could be decoded.",
                code="truncated_audio",
            )

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> DecodedStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _size_of(source: bytes | BinaryIO) -> int:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    here = source.tell()
    size = source.seek(0, io.SEEK_END)
    source.seek(here)
    return size


def _head(source: bytes | BinaryIO, size: int = 1 << 16) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:size])
    here = source.tell()
    head = source.read(size)
    source.seek(here)
    return head


# FFmpeg probes up to 5 MB of a container before decoding: all of a short upload, read through
# Python's file callbacks (5.6 ms for a 200 KB WAV). WAV and FLAC state every stream parameter
# in their header, so their probe stops at 32 KB (1.4 ms); other formats keep the full probe.
SHORT_PROBE = {"probesize": "32768"}


def _probe_options(head: bytes) -> dict[str, str]:
    wav = head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE"
    return SHORT_PROBE if wav or head[:4] == b"fLaC" else {}


def _check_wav_length(data: bytes, total: int) -> None:
    """FFmpeg reads a cut-off WAV without complaint; compare its data chunk with what arrived
    (``data``: the file's first bytes, ``total``: its size)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk_id == b"data":
            have = total - pos - 8
            # 0 and 0xFFFFFFFF mark streamed WAVs whose writer could not know the length.
            if size not in (0, 0xFFFFFFFF) and have < size * TRUNCATION_TOLERANCE:
                raise InvalidAudio(
                    f"The WAV file is truncated: its header declares {size} bytes of audio but only {have} arrived.",
                    code="truncated_audio",
                )
            return
        pos += 8 + size + (size & 1)


def _declared_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
