"""A run's parts gathered into the whole transcript: the one loop that consumes a pipeline run,
for sync requests (which pass each part on as it comes) and jobs alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

from serve_app.core.errors import ServiceError
from serve_app.core.transcript import Transcript, join
from serve_app.diarization.speakers import label
from serve_app.transcription.pipeline import Finished, Part


class Assembly:
    """The parts of one run as they come (``follow``), then the whole (``transcript``)."""

    def __init__(self) -> None:
        self.parts: list[Transcript] = []
        self.done: Finished | None = None

    async def follow(
        self, items: AsyncIterator[Part | Finished], on_part: Callable[[Part], Awaitable[None]] | None = None
    ) -> AsyncIterator[Part]:
        """Each part, after ``on_part`` (progress) has seen it; raises if the run ends without
        its ``Finished``."""
        async for item in items:
            if isinstance(item, Finished):
                self.done = item
                continue
            self.parts.append(item.transcript)
            if on_part is not None:
                await on_part(item)
            yield item
        if self.done is None:
            raise ServiceError(
                "The transcription ended without its last message.", code="internal_error", status_code=500
            )

    async def collect(
        self, items: AsyncIterator[Part | Finished], on_part: Callable[[Part], Awaitable[None]] | None = None
    ) -> Transcript:
        """The whole run at once."""
        async for _ in self.follow(items, on_part):
            pass
        return self.transcript()

    def transcript(self) -> Transcript:
        """The parts joined (segments renumbered), with the recording's language and duration,
        and the speakers when it was diarized."""
        done = self.done
        if not self.parts:
            whole = Transcript(
                text="",
                segments=[],
                language=done.language,
                language_probability=done.language_probability,
                duration=done.duration,
            )
        else:
            notes = {p.alignment_note for p in self.parts if p.alignment_note}
            whole = replace(
                join(self.parts),
                language=done.language,
                language_probability=done.language_probability,
                duration=done.duration,
                word_timestamps=next((p.word_timestamps for p in self.parts if p.word_timestamps), None),
                alignment_note="; ".join(sorted(notes)) or None,
            )
        return label(whole, done.diarization) if done.diarization is not None else whole
