"""The no-speech guards' rules on their own (serve_app/asr/guards.py); what they catch on real
non-speech, and what they cost on real speech, is tests/app/test_real_speech.py's."""

from __future__ import annotations

from serve_app.asr.guards import SpeechGuards, cut_loops

GUARDS = SpeechGuards()


def test_whispers_own_rule_needs_both_no_speech_and_unsure_words():
    assert GUARDS.invented(0.9, -1.5, None)
    assert not GUARDS.invented(0.9, -0.3, None)  # sure of its words: speech over noise
    assert not GUARDS.invented(0.3, -1.5, None)  # no words to judge by: kept


def test_unsure_words_drop_a_suspect_decode_only():
    # Seen on an Oxygen alert sound: "Thank you." at no-speech 0.42, log prob -1.13.
    assert GUARDS.invented(0.42, -1.13, [0.0, 0.97])
    # Real Spanish prompts base decoded badly ("Marki zero, para obtener, a juda."): kept.
    assert not GUARDS.invented(0.02, -0.67, [0.48, 0.29, 0.82, 0.73, 0.52, 0.55])
    assert not GUARDS.invented(0.2, -0.3, [0.1, 0.2])  # words unsure, decode sure: kept
    assert GUARDS.unsure([0.1, 0.5]) and GUARDS.unsure([0.01, 0.9, 0.9]) and not GUARDS.unsure([0.4, 0.5])
    assert not GUARDS.unsure([]) and not GUARDS.unsure(None)


def test_loops_are_cut_to_their_first_run_and_short_repeats_stay():
    thank_you = [100, 200, 13]  # " Thank", " you", "."
    assert cut_loops([5, 6] + thank_you * 20) == [5, 6] + thank_you
    assert cut_loops(thank_you * 10 + [100, 200]) == thank_you  # cut mid-run by the length limit
    assert cut_loops([7, 8] + [42] * 15 + [9]) == [7, 8, 42, 9]
    no_no_no = [3, 11, 3, 11, 3, 11]  # "no, no, no": 6 tokens, under a loop's 12
    assert cut_loops([1] + no_no_no + [2]) == [1] + no_no_no + [2]
    assert cut_loops([]) == []


def test_a_text_too_repetitive_after_its_loops_are_cut_is_dropped():
    assert GUARDS.too_repetitive(2.6, -0.8) and not GUARDS.too_repetitive(2.1, -0.8)
    # A sure decode is kept: Russian speech decoded right reaches 2.5 (two bytes a letter).
    assert not GUARDS.too_repetitive(2.54, -0.08)


def test_a_shared_windows_member_is_looked_at_again_before_its_words_are_dropped():
    # "Ooh." (0.39) on a window sound packed with speech: decoded again alone, where the
    # no-speech rule drops it; a member with sure words is left as it is.
    assert GUARDS.recheck([0.39]) and not GUARDS.invented(0.1, -0.2, [0.39])
    assert not GUARDS.recheck([0.9, 0.8, 0.95])
