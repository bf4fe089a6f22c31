"""One recording through the models: pieces decoded, transcribed as they come, handed on in order.

``Pipeline`` is the request path's core, one object for both hosts: the Preprocessor deployment
holds one over deployment handles, ``LocalBackend`` one over models loaded in its process. It
holds the preprocessor, the blob store that stored audio is read from, the models, the diarizer
and the decode budget, and ``run`` makes every check before any audio is decoded (the stored
audio exists, the model is served, so is the diarizer if asked for, the budget has room).

Then ``run`` opens the recording (an upload's bytes, or a stored object read as a stream), picks
the model (``model=auto``) and the language once, sends each speech piece to the model as soon
as the chunker hands it out, with at most ``PIECES_IN_FLIGHT`` pieces of one recording
outstanding, and yields each piece's transcript (``Part``) in order, then a ``Finished``.
Decoding of a long file thus overlaps with the transcription of its first pieces, and memory
holds a window of pieces, never the recording.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import BinaryIO, Protocol

from serve_app.asr.autoselect import ModelChoice
from serve_app.audio.pieces import PreparedAudio
from serve_app.audio.preprocess import PIECES_IN_FLIGHT, AudioPreprocessor, DecodeBudget, PieceStream, PrepareOptions
from serve_app.core.errors import InvalidParameter, ServiceError, UnknownModel
from serve_app.core.transcript import DecodeOptions, DiarizeOptions, Transcript, shifted
from serve_app.diarization.speakers import Diarization, Windows
from serve_app.jobs.blobs import BlobNotFound


@dataclass(frozen=True)
class BlobSource:
    """Audio already in the BlobStore (an async job's): read as a stream where it is decoded."""

    key: str


@dataclass
class Part:
    """One piece of the recording, transcribed; times are the recording's."""

    transcript: Transcript
    start: float
    end: float
    declared: float | None  # the duration the file states, when it states one
    model: str


@dataclass
class Finished:
    duration: float  # all the audio decoded
    model: str
    language: str
    language_probability: float | None
    diarization: Diarization | None = None  # who spoke when, if asked


class PieceTranscriber(Protocol):
    """A model, as the pipeline uses it (a Transcriber deployment's handle, or a model loaded
    in this process)."""

    multilingual: bool

    async def detect_language(self, piece: PreparedAudio) -> tuple[str, float]: ...

    async def transcribe_piece(self, piece: PreparedAudio, options: DecodeOptions) -> Transcript: ...


class PieceDiarizer(Protocol):
    """Speaker embeddings piece by piece, then who spoke when (a Diarizer deployment's handle,
    or serve_app.diarization.encoder.LocalDiarizer)."""

    async def embed(self, piece: PreparedAudio) -> Windows: ...

    async def diarize(self, windows: Windows, options: DiarizeOptions) -> Diarization: ...


class BlobReader(Protocol):
    """Where stored audio is read from (serve_app.jobs.blobs.BlobStore)."""

    async def size(self, key: str) -> int: ...

    def open_read(self, key: str) -> BinaryIO: ...


class Burst:
    """What a pipeline is decoding. ``starting``: recordings opened but whose first piece is not
    yet sent, a hint to the Transcriber's batcher that more requests are about to arrive
    (``PreparedAudio.preparing``); ``decoding``: recordings with audio left to decode (what the
    Preprocessor's autoscaling counts, not those only waiting for text)."""

    def __init__(self) -> None:
        self.starting = 0
        self.decoding = 0


class Pipeline:
    def __init__(
        self,
        preprocessor: AudioPreprocessor,
        transcribers: Mapping[str, PieceTranscriber],
        *,
        budget: DecodeBudget,
        blobs: BlobReader | None = None,
        diarizer: PieceDiarizer | None = None,
    ):
        self.preprocessor = preprocessor
        self.transcribers = transcribers  # every served model, by name
        self.budget = budget
        self.blobs = blobs
        self.diarizer = diarizer
        self.burst = Burst()

    def transcriber(self, model: str) -> PieceTranscriber:
        try:
            return self.transcribers[model]
        except KeyError:
            raise UnknownModel(f"Model '{model}' is not served here.", param="model") from None

    async def run(
        self,
        source: bytes | BlobSource,
        target: str | ModelChoice,
        options: DecodeOptions,
        prepare: PrepareOptions,
        speakers: DiarizeOptions | None = None,
    ) -> AsyncIterator[Part | Finished]:
        """The transcription of ``source`` with ``target`` (a served model, or auto's choice);
        with ``speakers``, each piece's speaker embeddings are computed beside its transcription
        and ``Finished`` says who spoke when."""
        size = await self._size(source)
        if speakers is not None and self.diarizer is None:
            raise InvalidParameter(
                "Speaker diarization is not served here.",
                code="diarization_unavailable",
                status_code=400,
                param="diarize",
            )
        for model in [target] if isinstance(target, str) else [name for name, _ in target.served]:
            self.transcriber(model)
        async with self.budget.hold(size):
            async for item in self._pieces(source, target, options, prepare, speakers):
                yield item

    async def _size(self, source: bytes | BlobSource) -> int:
        if not isinstance(source, BlobSource):
            return len(source)
        if self.blobs is None:
            raise ServiceError(
                "This pipeline has no BlobStore to read stored audio from.", code="internal_error", status_code=500
            )
        try:
            return await self.blobs.size(source.key)
        except BlobNotFound:
            raise _missing(source.key) from None

    async def _pieces(self, source, target, options, prepare, speakers) -> AsyncIterator[Part | Finished]:
        burst, diarizer = self.burst, self.diarizer if speakers is not None else None
        burst.starting += 1
        burst.decoding += 1
        starting = decoding = True
        stream: PieceStream | None = None
        sender: asyncio.Task | None = None
        queue: asyncio.Queue = asyncio.Queue()
        # A slot per piece decoded and not yet handed on: taken before the next piece is
        # decoded, given back once its transcript has gone out. So at most PIECES_IN_FLIGHT
        # pieces are decoded and held (DecodeBudget counts on it), and at most that many at the model.
        slots = asyncio.Semaphore(PIECES_IN_FLIGHT)
        embeds: list[asyncio.Future] = []
        try:
            opened = source if isinstance(source, bytes) else await asyncio.to_thread(self._open, source.key)
            stream = await asyncio.to_thread(self.preprocessor.open, opened, prepare)
            await slots.acquire()
            first = await asyncio.to_thread(stream.next_piece)
            model, options, probability = await self._choose(stream, first, target, options)
            transcriber = self.transcriber(model)

            async def send() -> None:
                nonlocal decoding
                piece = first
                while piece is not None:
                    piece.preparing = burst.starting
                    piece.interactive = not isinstance(source, BlobSource)  # a job's audio is in the store
                    if diarizer is not None:
                        embeds.append(asyncio.ensure_future(diarizer.embed(piece)))
                    queue.put_nowait((piece, asyncio.ensure_future(transcriber.transcribe_piece(piece, options))))
                    await slots.acquire()
                    piece = await asyncio.to_thread(stream.next_piece)
                burst.decoding -= 1
                decoding = False
                queue.put_nowait(None)

            burst.starting -= 1
            starting = False
            sender = asyncio.create_task(send())
            while True:
                if sender.done():
                    sender.result()  # decoding failed: raise its error
                    item = await queue.get()
                else:
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait({getter, sender}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()  # Queue.get loses no item when cancelled
                        continue
                    item = getter.result()
                if item is None:
                    break
                piece, transcribed = item
                transcript = shifted(await transcribed, piece.offset)
                slots.release()
                yield Part(transcript, piece.offset, round(piece.offset + piece.duration, 3), stream.declared, model)
            diarization = None
            if diarizer is not None:
                windows = Windows.concat(list(await asyncio.gather(*embeds)))
                diarization = await diarizer.diarize(windows, speakers)
            yield Finished(round(stream.seconds, 3), model, options.language or "en", probability, diarization)
        finally:
            for embed in embeds:
                embed.cancel()
            if starting:
                burst.starting -= 1
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(BaseException):
                    await sender
            if decoding:
                burst.decoding -= 1
            while not queue.empty():
                item = queue.get_nowait()
                if item is not None:
                    item[1].cancel()  # the caller went away or it failed: drop what is queued
            if stream is not None:
                asyncio.get_running_loop().run_in_executor(None, stream.close)

    def _open(self, key: str) -> BinaryIO:
        try:
            return self.blobs.open_read(key)
        except BlobNotFound:
            raise _missing(key) from None

    async def _choose(self, stream: PieceStream, first: PreparedAudio | None, target, options: DecodeOptions):
        """The model, the options with the language settled, and the detection's probability."""
        probability = None
        if isinstance(target, ModelChoice):
            language = options.language
            detector = target.detector() if language is None and first is not None else None
            if detector is not None:
                language, probability = await self.transcriber(detector).detect_language(first)
            model = target.pick(stream.declared, language)
            if language is not None and self.transcriber(model).multilingual:
                options = replace(options, language=language)
        else:
            model = target
        transcriber = self.transcriber(model)
        if not transcriber.multilingual:
            options = replace(options, language="en")
        elif options.language is None and first is not None:
            # Once per recording, so that all its pieces decode in the same language.
            language, probability = await transcriber.detect_language(first)
            options = replace(options, language=language)
        return model, options, probability


def _missing(key: str) -> ServiceError:
    return ServiceError(f"The job's audio ({key}) is missing from storage.", code="audio_missing")
