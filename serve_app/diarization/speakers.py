"""Who spoke when, as data: embedded windows, speaker turns, and a transcript labelled with them.

``label`` gives every word the speaker of the turn it falls in and splits segments where the
speaker changes. How the turns are found: serve_app/diarization/clustering.py; where the
embeddings come from: serve_app/diarization/encoder.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from serve_app.core.transcript import Segment, Transcript, Word


@dataclass
class Windows:
    """Embedded windows of one recording (or piece): times in the recording's seconds."""

    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 256), np.float32))
    speech: list[tuple[float, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.starts)

    @staticmethod
    def concat(parts: list[Windows]) -> Windows:
        parts = [p for p in parts if p is not None]
        if not parts:
            return Windows()
        return Windows(
            np.concatenate([p.starts for p in parts]),
            np.concatenate([p.ends for p in parts]),
            np.concatenate([p.vectors for p in parts]),
            [s for p in parts for s in p.speech],
        )


@dataclass
class SpeakerTurn:
    start: float
    end: float
    speaker: str


@dataclass
class Diarization:
    turns: list[SpeakerTurn]
    centroids: dict[str, np.ndarray]  # each speaker's mean embedding (for known speakers)

    @property
    def speakers(self) -> list[str]:
        return sorted(self.centroids)

    def renamed(self, names: dict[str, str]) -> Diarization:
        return Diarization(
            [replace(t, speaker=names.get(t.speaker, t.speaker)) for t in self.turns],
            {names.get(k, k): v for k, v in self.centroids.items()},
        )


def speaker_at(turns: list[SpeakerTurn], start: float, end: float) -> str | None:
    """The speaker who talks most over [start, end], or the nearest turn's speaker."""
    if not turns:
        return None
    best, overlap = None, 0.0
    for turn in turns:
        o = min(end, turn.end) - max(start, turn.start)
        if o > overlap:
            best, overlap = turn.speaker, o
    if best is not None:
        return best
    middle = (start + end) / 2
    return min(turns, key=lambda t: min(abs(t.start - middle), abs(t.end - middle))).speaker


def label(transcript: Transcript, result: Diarization, names: dict[str, str] | None = None) -> Transcript:
    """Every word and segment with its speaker; segments split where the speaker changes."""
    turns = [replace(t, speaker=(names or {}).get(t.speaker, t.speaker)) for t in result.turns]
    segments: list[Segment] = []
    for segment in transcript.segments:
        words = segment.words or []
        if not words:
            segments.append(replace(segment, speaker=speaker_at(turns, segment.start, segment.end)))
            continue
        tagged = [replace(w, speaker=speaker_at(turns, w.start, w.end)) for w in words]
        run: list[Word] = []
        for word in tagged:
            if run and word.speaker != run[-1].speaker:
                segments.append(_piece(segment, run))
                run = []
            run.append(word)
        segments.append(
            _piece(segment, run) if len(run) < len(tagged) else replace(segment, words=run, speaker=run[0].speaker)
        )
    for n, segment in enumerate(segments):
        segment.id = n
    return replace(transcript, segments=segments, speakers=speaking_time(turns))


def _piece(segment: Segment, words: list[Word]) -> Segment:
    start, end, speaker = words[0].start, words[-1].end, words[0].speaker
    return replace(segment, start=start, end=end, text=_text(words), words=words, tokens=[], speaker=speaker)


def _text(words: list[Word]) -> str:
    """Words as one text: Whisper's carry their leading space, an alignment model's do not."""
    if any(w.word[:1].isspace() for w in words):
        return "".join(w.word for w in words).strip()
    return " ".join(w.word.strip() for w in words)


def speaking_time(turns: list[SpeakerTurn]) -> list[dict]:
    total: dict[str, float] = {}
    for turn in turns:
        total[turn.speaker] = total.get(turn.speaker, 0.0) + turn.end - turn.start
    return [{"speaker": s, "seconds": round(t, 2)} for s, t in sorted(total.items())]
