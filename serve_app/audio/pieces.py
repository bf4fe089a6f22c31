"""The unit audio travels in once decoded: 16 kHz mono samples and the chunks of speech in them.

A ``PreparedAudio`` is a piece of a recording (at most 30 s of speech, with where it starts),
as the chunker hands it out and the Transcriber and the Diarizer take it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000
MAX_CHUNK_SECONDS = 30.0


@dataclass(frozen=True)
class Chunk:
    """A stretch of speech, at most 30 s, in seconds from the start of the audio."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class PreparedAudio:
    """What the Preprocessor hands a Transcriber: the samples and where the speech is."""

    samples: np.ndarray  # float32, mono, 16 kHz
    duration: float
    chunks: list[Chunk] = field(default_factory=list)
    # Other uploads the Preprocessor was still working on when this one was ready: a hint
    # to the Transcriber that more requests are about to arrive (a burst), not a promise.
    preparing: int = 0
    # A caller waits for this piece (a sync request): it decodes ahead of queued jobs' pieces.
    interactive: bool = False
    # Where ``samples`` start in the whole recording, in seconds (a piece of a long one).
    offset: float = 0.0

    def chunk_samples(self, chunk: Chunk) -> np.ndarray:
        return self.samples[int(chunk.start * SAMPLE_RATE) : int(chunk.end * SAMPLE_RATE)]
