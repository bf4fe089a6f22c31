"""A loaded Whisper model and its batched decode: many requests' chunks in few CTranslate2 calls.

Plain code with no Ray in it. ``transcribe_many`` is the batch body: the per-request flow
(language detection, pieces, streaming) is ``serve_app.asr.runner.ModelRunner``, which
feeds it the requests its ``DecodeBatcher`` gathered.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from serve_app.asr.alignment import AlignmentUnavailable
from serve_app.asr.guards import SpeechGuards, cut_loops
from serve_app.asr.packing import ChunkJob, lay_out, left_out, pack, unpack
from serve_app.asr.words import APPEND_PUNCTUATION, PREPEND_PUNCTUATION, compression_ratio, snap_words, split_sentences
from serve_app.audio.levels import loud_frames
from serve_app.audio.pieces import SAMPLE_RATE, Chunk, PreparedAudio
from serve_app.core.metrics import METRICS
from serve_app.core.transcript import FRAMES_PER_SECOND, DecodeOptions, Segment, Transcript, Word

log = logging.getLogger(__name__)

N_SAMPLES = 30 * SAMPLE_RATE


@dataclass
class DecodeStats:
    """What the last decode calls looked like: evidence that requests really share batches."""

    decode_calls: int = 0
    chunks: int = 0  # speech chunks decoded
    windows: int = 0  # 30 s encoder inputs they took (fewer than chunks when packed)
    largest_batch: int = 0
    redecoded: int = 0  # members of shared windows Whisper left out, decoded again alone
    requests_per_call: list[int] = field(default_factory=list)

    def record(self, windows: int, requests: int, chunks: int) -> None:
        self.decode_calls += 1
        self.windows += windows
        self.chunks += chunks
        self.largest_batch = max(self.largest_batch, windows)
        self.requests_per_call = (self.requests_per_call + [requests])[-256:]


class WhisperEngine:
    """A loaded Whisper model (faster-whisper's ``WhisperModel``) and the batched decode around it."""

    def __init__(
        self,
        model_path: str,
        *,
        multilingual: bool,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        num_workers: int = 1,
        decode_batch_size: int,  # windows per generate call (DecodeLimits; reset live by set_limits)
        aligner=None,  # serve_app.asr.alignment.Aligner: WhisperX word times where it has a model
        pack: bool = True,
        name: str = "",  # the catalog's name of the model, for metrics
        guards: SpeechGuards | None = SpeechGuards(),  # None: keep whatever Whisper says
    ):
        # Imported here: torch and CTranslate2 take seconds to import and the API never needs them.
        # faster-whisper's model, not whisperx.asr's subclass of it: that adds only a batched
        # pipeline method this engine does not call, and importing whisperx.asr pulls in
        # transformers, torchvision, sklearn and pyannote (15 s and 1 GB per replica here).
        # The mel features stay WhisperX's (torch): faster-whisper's numpy extractor would
        # save torch's 2.4 s and 0.5 GB, with features equal within 2e-5 and the same WER on
        # the bench corpus, but 1.3 points more on the test clips (docs/PERFORMANCE.md).
        import torch
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
        from whisperx.audio import log_mel_spectrogram

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
        self.name = name
        self.workers = num_workers
        self.aligner = aligner
        self.pack = pack
        self.guards = guards
        self.decode_batch_size = decode_batch_size
        self.n_mels = self.model.feat_kwargs.get("feature_size") or 80
        self._torch, self._mel = torch, log_mel_spectrogram
        self.stats = DecodeStats()
        self._tokenizers: dict[tuple[str, str], object] = {}
        # CTranslate2 runs up to num_workers calls truly in parallel (each on cpu_threads); on a
        # small CPU two single-threaded decodes keep the cores busier than one two-threaded one.
        self._slots = threading.Semaphore(num_workers)
        self._stats_lock = threading.Lock()

    # -- pieces -----------------------------------------------------------------------------
    def features(self, samples: np.ndarray) -> np.ndarray:
        """Log-mel features of at most 30 s of audio, padded to Whisper's 3000 frames."""
        samples = samples[:N_SAMPLES]
        with self._torch.inference_mode():
            mel = self._mel(samples, n_mels=self.n_mels, padding=N_SAMPLES - samples.shape[0])
        return mel.numpy()[:, :3000]

    def _tokenizer(self, task: str, language: str):
        key = (task, language)
        if key not in self._tokenizers:
            self._tokenizers[key] = self._tokenizer_cls(
                self.model.hf_tokenizer, self.model.model.is_multilingual, task=task, language=language
            )
        return self._tokenizers[key]

    def detect_language(self, samples: np.ndarray) -> tuple[str, float]:
        """Most likely language of (the first 30 s of) ``samples``, and its probability.

        Takes a model worker like a decode: detection is an encoder pass of its own.
        """
        with self._slots:
            encoded = self.model.encode(self.features(samples)[None])
            [result] = self.model.model.detect_language(encoded)
        return result[0][0][2:-2], float(result[0][1])

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

        guards = self.guards
        per_chunk: list[list[dict]] = []
        for chunk, result in zip(chunks, results):
            tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            if guards is not None:
                tokens = cut_loops(tokens)
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
        # A decode the guards suspect has its words aligned too, to be judged by them.
        suspects = [guards is not None and guards.suspect(p[0]["avg_logprob"]) for p in per_chunk]
        rows = [i for i, (flag, suspect) in enumerate(zip(flags, suspects)) if flag or suspect]
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
            if text and guards is not None and self._invented(piece, text):
                text = ""
            out.append(
                Segment(
                    id=0,
                    start=round(piece["start"], 3),
                    end=round(piece["end"], 3),
                    text=text,
                    avg_logprob=float(piece["avg_logprob"]),
                    tokens=piece["tokens"],
                    no_speech_prob=float(piece["no_speech_prob"]),
                    compression_ratio=round(compression_ratio(text), 4),
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

    def _invented(self, piece: dict, text: str) -> bool:
        guards = self.guards
        probabilities = [float(w["probability"]) for w in piece.get("words", []) if w["word"].strip()]
        if guards.invented(piece["no_speech_prob"], piece["avg_logprob"], probabilities or None):
            METRICS.invented(self.name, "no_speech")
            log.info(
                "dropped as invented: %r (no speech %.2f, log prob %.2f)",
                text[:80],
                piece["no_speech_prob"],
                piece["avg_logprob"],
            )
            return True
        if guards.too_repetitive(compression_ratio(text), piece["avg_logprob"]):
            METRICS.invented(self.name, "repetition")
            log.info("dropped as a loop: %r", text[:80])
            return True
        return False

    # -- the batch body ---------------------------------------------------------------------
    def transcribe_many(self, requests: list[tuple[PreparedAudio, DecodeOptions]]) -> list[Transcript]:
        """Transcribe several requests at once; results come back in the order given.

        Chunks of all requests with equal options are decoded together in batches of up to
        ``decode_batch_size``: the cross-request batching the service's throughput rests on.
        """
        with self._slots:
            return self._transcribe_many(requests)

    def _transcribe_many(self, requests):
        jobs: list[ChunkJob] = [
            ChunkJob(i, chunk, audio.chunk_samples(chunk), options)
            for i, (audio, options) in enumerate(requests)
            for chunk in audio.chunks
        ]
        groups: dict[DecodeOptions, list[ChunkJob]] = defaultdict(list)
        for job in jobs:
            groups[job.options].append(job)
        for opts, group in groups.items():
            units = pack(group) if self.pack else [[job] for job in group]
            for start in range(0, len(units), self.decode_batch_size):
                self._decode_units(units[start : start + self.decode_batch_size], opts)

        results = []
        for i, (audio, options) in enumerate(requests):
            language = options.language or "en"
            segments = [j.segment for j in jobs if j.request == i and j.segment is not None]
            segments, method, note = self._finish(segments, audio, options, language)
            results.append(
                Transcript(
                    text=" ".join(s.text for s in segments),
                    segments=segments,
                    language=language,
                    language_probability=None,
                    duration=audio.duration,
                    task=options.task,
                    word_timestamps=method,
                    alignment_note=note,
                )
            )
        return results

    def _decode_units(self, units: list[list[ChunkJob]], opts: DecodeOptions) -> None:
        windows, chunks, offsets = zip(*(lay_out(unit) for unit in units))
        features = np.stack([self.features(w) for w in windows])
        # Shared windows need word times to hand the words back; lone chunks only when asked.
        words = opts.word_timestamps or opts.timestamps
        decoded = self.decode(features, opts, list(chunks), align=[words or len(u) > 1 for u in units])
        tokenizer = self._tokenizer(opts.task, opts.language or "en")
        again: list[ChunkJob] = []
        for unit, segment, starts in zip(units, decoded, offsets):
            if starts is None:
                unit[0].segment = segment
                continue
            members = [(s, j.chunk) for s, j in zip(starts, unit)]
            parts = unpack(segment, members, tokenizer) if segment is not None else [None] * len(unit)
            for job, part in zip(unit, parts):
                job.segment = part
            again += left_out(unit, parts)
            taken = {id(job) for job in again}
            if self.guards is not None:
                # A member whose words the window's decode was unsure of: music or a click
                # packed with speech gets words of its own there. Alone, the guards judge it.
                again += [
                    job
                    for job, part in zip(unit, parts)
                    if part is not None
                    and id(job) not in taken
                    and self.guards.recheck([w.probability for w in part.words or []])
                ]
        requests = len({j.request for u in units for j in u})
        with self._stats_lock:
            self.stats.record(len(units), requests, sum(len(u) for u in units))
        METRICS.decode_call(self.name, len(units), requests)
        if again:
            # What Whisper left out of a shared window, decoded alone (packing.left_out).
            with self._stats_lock:
                self.stats.redecoded += len(again)
            METRICS.redecoded(self.name, len(again))
            log.info("%d of %d packed chunks decoded again alone", len(again), sum(len(u) for u in units))
            for start in range(0, len(again), self.decode_batch_size):
                self._decode_units([[job] for job in again[start : start + self.decode_batch_size]], opts)

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
        try:
            aligned = self.aligner.align(segments, audio.samples, language)
        except AlignmentUnavailable as exc:
            return "whisper", f"{exc}; {fallback}"
        for segment, words in zip(segments, aligned):
            segment.words = words
        return "whisperx", None


def _rows(view, rows: list[int]):
    """Some rows (batch entries) of a CTranslate2 StorageView: a new StorageView and the array
    it shares its memory with (keep that alive while the view is used); None for a view in GPU
    memory (the caller then aligns every row)."""
    import ctranslate2

    if view.device != "cpu":
        return None
    part = np.ascontiguousarray(np.asarray(view)[rows])
    return ctranslate2.StorageView.from_array(part), part
