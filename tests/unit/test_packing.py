"""Packing short chunks of different requests into shared 30 s windows: how they are laid out,
and which members are decoded again alone. No model here (tests/app/test_packing.py decodes)."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.asr.packing import PACK_GAP, PACK_WINDOW, ChunkJob, left_out, pack, window_load
from serve_app.audio.pieces import Chunk
from serve_app.core.transcript import DecodeOptions, Segment, Word


def test_window_load_counts_short_chunks_as_shares():
    class Audio:
        chunks = [Chunk(0, 4.0), Chunk(5, 35.0)]

    assert window_load(Audio()) == pytest.approx((4.0 + PACK_GAP) / PACK_WINDOW + 1.0)


def test_short_chunks_pack_longest_first_into_the_fewest_windows():
    # In arrival order the two 8 s chunks share a window and each 20 s chunk needs its own
    # (three windows); longest first, each 20 s chunk gets an 8 s one (two windows).
    options = DecodeOptions(language="en")
    jobs = [ChunkJob(i, Chunk(0, d), _sound(d, i), options) for i, d in enumerate([8.0, 8.0, 20.0, 20.0])]
    windows = pack(jobs)
    assert sorted(sorted(j.chunk.duration for j in w) for w in windows) == [[8.0, 20.0], [8.0, 20.0]]


def _sound(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(seconds * 16000)).astype(np.float32)


def test_the_same_audio_never_shares_a_window():
    # One file sent four times at once: in one window the word alignment handed the copies'
    # words to the wrong copy (a copy got none). Copies go to windows of their own; other
    # audio still fills them.
    options = DecodeOptions(language="en")
    same = _sound(4.0, 0)
    jobs = [ChunkJob(i, Chunk(0, 4.0), same, options) for i in range(4)]
    jobs += [ChunkJob(4 + i, Chunk(0, 4.0), _sound(4.0, 1 + i), options) for i in range(4)]
    windows = pack(jobs)
    assert len(windows) == 4
    for window in windows:
        assert sum(job.samples is same for job in window) == 1


def _part(words: int) -> Segment | None:
    if not words:
        return None
    return Segment(
        0, 0.0, 4.0, "w " * words, -0.1, words=[Word(" w", 0.1 * i, 0.1 * i + 0.05, 1) for i in range(words)]
    )


def test_a_member_with_far_fewer_words_than_its_share_is_decoded_again():
    options = DecodeOptions(language="en")
    members = [ChunkJob(i, Chunk(0, d), None, options) for i, d in enumerate([4.0, 4.0, 4.0, 0.6])]
    assert left_out(members, [_part(12), _part(11), _part(13), _part(0)]) == []  # 0.6 s: a click
    assert left_out(members, [_part(14), _part(0), _part(13), _part(1)]) == [members[1]]
    assert left_out(members, [_part(20), _part(3), _part(14), _part(1)]) == [members[1]]
    assert left_out(members, [_part(12), _part(8), _part(13), _part(1)]) == []  # a slower talker
