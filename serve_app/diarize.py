"""Who spoke when, from weights that ship inside PyPI packages (no token, no network).

Three steps, the first per piece of a recording as it is decoded (so a long recording is never
held whole), the others once at the end over what the first gathered:

1. ``SpeakerEncoder.embed``: where in the piece someone speaks (Silero VAD, tighter settings
   than the transcription's), and one speaker embedding per 1.6 s window sliding over it
   (resemblyzer's pretrained d-vector encoder, batched through its LSTM);
2. ``cluster``: the windows grouped into speakers (agglomerative, cosine distance, average
   linkage); the number of speakers is where the merge distance jumps past a threshold,
   bounded by ``min_speakers``/``max_speakers``;
3. ``turns``: each 10 ms of speech gets the speaker whose windows cover it most, runs of one
   speaker become turns; ``label`` gives every word the speaker of the turn it falls in and
   splits segments where the speaker changes.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field, replace

import numpy as np

from serve_app.audio import SAMPLE_RATE, PreparedAudio, decode
from serve_app.transcript import DiarizeOptions, Segment, Transcript, Word

WINDOW = 1.6  # seconds of audio per embedding (the encoder's partial utterance)
STEP = 0.4  # seconds between windows
MIN_SPEECH = 0.3  # a stretch of speech shorter than this gets no window of its own
FRAME = 0.01
MERGE_GAP = 0.5  # one speaker's turns closer than this are one turn
DISTANCE_THRESHOLD = 0.35  # cosine distance above which two groups are different people
MAX_SPEAKERS = 20
# A cluster of fewer windows than this (a cough, a laugh, a word in an odd voice) is not a
# speaker of its own: its windows join the nearest real one. Measured on the conversation set:
# without it 6/10 two-speaker counts were right, every miss a one-window cluster.
MIN_CLUSTER_WINDOWS = 3
MAX_WINDOWS = 4000  # clustering is quadratic: beyond this, runs of windows are clustered by their means


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


def cluster(
    vectors: np.ndarray,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    threshold: float = DISTANCE_THRESHOLD,
) -> np.ndarray:
    """A speaker index per window (0 = the one heard first)."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, int)
    low = max(1, min(min_speakers or 1, n))
    high = max(low, min(max_speakers or MAX_SPEAKERS, n))
    if n == 1:
        return np.zeros(1, int)
    if n > MAX_WINDOWS:
        # Hours of speech: cluster the means of runs of neighbouring windows, then give each
        # window the speaker whose centre it is closest to (memory stays ~MAX_WINDOWS^2).
        k = int(np.ceil(n / MAX_WINDOWS))
        groups = np.stack([vectors[i : i + k].mean(axis=0) for i in range(0, n, k)])
        groups /= np.linalg.norm(groups, axis=1, keepdims=True) + 1e-9
        grouped = cluster(groups, min_speakers, max_speakers, threshold)
        centres = np.stack([groups[grouped == c].mean(axis=0) for c in range(int(grouped.max()) + 1)])
        labels = (vectors @ centres.T).argmax(axis=1)
    else:
        from scipy.cluster.hierarchy import fcluster, linkage

        tree = linkage(vectors.astype(np.float64), method="average", metric="cosine")
        # k clusters remain after n - k merges: the k whose next merge crosses the threshold.
        count = int(np.sum(tree[:, 2] > threshold)) + 1
        count = min(max(count, low), high)
        labels = fcluster(tree, count, criterion="maxclust") - 1
    labels = _absorb_small(vectors, labels, low)
    # Renumber by first appearance, so SPEAKER_00 speaks first.
    order = {}
    for label in labels:
        order.setdefault(int(label), len(order))
    return np.array([order[int(label)] for label in labels])


def _absorb_small(vectors: np.ndarray, labels: np.ndarray, low: int) -> np.ndarray:
    """Give the windows of clusters too small to be a speaker to the nearest large cluster,
    keeping at least `low` clusters (the largest)."""
    sizes = np.bincount(labels)
    smallest = min(MIN_CLUSTER_WINDOWS, max(1, len(labels) // 10))
    by_size = np.argsort(-sizes, kind="stable")
    kept = [int(c) for i, c in enumerate(by_size) if sizes[c] >= smallest or i < low]
    kept = [c for c in kept if sizes[c] > 0]
    if len(kept) == int(np.count_nonzero(sizes)):
        return labels
    centres = np.stack([vectors[labels == c].mean(axis=0) for c in kept])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True) + 1e-9
    nearest = np.array(kept)[(vectors @ centres.T).argmax(axis=1)]
    return np.where(np.isin(labels, kept), labels, nearest)


def diarize(
    windows: Windows,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    threshold: float = DISTANCE_THRESHOLD,
) -> Diarization:
    """Speaker turns of a recording from its embedded windows."""
    if not len(windows):
        return Diarization([], {})
    labels = cluster(windows.vectors, min_speakers, max_speakers, threshold)
    count = int(labels.max()) + 1
    end = float(windows.ends.max())
    frames = int(np.ceil(end / FRAME)) + 1
    votes = np.zeros((frames, count), np.float32)
    for s, e, label in zip(windows.starts, windows.ends, labels, strict=True):
        a, b = int(s / FRAME), int(np.ceil(e / FRAME))
        # A window's centre is where its embedding is surest.
        weights = 1.0 - 0.5 * np.abs(np.linspace(-1, 1, b - a))
        votes[a:b, label] += weights
    turns: list[SpeakerTurn] = []
    for s, e in windows.speech:
        a, b = int(s / FRAME), max(int(s / FRAME) + 1, int(np.ceil(e / FRAME)))
        chosen = votes[a:b].argmax(axis=1)
        covered = votes[a:b].sum(axis=1) > 0
        if not covered.any():
            continue
        chosen = _fill(chosen, covered)
        run_start = a
        for i in range(1, len(chosen) + 1):
            if i == len(chosen) or chosen[i] != chosen[i - 1]:
                _append(
                    turns, SpeakerTurn(round(run_start * FRAME, 2), round((a + i) * FRAME, 2), _name(chosen[i - 1]))
                )
                run_start = a + i
    centroids = {}
    for label in range(count):
        mean = windows.vectors[labels == label].mean(axis=0)
        centroids[_name(label)] = mean / (np.linalg.norm(mean) or 1.0)
    # Names in order of first words, with no gaps where a cluster won no frame.
    names: dict[str, str] = {}
    for turn in turns:
        names.setdefault(turn.speaker, _name(len(names)))
    return Diarization(turns, {k: v for k, v in centroids.items() if k in names}).renamed(names)


def _fill(chosen: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Frames no window covers take the nearest covered frame's speaker."""
    if covered.all():
        return chosen
    index = np.flatnonzero(covered)
    nearest = index[np.abs(np.arange(len(chosen))[:, None] - index[None, :]).argmin(axis=1)]
    return chosen[nearest]


def _append(turns: list[SpeakerTurn], turn: SpeakerTurn) -> None:
    if turns and turns[-1].speaker == turn.speaker and turn.start - turns[-1].end < MERGE_GAP:
        turns[-1].end = turn.end
    else:
        turns.append(turn)


def _name(label: int) -> str:
    return f"SPEAKER_{int(label):02d}"


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


def match_known(result: Diarization, known: dict[str, np.ndarray], threshold: float = 0.5) -> dict[str, str]:
    """Found speakers mapped to known names by embedding similarity (each name used once)."""
    pairs = sorted(
        (
            (float(np.dot(vector, ref)), speaker, name)
            for speaker, vector in result.centroids.items()
            for name, ref in known.items()
        ),
        reverse=True,
    )
    names: dict[str, str] = {}
    for similarity, speaker, name in pairs:
        if similarity < threshold or speaker in names or name in names.values():
            continue
        names[speaker] = name
    return names


def run(encoder: SpeakerEncoder, windows: Windows, options: DiarizeOptions) -> Diarization:
    """Who spoke when in a recording's windows; known speakers' samples name those they match."""
    result = diarize(windows, options.min_speakers, options.max_speakers)
    if not options.known:
        return result
    known = {name: encoder.voice(decode(data, max_seconds=MAX_REFERENCE_SECONDS)) for name, data in options.known}
    return result.renamed(match_known(result, known))


MAX_REFERENCE_SECONDS = 12.0


class LocalDiarizer:
    """serve_app.pipeline.PieceDiarizer in this process (LocalBackend), work in threads."""

    def __init__(self, device: str = "cpu") -> None:
        self.encoder = SpeakerEncoder(device)

    async def embed(self, piece: PreparedAudio) -> Windows:
        return await asyncio.to_thread(self.encoder.embed, piece.samples, piece.offset)

    async def diarize(self, windows: Windows, options: DiarizeOptions) -> Diarization:
        return await asyncio.to_thread(run, self.encoder, windows, options)
