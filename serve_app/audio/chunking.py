"""Speech chunks from audio that is still decoding: VAD over a sliding window, <= 30 s pieces out.

The ``SpeechChunker`` takes decoded blocks as they come and hands out pieces (one <= 30 s
chunk of speech each, with its own samples and its place in the recording) as soon as they
can no longer change: a piece is final once speech appears that could not join it (WhisperX's
``merge_chunks`` rule: a chunk grows while the next region still ends within 30 s of its
start). It holds the undecided tail only (a VAD window of about a minute and the chunk being
built), so its memory does not grow with the recording's length. Short audio (under a window)
gets exactly one VAD pass over all of it at the end, as a whole-file decode would.
"""

from __future__ import annotations

import numpy as np

from serve_app.audio.levels import level_regions, normalize
from serve_app.audio.pieces import MAX_CHUNK_SECONDS, SAMPLE_RATE, Chunk, PreparedAudio
from serve_app.audio.vad import VoiceActivityDetector

STEP_SECONDS = 30.0  # new audio between two VAD passes
SETTLE_SECONDS = 2.0  # speech this close to the end of what is decoded may still grow
CONTEXT_SECONDS = 0.5  # audio before the undecided part the detector hears again
# The most decoded audio a chunker holds: the undecided window and the chunk being built.
HELD_SECONDS = STEP_SECONDS + MAX_CHUNK_SECONDS


def merge_regions(speech: list[tuple[float, float]], max_seconds: float = MAX_CHUNK_SECONDS) -> list[Chunk]:
    """Join neighbouring speech regions into chunks of at most ``max_seconds``.

    The same rule as WhisperX's ``merge_chunks``: keep extending the current chunk while the
    next region still ends within ``max_seconds`` of its start.
    """
    chunks: list[Chunk] = []
    start = end = None
    for seg_start, seg_end in speech:
        if start is None:
            start, end = seg_start, seg_end
            continue
        if seg_end - start > max_seconds and end > start:
            chunks.append(Chunk(round(start, 3), round(end, 3)))
            start = seg_start
        end = seg_end
    if start is not None and end > start:
        chunks.append(Chunk(round(start, 3), round(end, 3)))
    return chunks


class SpeechChunker:
    """Decoded blocks in (``feed``), final pieces out; ``finish`` hands out the rest."""

    def __init__(self, vad: VoiceActivityDetector | None, *, normalize: bool = True):
        self.vad = vad  # None: fixed 30 s pieces, no detection
        self.normalize = normalize
        self._blocks: list[np.ndarray] = []
        self._held = 0  # samples in _blocks
        self._base = 0  # the recording's sample index of _blocks' first sample
        self._settled = 0  # sample index up to which speech is known (regions before it are final)
        self._regions: list[tuple[float, float]] = []  # settled speech (seconds) not yet in a piece
        self._passed = 0  # where the last VAD pass ended
        self._covered = 0.0  # the end of the last region taken (seconds): speech before it is taken

    @property
    def end(self) -> int:
        return self._base + self._held

    @property
    def held_seconds(self) -> float:
        return self._held / SAMPLE_RATE

    def feed(self, block: np.ndarray) -> list[PreparedAudio]:
        if block.size:
            self._blocks.append(block)
            self._held += block.size
        if self.vad is None:
            return self._fixed(final=False)
        # A region still growing at the window's end holds the line back: wait for more
        # audio before looking again, rather than looking at every block.
        if (
            self.end - self._settled >= (STEP_SECONDS + SETTLE_SECONDS) * SAMPLE_RATE
            and self.end - self._passed >= SETTLE_SECONDS * SAMPLE_RATE
        ):
            return self._pass(final=False)
        return []

    def finish(self) -> list[PreparedAudio]:
        return self._fixed(final=True) if self.vad is None else self._pass(final=True)

    # -- the work ------------------------------------------------------------------------------
    def _samples(self) -> np.ndarray:
        if len(self._blocks) != 1:
            self._blocks = [np.concatenate(self._blocks) if self._blocks else np.zeros(0, np.float32)]
        return self._blocks[0]

    def _pass(self, *, final: bool) -> list[PreparedAudio]:
        samples = self._samples()
        self._passed = self.end
        lo = max(self._base, self._settled - int(CONTEXT_SECONDS * SAMPLE_RATE))
        window = samples[lo - self._base :]
        if self.normalize:
            window = normalize(window)
        found = (
            [(lo / SAMPLE_RATE + a, lo / SAMPLE_RATE + b) for a, b in self.vad.speech(window)] if window.size else []
        )
        end_s = self.end / SAMPLE_RATE
        settled_s = self._settled / SAMPLE_RATE
        line = end_s if final else end_s - SETTLE_SECONDS
        new_settled = line
        for start, stop in found:
            if stop <= settled_s:
                continue  # heard again for context only: already settled
            if not final and stop > line:
                new_settled = min(new_settled, max(start, settled_s))  # may still grow: next pass
                break
            start = max(start, self._covered, settled_s)
            if stop > start:
                self._regions.append((start, stop))
                self._covered = stop
        self._settled = max(self._settled, int(new_settled * SAMPLE_RATE))
        return self._emit(final)

    def _fixed(self, *, final: bool) -> list[PreparedAudio]:
        step = int(MAX_CHUNK_SECONDS * SAMPLE_RATE)
        while self.end - self._settled >= step or (final and self.end > self._settled):
            stop = min(self._settled + step, self.end)
            self._regions.append((self._settled / SAMPLE_RATE, stop / SAMPLE_RATE))
            self._settled = stop
        return self._emit(final)

    def _emit(self, final: bool) -> list[PreparedAudio]:
        chunks = merge_regions(self._regions)
        ready = chunks if final else chunks[:-1]  # the last may still grow
        pieces = [self._piece(chunk, self._within(chunk)) for chunk in ready]
        if ready:
            # What is left starts the chunk still open (its first region, as merge_regions rounds it).
            rest = chunks[len(ready)].start if len(chunks) > len(ready) else None
            self._regions = [r for r in self._regions if rest is not None and round(r[0], 3) >= rest]
        keep = min([int(self._regions[0][0] * SAMPLE_RATE)] if self._regions else [], default=self._settled)
        self._drop_before(min(keep, self._settled - int(CONTEXT_SECONDS * SAMPLE_RATE)))
        return pieces

    def _within(self, chunk: Chunk) -> list[tuple[float, float]]:
        """The speech regions a chunk was made of, in seconds into the chunk."""
        return [
            (max(start, chunk.start) - chunk.start, min(end, chunk.end) - chunk.start)
            for start, end in self._regions
            if end > chunk.start and start < chunk.end
        ]

    def _piece(self, chunk: Chunk, regions: list[tuple[float, float]]) -> PreparedAudio:
        samples = self._samples()
        a = max(0, int(chunk.start * SAMPLE_RATE) - self._base)
        b = max(a, int(chunk.end * SAMPLE_RATE) - self._base)
        piece = samples[a:b].copy()
        if self.normalize:
            piece = level_regions(piece, regions)  # a soft talker's regions raised on their own
        duration = round(piece.size / SAMPLE_RATE, 3)
        return PreparedAudio(samples=piece, duration=duration, chunks=[Chunk(0.0, duration)], offset=chunk.start)

    def _drop_before(self, index: int) -> None:
        cut = index - self._base
        if cut <= 0:
            return
        samples = self._samples()
        self._blocks = [samples[cut:].copy()]
        self._held = self._blocks[0].size
        self._base = index
