"""The one reader of uploaded audio: size limit, empty file and file name, for every entry point.

An HTTP upload is read block by block (an async job streams it to the BlobStore without holding
it whole); bytes from a Python handle go through the same checks.
"""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator
from typing import Protocol

from serve_app.core.errors import InvalidAudio, InvalidParameter, PayloadTooLarge

READ_BLOCK = 1 << 20
MAX_FILENAME_CHARS = 255


class UploadSource(Protocol):
    """What FastAPI's UploadFile offers (and all this module needs of it)."""

    filename: str | None
    size: int | None

    async def read(self, size: int = -1) -> bytes: ...


def clean_filename(name: str | None) -> str:
    """A file name safe to store and show: no control characters (NUL included), bounded length."""
    kept = "".join(ch for ch in (name or "") if unicodedata.category(ch)[0] != "C").strip()
    return kept[-MAX_FILENAME_CHARS:] or "audio"


class AudioUpload:
    """Uploaded audio, checked as it is read: never over ``limit_bytes``, never empty."""

    def __init__(self, source: UploadSource | bytes, limit_bytes: int, filename: str | None = None):
        if isinstance(source, (bytearray, memoryview)):
            source = bytes(source)
        elif not isinstance(source, bytes) and not hasattr(source, "read"):
            raise InvalidParameter(f"audio must be bytes, not {type(source).__name__}.", param="audio")
        self._source = source
        self.limit_bytes = limit_bytes
        raw_name = filename if isinstance(source, bytes) else (filename or source.filename)
        self.filename = clean_filename(raw_name)
        size = len(source) if isinstance(source, bytes) else source.size
        if size is not None:
            self._check_size(size)

    def _check_size(self, size: int) -> None:
        if size > self.limit_bytes:
            raise PayloadTooLarge(f"The file is {size / 2**20:.1f} MiB; the limit is {self.limit_bytes / 2**20:g} MiB.")
        if size == 0:
            raise InvalidAudio(f"The uploaded file '{self.filename}' is empty.", code="empty_file")

    async def blocks(self) -> AsyncIterator[bytes]:
        """The upload in blocks of at most 1 MiB; raises as soon as it goes over the limit."""
        total = 0
        if isinstance(self._source, bytes):
            view = memoryview(self._source)
            chunks = (bytes(view[i : i + READ_BLOCK]) for i in range(0, len(view), READ_BLOCK))
            for block in chunks:
                total += len(block)
                yield block
        else:
            while block := await self._source.read(READ_BLOCK):
                total += len(block)
                if total > self.limit_bytes:
                    self._check_size(total)
                yield block
        self._check_size(total)

    async def read(self) -> bytes:
        if isinstance(self._source, bytes):
            return self._source  # already checked whole
        return b"".join([block async for block in self.blocks()])
