"""One recording through the models: pieces decoded, transcribed as they come, handed on in order.

``run`` is the request path's core, the same in the Preprocessor deployment and in
``LocalBackend``: it opens the recording (an upload's bytes, or a stored object read as a
stream), picks the model (``model=auto``) and the language once, then sends each speech piece
to the model's Transcriber as soon as the chunker hands it out, with at most ``IN_FLIGHT``
pieces of one recording outstanding, and yields each piece's transcript (``Part``) in order,
then a ``Finished``. Decoding of a long file thus overlaps with the transcription of its first
pieces, and memory holds a window of pieces, never the recording.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from serve_app.audio import PreparedAudio
from serve_app.autoselect import ModelChoice
from serve_app.blobs import BlobNotFound
from serve_app.diarize import Diarization, Windows, label
from serve_app.errors import ServiceError
from serve_app.preprocess import AudioPreprocessor, PieceStream, PrepareOptions
from serve_app.transcript import DecodeOptions, DiarizeOptions, Transcript, join, shifted

IN_FLIGHT = 8  # pieces of one recording at the Transcriber at once (~2 MB each)


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
    """A model, as the pipeline uses it (a BatchedTranscriber, or a deployment handle's)."""

    multilingual: bool

    async def detect_language(self, piece: PreparedAudio) -> tuple[str, float]: ...

    async def transcribe_piece(self, piece: PreparedAudio, options: DecodeOptions) -> Transcript: ...


class PieceDiarizer(Protocol):
    """Speaker embeddings piece by piece, then who spoke when (a Diarizer deployment's handle,
    or serve_app.diarize.LocalDiarizer)."""

    async def embed(self, piece: PreparedAudio) -> Windows: ...

    async def diarize(self, windows: Windows, options: DiarizeOptions) -> Diarization: ...


class Burst:
    """What a Preprocessor replica is decoding. ``starting``: recordings opened but whose
    first piece is not yet sent, a hint to the Transcriber's batcher that more requests are
    about to arrive (``PreparedAudio.preparing``); ``decoding``: recordings with audio left
    to decode (what the Preprocessor's autoscaling counts, not those only waiting for text)."""

    def __init__(self) -> None:
        self.starting = 0
        self.decoding = 0


async def run(
    preprocessor: AudioPreprocessor,
    source: bytes | BlobSource,
    open_blob: Callable[[str], object] | None,
    transcriber_for: Callable[[str], PieceTranscriber],
    target: str | ModelChoice,
    options: DecodeOptions,
    prepare: PrepareOptions,
    burst: Burst | None = None,
    *,
    diarizer: PieceDiarizer | None = None,
    speakers: DiarizeOptions | None = None,
) -> AsyncIterator[Part | Finished]:
    """The transcription of ``source`` with ``target`` (a served model, or auto's choice);
    with ``speakers``, each piece's speaker embeddings are computed beside its transcription
    and ``Finished`` says who spoke when."""
    burst = burst or Burst()
    burst.starting += 1
    burst.decoding += 1
    starting = decoding = True
    stream: PieceStream | None = None
    sender: asyncio.Task | None = None
    queue: asyncio.Queue = asyncio.Queue(maxsize=IN_FLIGHT)
    embeds: list[asyncio.Future] = []
    if speakers is None:
        diarizer = None
    try:
        opened = source if isinstance(source, bytes) else await _open(open_blob, source.key)
        stream = await asyncio.to_thread(preprocessor.open, opened, prepare)
        first = await asyncio.to_thread(stream.next_piece)
        model, options, probability = await _choose(stream, first, transcriber_for, target, options)
        transcriber = transcriber_for(model)

        async def send() -> None:
            nonlocal decoding
            piece = first
            while piece is not None:
                piece.preparing = burst.starting
                if diarizer is not None:
                    embeds.append(asyncio.ensure_future(diarizer.embed(piece)))
                await queue.put((piece, asyncio.ensure_future(transcriber.transcribe_piece(piece, options))))
                piece = await asyncio.to_thread(stream.next_piece)
            burst.decoding -= 1
            decoding = False
            await queue.put(None)

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


async def _open(open_blob, key: str):
    try:
        return await asyncio.to_thread(open_blob, key)
    except BlobNotFound:
        raise ServiceError(f"The job's audio ({key}) is missing from storage.", code="audio_missing") from None


async def _choose(stream: PieceStream, first: PreparedAudio | None, transcriber_for, target, options: DecodeOptions):
    """The model, the options with the language settled, and the detection's probability."""
    probability = None
    if isinstance(target, ModelChoice):
        language = options.language
        detector = target.detector() if language is None and first is not None else None
        if detector is not None:
            language, probability = await transcriber_for(detector).detect_language(first)
        model = target.pick(stream.declared, language)
        if language is not None and transcriber_for(model).multilingual:
            options = replace(options, language=language)
    else:
        model = target
    transcriber = transcriber_for(model)
    if not transcriber.multilingual:
        options = replace(options, language="en")
    elif options.language is None and first is not None:
        # Once per recording, so that all its pieces decode in the same language.
        language, probability = await transcriber.detect_language(first)
        options = replace(options, language=language)
    return model, options, probability


async def collect(items: AsyncIterator[Part | Finished], on_part=None) -> tuple[Transcript, Finished]:
    """The whole transcript of a ``run`` (``on_part`` awaited with each part as it comes)."""
    parts: list[Transcript] = []
    done: Finished | None = None
    async for item in items:
        if isinstance(item, Finished):
            done = item
        else:
            parts.append(item.transcript)
            if on_part is not None:
                await on_part(item)
    if done is None:
        raise ServiceError("The transcription ended without its last message.", status_code=500)
    return assemble(parts, done), done


def assemble(parts: list[Transcript], done: Finished) -> Transcript:
    whole = _joined(parts, done)
    return label(whole, done.diarization) if done.diarization is not None else whole


def _joined(parts: list[Transcript], done: Finished) -> Transcript:
    if not parts:
        return Transcript(
            text="",
            segments=[],
            language=done.language,
            language_probability=done.language_probability,
            duration=done.duration,
        )
    whole = join(parts)
    notes = {p.alignment_note for p in parts if p.alignment_note}
    return replace(
        whole,
        language=done.language,
        language_probability=done.language_probability,
        duration=done.duration,
        word_timestamps=next((p.word_timestamps for p in parts if p.word_timestamps), None),
        alignment_note="; ".join(sorted(notes)) or None,
    )
