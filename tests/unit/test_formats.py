"""Subtitle and text renderings parse with the real parsers users have."""

from __future__ import annotations

import io

import srt
import webvtt

from serve_app.core.formats import timestamp, to_srt, to_text, to_tsv, to_vtt
from serve_app.core.transcript import Segment

SEGMENTS = [
    Segment(0, 0.0, 2.5, " Hello there.", -0.1),
    Segment(1, 2.5, 3661.25, "General Kenobi!", -0.2),
    Segment(2, 3662.0, 3663.0, "   ", -0.3),  # blank text is dropped, not rendered empty
]


def test_timestamp():
    assert timestamp(3661.25) == "01:01:01.250"
    # to the nearest millisecond, carrying into seconds and minutes; never negative
    assert timestamp(1.0004, decimal=",") == "00:00:01,000"
    assert timestamp(1.0006, decimal=",") == "00:00:01,001"
    assert timestamp(59.9996) == "00:01:00.000"
    assert timestamp(-0.2) == "00:00:00.000"
    assert timestamp(75.5, always_hours=False) == "01:15.500"


def test_srt_parses():
    subs = list(srt.parse(to_srt(SEGMENTS)))
    assert [s.content for s in subs] == ["Hello there.", "General Kenobi!"]
    assert subs[1].end.total_seconds() == 3661.25


def test_vtt_parses():
    captions = webvtt.from_buffer(io.StringIO(to_vtt(SEGMENTS))).captions
    assert [c.text for c in captions] == ["Hello there.", "General Kenobi!"]
    assert captions[1].end == "01:01:01.250"


def test_text_and_tsv():
    assert to_text(SEGMENTS) == "Hello there.\nGeneral Kenobi!\n"
    rows = to_tsv(SEGMENTS).splitlines()
    assert rows[0] == "start\tend\ttext" and rows[2] == "2500\t3661250\tGeneral Kenobi!"
