"""The Preprocessor's work: bytes in, decoded 16 kHz samples and <=30 s speech chunks out."""

from __future__ import annotations

from dataclasses import dataclass

from serve_app.audio import SAMPLE_RATE, PreparedAudio, decode, merge_into_chunks, normalize
from serve_app.vad import VoiceActivityDetector, load_vad


@dataclass(frozen=True)
class PrepareOptions:
    normalize: bool = True
    vad: bool = True


class AudioPreprocessor:
    """Decode, normalize and cut one upload; heavy but stateless apart from the VAD model."""

    def __init__(self, vad_method: str = "silero", max_audio_seconds: float | None = None):
        self.vad: VoiceActivityDetector = load_vad(vad_method)
        self.max_audio_seconds = max_audio_seconds

    def prepare(self, data: bytes, options: PrepareOptions = PrepareOptions()) -> PreparedAudio:
        samples = decode(data, max_seconds=self.max_audio_seconds)
        if options.normalize:
            samples = normalize(samples)
        duration = samples.size / SAMPLE_RATE
        if options.vad:
            chunks = merge_into_chunks(self.vad.speech(samples))
        else:
            chunks = merge_into_chunks([(t, min(t + 30.0, duration)) for t in range(0, int(duration + 0.999), 30)])
        return PreparedAudio(samples=samples, duration=duration, chunks=chunks)
