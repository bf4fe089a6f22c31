"""Transcript renderings: plain text, SubRip, WebVTT, TSV and JSON."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol

Format = Literal["json", "text", "srt", "vtt", "tsv"]
FORMATS: tuple[Format, ...] = ("json", "text", "srt", "vtt", "tsv")
MEDIA_TYPES = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
}
# The file extension of each format, and the format a file extension asks for (downloads take either).
EXTENSIONS: dict[str, str] = {"json": "json", "text": "txt", "srt": "srt", "vtt": "vtt", "tsv": "tsv"}
BY_EXTENSION: dict[str, str] = {ext: fmt for fmt, ext in EXTENSIONS.items()}


class TimedText(Protocol):
    start: float
    end: float
    text: str


def timestamp(seconds: float, *, decimal: str = ".", always_hours: bool = True) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _said(segment: TimedText) -> str:
    """The segment's text, after its speaker in brackets when diarized."""
    speaker = getattr(segment, "speaker", None)
    return f"[{speaker}] {segment.text.strip()}" if speaker else segment.text.strip()


def to_text(segments: Iterable[TimedText]) -> str:
    return "\n".join(_said(s) for s in segments if s.text.strip()) + "\n"


def to_srt(segments: Iterable[TimedText]) -> str:
    blocks = [
        f"{n}\n{timestamp(s.start, decimal=',')} --> {timestamp(s.end, decimal=',')}\n{_said(s)}\n"
        for n, s in enumerate((s for s in segments if s.text.strip()), start=1)
    ]
    return "\n".join(blocks)


def _voiced(segment: TimedText) -> str:
    """WebVTT's voice span (<v Name>) for a diarized segment; '<', '>' and '&' escaped."""
    text = segment.text.strip().replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    speaker = getattr(segment, "speaker", None)
    if not speaker:
        return text
    name = speaker.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<v {name}>{text}"


def to_vtt(segments: Iterable[TimedText]) -> str:
    blocks = [f"{timestamp(s.start)} --> {timestamp(s.end)}\n{_voiced(s)}\n" for s in segments if s.text.strip()]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_tsv(segments: Iterable[TimedText]) -> str:
    segments = [s for s in segments if s.text.strip()]
    diarized = any(getattr(s, "speaker", None) for s in segments)
    head = "start\tend\tspeaker\ttext" if diarized else "start\tend\ttext"
    rows = [head] + [
        f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t"
        + (f"{getattr(s, 'speaker', None) or ''}\t" if diarized else "")
        + s.text.strip().replace(chr(9), " ")
        for s in segments
    ]
    return "\n".join(rows) + "\n"


RENDERERS = {"text": to_text, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}
