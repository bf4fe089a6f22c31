"""Speaker turns from embedded windows: agglomerative clustering (cosine distance, average
linkage), the number of speakers where the merge distance jumps past a threshold, bounded by
``min_speakers``/``max_speakers``; then each 10 ms of speech to the speaker whose windows
cover it most, runs of one speaker as turns. Known speakers are matched by embedding.
"""

from __future__ import annotations

import numpy as np

from serve_app.core.bounds import MAX_SPEAKERS
from serve_app.diarization.speakers import Diarization, SpeakerTurn, Windows

FRAME = 0.01
MERGE_GAP = 0.5  # one speaker's turns closer than this are one turn
# Cosine distance above which two groups are different people. The synthetic conversations
# are perfect anywhere in 0.30-0.40; on real voices (pyannote.audio's sample: two women on a
# telephone line) 0.35 heard one speaker (DER 48%) and 0.30 two (DER 9%), while one real
# reader (LibriVox) or one prompt voice (Asterisk en, fr, ru) stays one at 0.30 (at 0.25 the
# reader split in three). #29, tests/app/test_real_speech.py.
DISTANCE_THRESHOLD = 0.30
# A cluster of fewer windows than this (a cough, a laugh, a word in an odd voice) is not a
# speaker of its own: its windows join the nearest real one. Measured on the conversation set:
# without it 6/10 two-speaker counts were right, every miss a one-window cluster.
MIN_CLUSTER_WINDOWS = 3
MAX_WINDOWS = 4000  # clustering is quadratic: beyond this, runs of windows are clustered by their means


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
