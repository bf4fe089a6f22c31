"""BlobStore: uploaded audio and finished results, on any fsspec filesystem.

``file://`` (the default, under the data directory) or ``s3://bucket/prefix`` through s3fs,
with an endpoint URL for MinIO and other S3-protocol servers. fsspec is synchronous, so every
call runs in a thread; uploads are streamed in blocks (multipart on S3), never held whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fsspec

from serve_app.core.errors import ServiceError

BLOCK = 8 * 2**20  # S3 multipart part size; parts must be >= 5 MiB


class BlobNotFound(KeyError):
    pass


class StorageUnavailable(ServiceError):
    """The blob store cannot be written now (a full disk, S3 unreachable): 503, nothing kept."""

    status_code = 503
    code = "storage_unavailable"


class BlobStore:
    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        if self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol:
            self.fs.makedirs(self.root, exist_ok=True)

    @classmethod
    def from_settings(cls, settings) -> BlobStore:
        url = settings.blob_url or f"file://{settings.data_dir / 'blobs'}"
        options: dict = {}
        if url.startswith("s3://"):
            client_kwargs = {}
            if settings.s3_endpoint_url:
                client_kwargs["endpoint_url"] = settings.s3_endpoint_url
            if settings.s3_region:
                client_kwargs["region_name"] = settings.s3_region
            options = {"client_kwargs": client_kwargs, "default_block_size": BLOCK}
            if settings.s3_access_key:
                options["key"] = settings.s3_access_key
                options["secret"] = settings.secret("s3_secret_key")
        return cls(url, options)

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad blob key {key!r}")
        return f"{self.root}/{key}"

    async def put_stream(self, key: str, blocks: AsyncIterator[bytes]) -> int:
        """Write blocks as they arrive; returns the bytes written. Half-written blobs are removed;
        a store that cannot be written is StorageUnavailable (503), a failing source its own error."""
        path = self._path(key)
        await _written(self.fs.makedirs, path.rsplit("/", 1)[0], exist_ok=True)
        handle = await _written(self.fs.open, path, "wb", block_size=BLOCK)
        total = 0
        try:
            async for block in blocks:
                total += len(block)
                await _written(handle.write, block)
            await _written(handle.close)
        except BaseException:
            await asyncio.to_thread(_abort, handle)
            await self.delete(key)
            raise
        return total

    async def put_bytes(self, key: str, data: bytes) -> None:
        async def one():
            yield data

        await self.put_stream(key, one())

    async def get_bytes(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self.fs.cat_file, self._path(key))
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def open_read(self, key: str):
        """A seekable file object over the blob, read in blocks as it is used (blocking: call
        it, and read from it, in a thread). On S3 each block is a ranged GET."""
        try:
            return self.fs.open(self._path(key), "rb", block_size=BLOCK)
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def size(self, key: str) -> int:
        try:
            return int(await asyncio.to_thread(self.fs.size, self._path(key)))
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def copy(self, source: str, target: str) -> None:
        """A server-side copy on S3; the source must exist."""
        path = self._path(target)
        await asyncio.to_thread(self.fs.makedirs, path.rsplit("/", 1)[0], exist_ok=True)
        if not await self.exists(source):
            raise BlobNotFound(source)
        try:
            await asyncio.to_thread(self.fs.copy, self._path(source), path)
        except FileNotFoundError:
            raise BlobNotFound(source) from None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.fs.exists, self._path(key))

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(self.fs.rm_file, self._path(key))
        except FileNotFoundError:
            pass


async def _written(call, *args, **kwargs):
    """A write to the store, in a thread; the store failing is StorageUnavailable."""
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except OSError as exc:
        raise StorageUnavailable(f"The blob store cannot be written ({type(exc).__name__}); retry shortly.") from exc


def _abort(handle) -> None:
    # An S3 file aborts its multipart upload, so no parts linger; a local file just closes
    # (the caller deletes it).
    if hasattr(handle, "_abort_mpu"):
        handle.discard()
        handle.closed = True
    else:
        handle.close()
