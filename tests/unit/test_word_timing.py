"""Word edges moved out of silence into their own sound, on tones and silence (no model)."""

from __future__ import annotations

import numpy as np

from serve_app.audio.levels import loud_frames, snap_to_sound
from serve_app.audio.pieces import SAMPLE_RATE


def tone(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def test_word_edges_move_out_of_silence_into_sound():
    # silence 0-1 s, sound 1-1.5 s, silence 1.5-2 s, sound 2-3 s
    loud = loud_frames(np.concatenate([silence(1), tone(0.5), silence(0.5), tone(1)]))
    assert snap_to_sound(0.6, 1.4, loud) == (1.0, 1.4)  # started in the pause
    assert snap_to_sound(1.1, 1.9, loud) == (1.1, 1.5)  # ran on into the pause
    assert snap_to_sound(2.2, 2.6, loud) == (2.2, 2.6)  # all sound: unchanged
    assert snap_to_sound(0.1, 0.8, loud) == (0.1, 0.8)  # no sound at all: left alone


def test_quiet_recordings_have_a_silence_level_of_their_own():
    noisy = np.concatenate([silence(1), tone(1, level=0.02)]) + np.random.default_rng(0).normal(0, 0.0005, 32000)
    loud = loud_frames(noisy.astype(np.float32))
    assert not loud[:95].any() and loud[105:].all()
