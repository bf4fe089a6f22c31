"""Voice activity detection: where the speech is, as (start, end) seconds.

``silero`` runs the ONNX model that faster-whisper bundles (fast on CPU); ``pyannote`` runs the
segmentation weights WhisperX bundles (WhisperX's default; ~30x slower on CPU here).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from serve_app.audio.pieces import MAX_CHUNK_SECONDS, SAMPLE_RATE


class VoiceActivityDetector(Protocol):
    def speech(self, samples: np.ndarray) -> list[tuple[float, float]]: ...


class SileroVad:
    """faster-whisper's Silero v6 ONNX model with the settings of its batched pipeline."""

    def __init__(self, min_silence_ms: int = 160, speech_pad_ms: int = 400, threshold: float = 0.5):
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        self._detect = get_speech_timestamps
        self._options = VadOptions(
            threshold=threshold,
            max_speech_duration_s=MAX_CHUNK_SECONDS,
            min_silence_duration_ms=min_silence_ms,
            speech_pad_ms=speech_pad_ms,
        )

    def speech(self, samples: np.ndarray) -> list[tuple[float, float]]:
        stamps = self._detect(samples, self._options, sampling_rate=SAMPLE_RATE)
        return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


class PyannoteVad:
    """WhisperX's default detector, from the weights bundled in the whisperx package."""

    def __init__(self, onset: float = 0.5, offset: float = 0.363, device: str = "cpu"):
        import torch
        from whisperx.vads.pyannote import Binarize, Pyannote

        self._vad = Pyannote(torch.device(device), token=None, vad_onset=onset, vad_offset=offset)
        # WhisperX binarizes the frame scores with a min-cut at 30 s (its merge_chunks).
        self._binarize = Binarize(max_duration=MAX_CHUNK_SECONDS, onset=onset, offset=offset)

    def speech(self, samples: np.ndarray) -> list[tuple[float, float]]:
        waveform = self._vad.preprocess_audio(samples)
        scores = self._vad({"waveform": waveform, "sample_rate": SAMPLE_RATE})
        return [(float(s.start), float(s.end)) for s in self._binarize(scores).get_timeline()]


def load_vad(method: str, device: str = "cpu") -> VoiceActivityDetector:
    if method == "silero":
        return SileroVad()
    if method == "pyannote":
        return PyannoteVad(device=device)
    raise ValueError(f"unknown VAD method {method!r}; use 'silero' or 'pyannote'")
