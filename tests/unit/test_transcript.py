"""The transcript types: a piece's transcript moved to the recording's time."""

from __future__ import annotations


def test_a_pieces_segments_move_to_the_recordings_time_seek_included():
    """A piece's transcript shifted to where the piece starts: times and words by the seconds,
    ``seek`` by Whisper's frames (FRAMES_PER_SECOND, the one definition the engine's packing
    uses too)."""
    from serve_app.core.transcript import FRAMES_PER_SECOND, Segment, Transcript, Word, shifted

    word = Word("hi", 0.5, 0.9, 0.9)
    piece = Transcript("hi", [Segment(0, 0.4, 1.0, "hi", -0.1, seek=40, words=[word])], "en", None, 1.0)
    moved = shifted(piece, 30.25)
    [segment] = moved.segments
    assert (segment.start, segment.end, segment.seek) == (30.65, 31.25, 40 + round(30.25 * FRAMES_PER_SECOND))
    assert (segment.words[0].start, segment.words[0].end) == (30.75, 31.15)
    assert shifted(piece, 0) is piece and piece.segments[0].start == 0.4  # the piece itself unchanged
