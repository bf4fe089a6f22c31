"""Speech to text on pre-cut chunks: WhisperX's batched CTranslate2 decode, many requests at once.

Plain code with no Ray in it: the Transcriber deployment holds a ``WhisperEngine`` and feeds it
the requests that ``@serve.batch`` gathered; tests call ``transcribe_many`` directly.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from serve_app.audio import SAMPLE_RATE, Chunk, PreparedAudio

log = logging.getLogger(__name__)

N_SAMPLES = 30 * SAMPLE_RATE
Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode one request. Requests share a decode call only when these are equal."""

    task: Task = "transcribe"
    language: str | None = None  # None: detect (multilingual models only)
    beam_size: int = 5
    initial_prompt: str | None = None


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float


@dataclass
class Transcript:
    """The result of one request."""

    text: str
    segments: list[Segment]
    language: str
    language_probability: float | None
    duration: float
    task: Task = "transcribe"

    @property
    def speech_seconds(self) -> float:
        return sum(s.end - s.start for s in self.segments)


@dataclass
class _ChunkJob:
    request: int
    chunk: Chunk
    features: np.ndarray
    options: DecodeOptions
    text: str = ""
    avg_logprob: float = 0.0


@dataclass
class BatchStats:
    """What the last decode calls looked like: evidence that requests really share batches."""

    decode_calls: int = 0
    chunks: int = 0
    largest_batch: int = 0
    requests_per_call: list[int] = field(default_factory=list)

    def record(self, chunks: int, requests: int) -> None:
        self.decode_calls += 1
        self.chunks += chunks
        self.largest_batch = max(self.largest_batch, chunks)
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

    def _options(self, options: DecodeOptions):
        from faster_whisper.transcribe import TranscriptionOptions

        return TranscriptionOptions(
            beam_size=options.beam_size, best_of=5, patience=1, length_penalty=1,
            repetition_penalty=1, no_repeat_ngram_size=0, log_prob_threshold=-1.0,
            no_speech_threshold=0.6, compression_ratio_threshold=2.4,
            condition_on_previous_text=False, prompt_reset_on_temperature=0.5,
            temperatures=[0.0], initial_prompt=options.initial_prompt, prefix=None,
            suppress_blank=True, suppress_tokens=[-1], without_timestamps=True,
            max_initial_timestamp=0.0, word_timestamps=False,
            prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、",
            multilingual=False, max_new_tokens=None, clip_timestamps="0",
            hallucination_silence_threshold=None, hotwords=None,
        )  # fmt: skip

    def detect_languages(self, features: np.ndarray) -> list[tuple[str, float]]:
        """Most likely language and its probability for each 30 s feature window."""
        encoded = self.model.encode(features)
        results = self.model.model.detect_language(encoded)
        return [(r[0][0][2:-2], float(r[0][1])) for r in results]

    def decode(self, features: np.ndarray, options: DecodeOptions) -> list[tuple[str, float]]:
        """Text and average log-probability for each chunk of one same-options batch."""
        tokenizer = self._tokenizer(options.task, options.language or "en")
        out = self.model.generate_segment_batched(features, tokenizer, self._options(options))
        return [(t.strip(), float(lp)) for t, lp in zip(out["text"], out["avg_logprob"])]

    # -- the batch body ---------------------------------------------------------------------
    def transcribe_many(
        self, requests: list[tuple[PreparedAudio, DecodeOptions]]
    ) -> list[Transcript]:
        """Transcribe several requests at once; results come back in the order given.

        Chunks of all requests with equal options are decoded together in batches of up to
        ``decode_batch_size``: the cross-request batching the service's throughput rests on.
        """
        with self._slots:
            return self._transcribe_many(requests)

    def _transcribe_many(self, requests):
        options = [self._effective(o) for _, o in requests]
        jobs: list[_ChunkJob] = [
            _ChunkJob(i, chunk, self.features(audio.chunk_samples(chunk)), options[i])
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
            for start in range(0, len(group), self.decode_batch_size):
                part = group[start : start + self.decode_batch_size]
                decoded = self.decode(np.stack([j.features for j in part]), opts)
                for job, (text, logprob) in zip(part, decoded):
                    job.text, job.avg_logprob = text, logprob
                with self._stats_lock:
                    self.stats.record(len(part), len({j.request for j in part}))

        results = []
        for i, (audio, _) in enumerate(requests):
            mine = [j for j in jobs if j.request == i]
            segments = [
                Segment(n, j.chunk.start, j.chunk.end, j.text, j.avg_logprob)
                for n, j in enumerate(mine)
                if j.text
            ]
            language, probability = detected.get(i, (options[i].language or "en", None))
            results.append(
                Transcript(
                    text=" ".join(s.text for s in segments),
                    segments=segments,
                    language=language,
                    language_probability=probability,
                    duration=audio.duration,
                    task=options[i].task,
                )
            )
        return results

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
            first.setdefault(job.request, job.features)
        found: dict[int, tuple[str, float]] = {i: ("en", 0.0) for i in wanted if i not in first}
        have = [i for i in wanted if i in first]
        for start in range(0, len(have), self.decode_batch_size):
            part = have[start : start + self.decode_batch_size]
            for i, result in zip(part, self.detect_languages(np.stack([first[i] for i in part]))):
                found[i] = result
        return found
