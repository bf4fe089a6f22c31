"""BlobStore on the local filesystem and on a real S3-protocol server (moto), same contract."""

from __future__ import annotations

import os

import pytest

from serve_app.core.settings import Settings
from serve_app.jobs.blobs import BlobNotFound, BlobStore
from tests.conftest import BOTH_BLOB_STORES


async def blocks(n: int, size: int = 1 << 20):
    for i in range(n):
        yield bytes([i % 251]) * size


@BOTH_BLOB_STORES
async def test_put_get_delete(blob_settings):
    store = BlobStore.from_settings(Settings(**blob_settings))
    await store.put_bytes("audio/x/a.wav", b"RIFF-data")
    assert await store.get_bytes("audio/x/a.wav") == b"RIFF-data"
    assert await store.exists("audio/x/a.wav")
    await store.delete("audio/x/a.wav")
    await store.delete("audio/x/a.wav")  # twice is fine
    with pytest.raises(BlobNotFound):
        await store.get_bytes("audio/x/a.wav")


@BOTH_BLOB_STORES
async def test_large_upload_is_streamed_in_parts(blob_settings):
    store = BlobStore.from_settings(Settings(**blob_settings))
    size = await store.put_stream("audio/big/file.bin", blocks(20))  # 20 MiB: 3 S3 parts
    assert size == 20 << 20
    data = await store.get_bytes("audio/big/file.bin")
    assert len(data) == size and data[-1] == 19 and data[0] == 0


@BOTH_BLOB_STORES
async def test_failed_upload_leaves_nothing(blob_settings):
    store = BlobStore.from_settings(Settings(**blob_settings))

    async def broken():
        yield b"x" * (9 << 20)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put_stream("audio/broken/file.bin", broken())
    assert not await store.exists("audio/broken/file.bin")


async def test_keys_cannot_escape_the_root(tmp_path):
    store = BlobStore(f"file://{tmp_path}")
    with pytest.raises(ValueError):
        await store.put_bytes("../etc/passwd", b"")
    assert os.listdir(tmp_path) == []
