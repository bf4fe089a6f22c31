"""Packing short chunks of different requests into shared 30 s windows, and handing words back.

Whisper's encoder pads every input to 30 s, so a 5 s request alone pays for 30 s; six of them
in one window pay once (bench corpus: 11x -> 17-18x real time, same WER).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from serve_app.asr.words import from_words
from serve_app.audio.pieces import SAMPLE_RATE, Chunk, PreparedAudio
from serve_app.core.transcript import FRAMES_PER_SECOND, DecodeOptions, Segment, Word

PACK_WINDOW = 29.5  # seconds of a shared window, gaps included
PACK_GAP = 0.5  # silence between two requests' chunks, so Whisper hears them apart
PACK_MAX_CHUNK = 20.0  # longer chunks leave too little room to share: decoded alone
MIN_REDECODE = 1.0  # a shared window's member shorter than this is not decoded again alone
LEFT_OUT_SHARE = 1 / 3  # fewer words than this share of its part of the window's: decoded again


@dataclass
class ChunkJob:
    """One speech chunk of one request in a batch, and the segment decoded for it."""

    request: int
    chunk: Chunk
    samples: np.ndarray
    options: DecodeOptions
    segment: Segment | None = None


def pack(group: list[ChunkJob]) -> list[list[ChunkJob]]:
    """Decode units: short chunks (of any requests) share a 30 s window, the rest go alone.

    Every window saved counts (tiny.en, one thread: about 0.3 s of encoder and decoder per
    window, next to 1.7 s for all the tokens of the 24 short bench files), so chunks go
    first-fit, longest first: short tails of long requests fill the gaps arrival order leaves.
    """
    units: list[list[ChunkJob]] = [[job] for job in group if job.chunk.duration > PACK_MAX_CHUNK]
    windows: list[list[ChunkJob]] = []
    lengths: list[float] = []
    sounds: list[set[bytes]] = []
    short = [job for job in group if job.chunk.duration <= PACK_MAX_CHUNK]
    for job in sorted(short, key=lambda j: -j.chunk.duration):
        sound = hashlib.blake2b(job.samples.tobytes(), digest_size=16).digest()
        for n, length in enumerate(lengths):
            # The same audio twice in a window (one file sent twice at once) confuses the word
            # alignment: the words of the copies are handed back to the wrong copy.
            if length + PACK_GAP + job.chunk.duration <= PACK_WINDOW and sound not in sounds[n]:
                windows[n].append(job)
                lengths[n] += PACK_GAP + job.chunk.duration
                sounds[n].add(sound)
                break
        else:
            windows.append([job])
            lengths.append(job.chunk.duration)
            sounds.append({sound})
    return units + windows


def lay_out(unit: list[ChunkJob]) -> tuple[np.ndarray, Chunk, list[float] | None]:
    """A unit's audio as one window: its samples, its span, and where each member starts in it
    (None for a lone chunk, which keeps its own times)."""
    if len(unit) == 1:
        return unit[0].samples, unit[0].chunk, None
    gap = np.zeros(int(PACK_GAP * SAMPLE_RATE), np.float32)
    parts, starts, at = [], [], 0
    for job in unit:
        if parts:
            parts.append(gap)
            at += gap.size
        starts.append(at / SAMPLE_RATE)
        parts.append(job.samples)
        at += job.samples.size
    return np.concatenate(parts), Chunk(0.0, round(at / SAMPLE_RATE, 3)), starts


def unpack(window: Segment, members: list[tuple[float, Chunk]], tokenizer) -> list[Segment | None]:
    """Hand the words of a shared window back to the chunks it was made of.

    ``members`` are (offset in the window, original chunk). A word goes to the chunk its middle
    falls in (or the nearest one, for a word placed in a gap); its times move back to the
    chunk's own audio. A chunk that got no words gets None.
    """
    spans = [(offset, offset + chunk.duration) for offset, chunk in members]
    mine: list[list[Word]] = [[] for _ in members]
    for word in window.words or []:
        middle = (word.start + word.end) / 2
        k = min(range(len(spans)), key=lambda k: max(spans[k][0] - middle, middle - spans[k][1], 0.0))
        shift = members[k][1].start - spans[k][0]
        mine[k].append(replace(word, start=round(word.start + shift, 3), end=round(word.end + shift, 3)))
    return [
        from_words(
            window,
            words,
            tokenizer,
            start=max(chunk.start, words[0].start),
            end=min(chunk.end, words[-1].end),
            seek=round(chunk.start * FRAMES_PER_SECOND),
        )
        if "".join(w.word for w in words).strip()
        else None
        for (_, chunk), words in zip(members, mine)
    ]


def left_out(members: list[ChunkJob], parts: list[Segment | None]) -> list[ChunkJob]:
    """The members of a shared window Whisper seems to have left out, to decode again alone.

    Decoding a shared window, Whisper now and then stops early or its word alignment hands one
    member's words to its neighbour (seen: a 5 s request of 16 words given none, among 50
    decoded at once). A member whose words are fewer than a third of its share of the window's
    words (by duration) is decoded again alone: that costs a window, but an empty or half
    transcript is wrong. A member under a second (a cough, a click the VAD kept) is left as it is.
    """
    counts = [len(part.words or []) if part is not None else 0 for part in parts]
    speech = sum(job.chunk.duration for job in members)
    total = sum(counts)
    return [
        job
        for job, count in zip(members, counts)
        if job.chunk.duration >= MIN_REDECODE and count < LEFT_OUT_SHARE * total * job.chunk.duration / speech
    ]


def window_load(audio: PreparedAudio) -> float:
    """How many 30 s windows a request's chunks fill, packed: a short chunk takes its share,
    a chunk too long to share (> PACK_MAX_CHUNK) a whole window."""
    if not audio.chunks:
        return 1.0
    return sum(1.0 if c.duration > PACK_MAX_CHUNK else (c.duration + PACK_GAP) / PACK_WINDOW for c in audio.chunks)
