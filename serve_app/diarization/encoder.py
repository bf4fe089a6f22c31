"""Speaker embeddings, offline: where someone speaks in a piece (Silero VAD, tighter settings than
the transcription's) and one d-vector per 1.6 s window sliding over it, from resemblyzer's
pretrained encoder (its weights ship in the wheel: no token, no network), batched through its
LSTM. ``run`` turns a recording's windows into who spoke when (clustering.py).
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from serve_app.audio.decode import decode
from serve_app.audio.pieces import SAMPLE_RATE, PreparedAudio
from serve_app.core.transcript import DiarizeOptions
from serve_app.diarization.clustering import diarize, match_known
from serve_app.diarization.speakers import Diarization, Windows

WINDOW = 1.6  # seconds of audio per embedding (the encoder's partial utterance)
STEP = 0.4  # seconds between windows
MIN_SPEECH = 0.3  # a stretch of speech shorter than this gets no window of its own
MAX_REFERENCE_SECONDS = 12.0


class SpeakerEncoder:
    """resemblyzer's d-vector encoder with a speech detector, thread-safe."""

    def __init__(self, device: str = "cpu") -> None:
        import torch
        from faster_whisper.vad import VadOptions, get_speech_timestamps
        from resemblyzer import VoiceEncoder

        self._torch = torch
        self._encoder = VoiceEncoder(device=device, verbose=False).eval()
        self._detect = get_speech_timestamps
        self._vad = VadOptions(threshold=0.5, min_silence_duration_ms=100, speech_pad_ms=30)
        self._lock = threading.Lock()

    def speech(self, samples: np.ndarray) -> list[tuple[float, float]]:
        stamps = self._detect(samples, self._vad, sampling_rate=SAMPLE_RATE)
        return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]

    def embed(self, samples: np.ndarray, offset: float = 0.0) -> Windows:
        """Windows over the speech in ``samples`` (which start ``offset`` s into the recording)."""
        return self.embed_many([(samples, offset)])[0]

    def embed_many(self, pieces: list[tuple[np.ndarray, float]]) -> list[Windows]:
        """``embed`` of several pieces (of one or several recordings), in shared encoder batches."""
        plans = []
        clips: list[np.ndarray] = []
        for samples, offset in pieces:
            speech = [(s, e) for s, e in self.speech(samples) if e - s >= MIN_SPEECH]
            spans = [w for s, e in speech for w in _windows(s, e)]
            clips += [samples[int(ws * SAMPLE_RATE) : int(we * SAMPLE_RATE)] for ws, we in spans]
            plans.append((speech, spans, offset))
        vectors = self.vectors(clips) if clips else np.zeros((0, 256), np.float32)
        out, used = [], 0
        for speech, spans, offset in plans:
            mine = vectors[used : used + len(spans)]
            used += len(spans)
            out.append(
                Windows(
                    np.array([s for s, _ in spans], np.float32).reshape(-1) + offset,
                    np.array([e for _, e in spans], np.float32).reshape(-1) + offset,
                    mine.reshape(-1, 256),
                    [(round(s + offset, 3), round(e + offset, 3)) for s, e in speech],
                )
            )
        return out

    def vectors(self, clips: list[np.ndarray]) -> np.ndarray:
        """One L2-normed embedding per clip (clips shorter than a window are zero-padded)."""
        from resemblyzer import audio

        frames = int(WINDOW * 100)
        mels = []
        for clip in clips:
            clip = _loudness(clip)
            # A short clip is repeated to fill the window (silence padding would shift its
            # embedding toward the encoder's picture of silence).
            need = int(WINDOW * SAMPLE_RATE) + 400
            mel = audio.wav_to_mel_spectrogram(np.tile(clip, int(np.ceil(need / max(1, len(clip)))))[:need])
            mels.append(mel[:frames])
        out = []
        with self._lock, self._torch.inference_mode():
            for i in range(0, len(mels), 256):
                batch = self._torch.from_numpy(np.stack(mels[i : i + 256])).to(self._encoder.device)
                out.append(self._encoder(batch).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def voice(self, samples: np.ndarray) -> np.ndarray:
        """One embedding of a whole reference clip (a known speaker's sample)."""
        speech = [(s, e) for s, e in self.speech(samples) if e - s >= MIN_SPEECH] or [(0.0, len(samples) / SAMPLE_RATE)]
        clips = [samples[int(ws * SAMPLE_RATE) : int(we * SAMPLE_RATE)] for s, e in speech for ws, we in _windows(s, e)]
        mean = self.vectors(clips).mean(axis=0)
        return mean / (np.linalg.norm(mean) or 1.0)


def _windows(start: float, end: float) -> list[tuple[float, float]]:
    """1.6 s windows every 0.4 s over [start, end]; a shorter stretch is one window."""
    if end - start <= WINDOW:
        return [(start, end)]
    count = int(np.ceil((end - start - WINDOW) / STEP)) + 1
    first = [start + i * STEP for i in range(count)]
    return [(min(s, end - WINDOW), min(s, end - WINDOW) + WINDOW) for s in first]


def _loudness(clip: np.ndarray) -> np.ndarray:
    """Resemblyzer's volume normalization (to -30 dBFS), so loudness is not a speaker trait."""
    rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))) if len(clip) else 0.0
    if rms < 1e-5:
        return clip
    return (clip * (10 ** (-30 / 20) / rms)).astype(np.float32)


def run(encoder: SpeakerEncoder, windows: Windows, options: DiarizeOptions) -> Diarization:
    """Who spoke when in a recording's windows; known speakers' samples name those they match."""
    result = diarize(windows, options.min_speakers, options.max_speakers)
    if not options.known:
        return result
    known = {name: encoder.voice(decode(data, max_seconds=MAX_REFERENCE_SECONDS)) for name, data in options.known}
    return result.renamed(match_known(result, known))


class LocalDiarizer:
    """serve_app.transcription.pipeline.PieceDiarizer in this process (LocalBackend), work in threads."""

    def __init__(self, device: str = "cpu") -> None:
        self.encoder = SpeakerEncoder(device)

    async def embed(self, piece: PreparedAudio) -> Windows:
        return await asyncio.to_thread(self.encoder.embed, piece.samples, piece.offset)

    async def diarize(self, windows: Windows, options: DiarizeOptions) -> Diarization:
        return await asyncio.to_thread(run, self.encoder, windows, options)
