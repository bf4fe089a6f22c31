"""Speech to text on pre-cut chunks: WhisperX's batched CTranslate2 decode, many requests at once.

Plain code with no Ray in it: the Transcriber deployment holds a ``WhisperEngine`` and feeds it
the requests its ``PullBatcher`` (serve_app/batching.py) gathered; tests call ``transcribe_many`` directly.
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from serve_app.audio import SAMPLE_RATE, Chunk, PreparedAudio, loud_frames, snap_to_sound

log = logging.getLogger(__name__)

N_SAMPLES = 30 * SAMPLE_RATE
FRAMES_PER_SECOND = 100  # Whisper's mel frames: a segment's ``seek`` counts them
# Packing short chunks into shared windows (WhisperEngine._pack).
PACK_WINDOW = 29.5  # seconds of a shared window, gaps included
PACK_GAP = 0.5  # silence between two requests' chunks, so Whisper hears them apart
PACK_MAX_CHUNK = 20.0  # longer chunks leave too little room to share: decoded alone
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode one request. Requests share a decode call only when these are equal."""

    task: Task = "transcribe"
    language: str | None = None  # None: detect (multilingual models only)
    beam_size: int = 5
    initial_prompt: str | None = None
    temperature: float = 0.0  # 0: beam search; above 0: sampling at that temperature
    # Sentence-sized segments, cut at word times. Off, each segment is one VAD chunk of up to
    # 30 s (no alignment pass: about 10% faster on CPU).
    timestamps: bool = False
    word_timestamps: bool = False


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    tokens: list[int] = field(default_factory=list)
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0
    seek: int = 0
    words: list[Word] | None = None


@dataclass
class Transcript:
    """The result of one request."""

    text: str
    segments: list[Segment]
    language: str
    language_probability: float | None
    duration: float
    task: Task = "transcribe"
    # How word times were found ("whisper": cross-attention alignment of the decoded tokens;
    # "whisperx": a wav2vec2 alignment model) and, when the better method could not be used, why.
    word_timestamps: str | None = None
    alignment_note: str | None = None

    @property
    def speech_seconds(self) -> float:
        return sum(s.end - s.start for s in self.segments)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or [])]


@dataclass
class _ChunkJob:
    request: int
    chunk: Chunk
    samples: np.ndarray
    options: DecodeOptions
    segment: Segment | None = None


@dataclass
class BatchStats:
    """What the last decode calls looked like: evidence that requests really share batches."""

    decode_calls: int = 0
    chunks: int = 0  # speech chunks decoded
    windows: int = 0  # 30 s encoder inputs they took (fewer than chunks when packed)
    largest_batch: int = 0
    requests_per_call: list[int] = field(default_factory=list)

    def record(self, windows: int, requests: int, chunks: int) -> None:
        self.decode_calls += 1
        self.windows += windows
        self.chunks += chunks
        self.largest_batch = max(self.largest_batch, windows)
        self.requests_per_call = (self.requests_per_call + [requests])[-256:]


class WhisperEngine:
    """A loaded Whisper model (WhisperX's ``WhisperModel``) and the batched decode around it."""

    def __init__(
        self,
        model_path: str,
        *,
        multilingual: bool,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        num_workers: int = 1,
        decode_batch_size: int = 8,
        aligner=None,  # serve_app.alignment.Aligner: WhisperX word times where it has a model
        pack: bool = True,
    ):
        # Imported here: torch and CTranslate2 take seconds to import and the API never needs them.
        from faster_whisper.tokenizer import Tokenizer
        from whisperx.asr import WhisperModel

        self._tokenizer_cls = Tokenizer
        self.model = WhisperModel(
            model_path,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
        )
        self.multilingual = multilingual
        self.aligner = aligner
        self.pack = pack
        self.decode_batch_size = decode_batch_size
        self.n_mels = self.model.feat_kwargs.get("feature_size") or 80
        self.stats = BatchStats()
        self._tokenizers: dict[tuple[str, str], object] = {}
        # CTranslate2 runs up to num_workers calls truly in parallel (each on cpu_threads); on a
        # small CPU two single-threaded decodes keep the cores busier than one two-threaded one.
        self._slots = threading.Semaphore(num_workers)
        self._stats_lock = threading.Lock()

    # -- pieces -----------------------------------------------------------------------------
    def features(self, samples: np.ndarray) -> np.ndarray:
        """Log-mel features of at most 30 s of audio, padded to Whisper's 3000 frames."""
        import torch
        from whisperx.audio import log_mel_spectrogram

        samples = samples[:N_SAMPLES]
        with torch.inference_mode():
            mel = log_mel_spectrogram(samples, n_mels=self.n_mels, padding=N_SAMPLES - samples.shape[0])
        return mel.numpy()[:, :3000]

    def _tokenizer(self, task: str, language: str):
        key = (task, language)
        if key not in self._tokenizers:
            self._tokenizers[key] = self._tokenizer_cls(
                self.model.hf_tokenizer, self.model.model.is_multilingual, task=task, language=language
            )
        return self._tokenizers[key]

    def detect_languages(self, features: np.ndarray) -> list[tuple[str, float]]:
        """Most likely language and its probability for each 30 s feature window."""
        encoded = self.model.encode(features)
        results = self.model.model.detect_language(encoded)
        return [(r[0][0][2:-2], float(r[0][1])) for r in results]

    def decode(
        self,
        features: np.ndarray,
        options: DecodeOptions,
        chunks: list[Chunk],
        *,
        align: Sequence[bool] = (),
    ) -> list[Segment | None]:
        """One segment per chunk of a same-options batch (faster-whisper's batched decode), None
        where nothing was said; where ``align`` (one flag per chunk) says so, its words (text
        with their leading spaces).

        Decoding is always without timestamp tokens: in that mode Whisper skips whole sentences
        of a 30 s window now and then (WER 7.8% -> 12.1% on the bench corpus). Word times come
        from cross-attention alignment of the decoded tokens instead, and sentence segments
        (``options.timestamps``) are cut from the words.
        """
        model = self.model
        tokenizer = self._tokenizer(options.task, options.language or "en")
        previous = tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=True)
        if options.temperature > 0:
            how = {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": options.temperature}
        else:
            how = {"beam_size": options.beam_size, "patience": 1}
        encoder_output = model.encode(features)
        results = model.model.generate(
            encoder_output,
            [list(prompt) for _ in chunks],
            length_penalty=1,
            max_length=model.max_length,
            suppress_blank=True,
            suppress_tokens=[-1],
            return_scores=True,
            return_no_speech_prob=True,
            **how,
        )

        per_chunk: list[list[dict]] = []
        for chunk, result in zip(chunks, results):
            tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            per_chunk.append(
                [
                    {
                        "start": chunk.start,
                        "end": chunk.end,
                        "tokens": tokens,
                        "seek": round(chunk.start * FRAMES_PER_SECOND),
                        "avg_logprob": result.scores[0] * len(tokens) / (len(tokens) + 1),
                        "no_speech_prob": result.no_speech_prob,
                    }
                ]
            )
        flags = list(align) or [False] * len(chunks)
        rows = [i for i, flag in enumerate(flags) if flag]
        if rows:
            # One generate call for the whole batch (a call per kind of window was 12% slower
            # on mixed batches); the cross-attention alignment only for the windows that need
            # words. On a GPU every row is aligned (cheap there) and the unwanted words dropped.
            sliced = _rows(encoder_output, rows) if len(rows) < len(chunks) else None
            if sliced is None:
                output, rows = encoder_output, list(range(len(chunks)))
            else:
                output, _memory = sliced  # _memory: the array the sliced view lives in
            # Alignment moves a segment's start and end to its words: keep them where unwanted.
            spans = {i: (per_chunk[i][0]["start"], per_chunk[i][0]["end"]) for i in rows if not flags[i]}
            sizes = [int(math.ceil(chunks[i].duration) * model.frames_per_second) for i in rows]
            model.add_word_timestamps(
                [per_chunk[i] for i in rows],
                tokenizer,
                output,
                sizes,
                PREPEND_PUNCTUATION,
                APPEND_PUNCTUATION,
                0.0,
            )
            for i, (start, end) in spans.items():
                per_chunk[i][0].update(start=start, end=end)
        out: list[Segment | None] = []
        for [piece], aligned in zip(per_chunk, flags):
            text = tokenizer.decode(piece["tokens"]).strip()
            out.append(
                Segment(
                    id=0,
                    start=round(piece["start"], 3),
                    end=round(piece["end"], 3),
                    text=text,
                    avg_logprob=float(piece["avg_logprob"]),
                    tokens=piece["tokens"],
                    no_speech_prob=float(piece["no_speech_prob"]),
                    compression_ratio=round(get_compression_ratio(text), 4),
                    temperature=options.temperature,
                    seek=piece["seek"],
                    words=[
                        Word(
                            w["word"],
                            round(float(w["start"]), 3),
                            round(float(w["end"]), 3),
                            round(float(w["probability"]), 4),
                        )
                        for w in piece.get("words", [])
                    ]
                    if aligned
                    else None,
                )
                if text
                else None
            )
        return out

    # -- the batch body ---------------------------------------------------------------------
    def transcribe_many(self, requests: list[tuple[PreparedAudio, DecodeOptions]]) -> list[Transcript]:
        """Transcribe several requests at once; results come back in the order given.

        Chunks of all requests with equal options are decoded together in batches of up to
        ``decode_batch_size``: the cross-request batching the service's throughput rests on.
        """
        with self._slots:
            return self._transcribe_many(requests)

    def _transcribe_many(self, requests):
        options = [self._effective(o) for _, o in requests]
        jobs: list[_ChunkJob] = [
            _ChunkJob(i, chunk, audio.chunk_samples(chunk), options[i])
            for i, (audio, _) in enumerate(requests)
            for chunk in audio.chunks
        ]
        detected = self._detect(requests, options, jobs)
        for i, (lang, _) in detected.items():
            options[i] = replace(options[i], language=lang)
        for job in jobs:
            job.options = options[job.request]

        groups: dict[DecodeOptions, list[_ChunkJob]] = defaultdict(list)
        for job in jobs:
            groups[job.options].append(job)
        for opts, group in groups.items():
            units = self._pack(group)
            for start in range(0, len(units), self.decode_batch_size):
                self._decode_units(units[start : start + self.decode_batch_size], opts)

        results = []
        for i, (audio, _) in enumerate(requests):
            language, probability = detected.get(i, (options[i].language or "en", None))
            segments = [j.segment for j in jobs if j.request == i and j.segment is not None]
            segments, method, note = self._finish(segments, audio, options[i], language)
            results.append(
                Transcript(
                    text=" ".join(s.text for s in segments),
                    segments=segments,
                    language=language,
                    language_probability=probability,
                    duration=audio.duration,
                    task=options[i].task,
                    word_timestamps=method,
                    alignment_note=note,
                )
            )
        return results

    def _pack(self, group: list[_ChunkJob]) -> list[list[_ChunkJob]]:
        """Decode units: short chunks (of any requests) share a 30 s window, the rest go alone.

        Whisper's encoder pads every input to 30 s, so a 5 s request alone pays for 30 s;
        six of them in one window pay once (bench corpus: 11x -> 17-18x real time, same WER).
        Every window saved counts (tiny.en, one thread: about 0.3 s of encoder and decoder per
        window, next to 1.7 s for all the tokens of the 24 short bench files), so chunks go
        first-fit, longest first: short tails of long requests fill the gaps arrival order leaves.
        """
        if not self.pack:
            return [[job] for job in group]
        units: list[list[_ChunkJob]] = [[job] for job in group if job.chunk.duration > PACK_MAX_CHUNK]
        windows: list[list[_ChunkJob]] = []
        lengths: list[float] = []
        short = [job for job in group if job.chunk.duration <= PACK_MAX_CHUNK]
        for job in sorted(short, key=lambda j: -j.chunk.duration):
            for n, length in enumerate(lengths):
                if length + PACK_GAP + job.chunk.duration <= PACK_WINDOW:
                    windows[n].append(job)
                    lengths[n] += PACK_GAP + job.chunk.duration
                    break
            else:
                windows.append([job])
                lengths.append(job.chunk.duration)
        return units + windows

    def _decode_units(self, units: list[list[_ChunkJob]], opts: DecodeOptions) -> None:
        gap = np.zeros(int(PACK_GAP * SAMPLE_RATE), np.float32)
        windows, chunks, offsets = [], [], []
        for unit in units:
            if len(unit) == 1:
                windows.append(unit[0].samples)
                chunks.append(unit[0].chunk)
                offsets.append(None)
                continue
            parts, starts, at = [], [], 0
            for job in unit:
                if parts:
                    parts.append(gap)
                    at += gap.size
                starts.append(at / SAMPLE_RATE)
                parts.append(job.samples)
                at += job.samples.size
            windows.append(np.concatenate(parts))
            chunks.append(Chunk(0.0, round(at / SAMPLE_RATE, 3)))
            offsets.append(starts)
        features = np.stack([self.features(w) for w in windows])
        # Shared windows need word times to hand the words back; lone chunks only when asked.
        words = opts.word_timestamps or opts.timestamps
        decoded = self.decode(features, opts, chunks, align=[words or len(u) > 1 for u in units])
        tokenizer = self._tokenizer(opts.task, opts.language or "en")
        for unit, segment, starts in zip(units, decoded, offsets):
            if starts is None:
                unit[0].segment = segment
            elif segment is not None:
                for job, part in zip(unit, unpack(segment, [(s, j.chunk) for s, j in zip(starts, unit)], tokenizer)):
                    job.segment = part
        with self._stats_lock:
            self.stats.record(len(units), len({j.request for u in units for j in u}), sum(len(u) for u in units))

    def _finish(self, segments: list[Segment], audio: PreparedAudio, options: DecodeOptions, language: str):
        """A request's segments as asked for: better word times, sentences, words or not."""
        method = note = None
        if options.word_timestamps:
            method, note = self._align(segments, audio, language)
        if any(s.words for s in segments):
            snap_words(segments, loud_frames(audio.samples))
        if options.timestamps:
            tokenizer = self._tokenizer(options.task, language)
            segments = [part for s in segments for part in split_sentences(s, tokenizer)]
        for n, segment in enumerate(segments):
            segment.id = n
            if not options.word_timestamps:
                segment.words = None
            for word in segment.words or []:
                word.word = word.word.strip()  # the text keeps the spacing; a word does not
        return segments, method, note

    def _align(self, segments: list[Segment], audio: PreparedAudio, language: str) -> tuple[str, str | None]:
        """WhisperX word times where an alignment model exists; else keep Whisper's and say why."""
        fallback = "word times are Whisper's own (cross-attention)"
        if self.aligner is None:
            return "whisper", f"no WhisperX alignment model is configured (STT_ALIGN_MODELS); {fallback}"
        from serve_app.alignment import AlignmentUnavailable

        try:
            aligned = self.aligner.align(segments, audio.samples, language)
        except AlignmentUnavailable as exc:
            return "whisper", f"{exc}; {fallback}"
        for segment, words in zip(segments, aligned):
            segment.words = words
        return "whisperx", None

    def _effective(self, options: DecodeOptions) -> DecodeOptions:
        if not self.multilingual:
            return replace(options, language="en", task="transcribe")
        return options

    def _detect(self, requests, options, jobs) -> dict[int, tuple[str, float]]:
        """Detect the language of requests that gave none, from their first speech chunk."""
        wanted = [i for i, o in enumerate(options) if o.language is None]
        if not wanted:
            return {}
        first: dict[int, np.ndarray] = {}
        for job in jobs:
            if job.request in wanted and job.request not in first:
                first[job.request] = self.features(job.samples)
        found: dict[int, tuple[str, float]] = {i: ("en", 0.0) for i in wanted if i not in first}
        have = [i for i in wanted if i in first]
        for start in range(0, len(have), self.decode_batch_size):
            part = have[start : start + self.decode_batch_size]
            for i, result in zip(part, self.detect_languages(np.stack([first[i] for i in part]))):
                found[i] = result
        return found


def _rows(view, rows: list[int]):
    """Some rows (batch entries) of a CTranslate2 StorageView: a new StorageView and the array
    it shares its memory with (keep that alive while the view is used); None for a view in GPU
    memory (the caller then aligns every row)."""
    import ctranslate2

    if view.device != "cpu":
        return None
    part = np.ascontiguousarray(np.asarray(view)[rows])
    return ctranslate2.StorageView.from_array(part), part


def join_pieces(parts: list[Transcript], options: DecodeOptions, probability: float | None) -> Transcript:
    """One request's transcript from the transcripts of its consecutive pieces."""
    segments = [replace(s) for part in parts for s in part.segments]
    for n, segment in enumerate(segments):
        segment.id = n
    first = parts[0]
    return replace(
        first,
        text=" ".join(s.text for s in segments),
        segments=segments,
        language=options.language or first.language,
        language_probability=probability if probability is not None else first.language_probability,
    )


def get_compression_ratio(text: str) -> float:
    """faster-whisper's measure, kept here: importing faster_whisper.transcribe loads
    CTranslate2, which the API process (that imports this module) must not pay for."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


SENTENCE_END = (".", "?", "!", "。", "？", "！")


def split_sentences(segment: Segment, tokenizer, pause: float = 1.0) -> list[Segment]:
    """Cut a chunk's segment into sentences at its words' times.

    A sentence ends after a word that ends one (``.?!``) or before a pause of ``pause`` seconds.
    Tokens are those of each sentence's text; the decode scores stay those of the chunk.
    """
    words = segment.words or []
    if not words:
        return [segment]
    groups: list[list[Word]] = [[]]
    for word, following in zip(words, words[1:] + [None]):
        groups[-1].append(word)
        if following is not None and (word.word.rstrip().endswith(SENTENCE_END) or following.start - word.end >= pause):
            groups.append([])
    if len(groups) == 1:
        return [segment]
    return [_from_words(segment, group, tokenizer) for group in groups]


def _from_words(segment: Segment, words: list[Word], tokenizer, **changes) -> Segment:
    """A segment made of some of ``segment``'s words (or words moved to it): their text, their
    tokens, their span; the decode scores stay the source's."""
    text = "".join(w.word for w in words).strip()  # words carry their leading spaces
    return replace(
        segment,
        text=text,
        words=words,
        tokens=tokenizer.encode(" " + text),
        compression_ratio=round(get_compression_ratio(text), 4),
        **{"start": words[0].start, "end": words[-1].end, **changes},
    )


def snap_words(segments: list[Segment], loud: np.ndarray) -> None:
    """Pull word edges out of silence (see ``snap_to_sound``); segments follow their words."""
    for segment in segments:
        if not segment.words:
            continue
        for word in segment.words:
            word.start, word.end = snap_to_sound(word.start, word.end, loud)
        segment.start, segment.end = segment.words[0].start, segment.words[-1].end


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
        _from_words(
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


def window_load(audio: PreparedAudio) -> float:
    """How many 30 s windows a request's chunks fill, packed: a short chunk takes its share,
    a chunk too long to share (> PACK_MAX_CHUNK) a whole window."""
    if not audio.chunks:
        return 1.0
    return sum(1.0 if c.duration > PACK_MAX_CHUNK else (c.duration + PACK_GAP) / PACK_WINDOW for c in audio.chunks)
