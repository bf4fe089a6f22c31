"""The accuracy guard (#29): recorded human speech and real non-speech through the service's
path, against bare faster-whisper in the same test.

The corpus is testkit/real_speech.py's, from Debian packages (.ci/run installs them): Asterisk's
English telephone prompts (8 kHz, recorded voice), LibriVox read speech, pyannote.audio's
two-person telephone conversation; music on hold, alert sounds, tones, DTMF, noise and room
tone. The service's path is the Pipeline in this process (the code the Preprocessor and
Transcriber deployments host), its requests sent at once so that they batch and share windows
as served ones do; bare is faster-whisper's ``WhisperModel.transcribe`` on the same loaded
model, one clip at a time, beam 5. The whole slice takes about half a minute.

These tests fail when the service's word error rate is more than 0.5 points over bare's, when
the last words of a clip are lost where bare has them, or when any word comes back from
non-speech. (Shown failing: with the guards off, ``engine.guards = None``, the non-speech test
gets "Mhm.", "Ooh", "Thank you.", "Okay." back; see the #29 note.)
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest

from serve_app.audio.preprocess import PrepareOptions
from serve_app.core.settings import Settings
from serve_app.core.transcript import DecodeOptions
from serve_app.transcription.assembly import Assembly
from testkit import real_speech

MODEL = "tiny.en"
EN = DecodeOptions(language="en", beam_size=5)
MARGIN = 0.5  # WER points the service may be over bare faster-whisper
DER_REAL_VOICES = 0.15  # 0.09 measured (collar 0.25 s)


@pytest.fixture(scope="module")
def speech() -> list[real_speech.Clip]:
    return (
        real_speech.sample("asterisk-en", 16)
        + list(real_speech.clips("librivox"))[:2]
        + list(real_speech.clips("pyannote"))
    )


@pytest.fixture(scope="module")
def engine(models):
    return models.transcribers[MODEL].runner.engine


@pytest.fixture(scope="module")
async def texts(backend_for, engine, speech) -> tuple[list[str], list[str]]:
    """The speech slice's texts: (the service's, bare faster-whisper's)."""
    theirs = await asyncio.to_thread(bare, engine, speech)
    return await served(backend_for, speech), theirs


async def served(backend_for, clips: list[real_speech.Clip], vad: bool = True) -> list[str]:
    pipeline = backend_for(Settings(diarization=False)).pipeline
    results = await asyncio.gather(
        *(Assembly().collect(pipeline.run(c.audio(), MODEL, EN, PrepareOptions(vad=vad), None)) for c in clips)
    )
    return [r.text for r in results]


def bare(engine, clips: list[real_speech.Clip]) -> list[str]:
    from faster_whisper import decode_audio

    texts = []
    for clip in clips:
        segments, _ = engine.model.transcribe(decode_audio(str(clip.path)), beam_size=5, language="en")
        texts.append(" ".join(s.text.strip() for s in segments))
    return texts


def test_the_service_is_as_accurate_as_bare_whisper_on_recorded_speech(texts, speech):
    ours, theirs = texts
    service = real_speech.corpus_wer([(c.text, t) for c, t in zip(speech, ours)], "en")
    baseline = real_speech.corpus_wer([(c.text, t) for c, t in zip(speech, theirs)], "en")
    worse = [
        (c.name, real_speech.normalize(c.text, "en"), t, b)
        for c, t, b in zip(speech, ours, theirs)
        if real_speech.wer(c.text, t, "en") > real_speech.wer(c.text, b, "en")
    ]
    assert service <= baseline + MARGIN, (service, baseline, worse)


def test_the_last_words_of_a_recording_are_kept(texts, speech):
    """Every clip's last two words are in the service's text (heard right or wrong) wherever
    bare faster-whisper has them: a tail lost to the VAD's end padding, a shared window's boundary or the alignment
    that hands packed words back fails here."""
    ours, theirs = texts
    cut = []
    for clip, text, baseline in zip(speech, ours, theirs):
        lost = real_speech.lost_tail(clip.text, text, "en")
        if lost and not real_speech.lost_tail(clip.text, baseline, "en"):
            cut.append((clip.name, lost, text))
    assert not cut


async def test_no_word_is_invented_on_recorded_and_generated_nonspeech(backend_for):
    clips = real_speech.nonspeech(("tones", "effects", "generated")) + [
        c for c in real_speech.nonspeech(("music",)) if c.name == "macroform-the_simplicity"
    ]
    assert sum(c.seconds() for c in clips) > 10 * 60
    texts = await served(backend_for, clips)
    said = [(c.set, c.name, t) for c, t in zip(clips, texts) if t.strip()]
    assert not said


async def test_with_the_vad_off_the_guards_alone_keep_sound_effects_wordless(backend_for):
    """Every 30 s decoded, as `vad=false` asks: Whisper's "Thank you." and "you" on alert sounds
    are dropped by the decode's own evidence (serve_app/asr/guards.py)."""
    clips = real_speech.nonspeech(("effects",))[::4]
    texts = await served(backend_for, clips, vad=False)
    said = [(c.name, t) for c, t in zip(clips, texts) if t.strip()]
    assert not said


async def test_a_soft_talker_after_a_loud_one_is_heard(backend_for):
    """Prompts where a second talker is 20-30 dB softer (testkit.real_speech.quiet_speech):
    without each speech region levelled on its own, Whisper wrote the loud talker's words only
    (tiny.en lost 80 of 336 words on twelve such pairs; 2 with it)."""
    import jiwer

    clips = real_speech.quiet_speech(6)
    texts = await served(backend_for, clips)
    refs = [real_speech.normalize(c.text, "en") for c in clips]
    out = jiwer.process_words(refs, [real_speech.normalize(t, "en") or "<empty>" for t in texts])
    assert out.deletions <= 0.05 * sum(len(r.split()) for r in refs), list(zip(refs, texts))


def test_the_corpus_states_its_sources_and_refuses_to_run_without_them(monkeypatch, tmp_path):
    english = real_speech.clips("asterisk-en")
    assert len(english) > 200 and all(c.text and c.path.exists() for c in english)
    assert not any("..." in c.text or "(" in c.text for c in english)  # continuation marks, notes
    effects = real_speech.effects()
    assert effects and not any(c.name.startswith("audio-channel-") for c in effects)  # spoken
    generated = dict(real_speech.generated())
    assert generated == dict(real_speech.generated())  # seeded: the same every run
    samples = np.abs(np.frombuffer(generated["room-tone"][44:], "<i2"))
    assert np.percentile(samples, 99) < 32767 * 0.01 < samples.max()  # a quiet room, its clicks
    monkeypatch.setattr(real_speech, "SOUNDS", tmp_path)
    real_speech.clips.cache_clear()
    try:
        with pytest.raises(real_speech.MissingPackage, match="apt-get install asterisk-core-sounds-es-wav"):
            real_speech.clips("asterisk-es")
    finally:
        real_speech.clips.cache_clear()


async def test_two_real_voices_on_the_phone_are_told_apart(backend_for, catalog):
    """pyannote.audio's sample, two women on a telephone line, against its RTTM: the Diarizer's
    turns within 15% DER (collar 0.25 s; 9% measured), and the service's transcript of it with
    two speakers and its words."""
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    from serve_app.audio.decode import decode
    from serve_app.diarization.clustering import diarize
    from serve_app.diarization.encoder import SpeakerEncoder
    from serve_app.transcription.request import TranscriptionRequest

    [clip] = real_speech.clips("pyannote")
    turns = diarize(SpeakerEncoder().embed(decode(clip.audio()))).turns
    truth, found = Annotation(), Annotation()
    for start, end, speaker in real_speech.pyannote_turns():
        truth[Segment(start, end)] = speaker
    for turn in turns:
        found[Segment(turn.start, turn.end)] = turn.speaker
    assert abs(DiarizationErrorRate(collar=0.25)(truth, found)) <= DER_REAL_VOICES

    asked = TranscriptionRequest.parse(model=MODEL, diarize=True, timestamps=True)
    resolved = asked.resolve(catalog.get(MODEL), default_beam_size=5)
    transcript = await Assembly().collect(
        backend_for().transcribe(clip.audio(), MODEL, resolved.decode, resolved.prepare, resolved.diarize)
    )
    assert len(transcript.speakers) == 2, transcript.speakers
    assert real_speech.wer(clip.text, transcript.text, "en") < 20


def test_one_real_voice_stays_one_speaker():
    """Diarization's other error on real voices: one reader's five LibriVox utterances, and
    twelve of one Asterisk voice's prompts, each heard as a single speaker."""
    from serve_app.audio.decode import decode
    from serve_app.diarization.clustering import diarize
    from serve_app.diarization.encoder import SpeakerEncoder

    encoder = SpeakerEncoder()
    for clips in (list(real_speech.clips("librivox")), real_speech.sample("asterisk-en", 12)):
        pause = np.zeros(8000, np.float32)
        samples = np.concatenate([part for c in clips for part in (decode(c.audio()), pause)])
        assert len(diarize(encoder.embed(samples)).speakers) == 1, clips[0].set


async def test_telephone_audio_is_heard_as_well_as_the_same_speech_at_16_khz(backend_for):
    """Asterisk's English prompts as its G.722 package records them (16 kHz) against their 8 kHz
    copies as phone systems store and send them: G.711 u-law and A-law WAV, AMR-NB, narrowband
    MP3. Each decoded (the duration right) and its words within 3 WER points on this slice of
    ~100 words (two words); loadtests/telephone.py measures 1 point on 66 clips."""
    import av

    clips = [real_speech.wideband(c) for c in real_speech.sample("asterisk-en", 10)]
    original = real_speech.corpus_wer(list(zip([c.text for c in clips], await served(backend_for, clips))), "en")
    for kind in ("mulaw", "alaw", "amr", "mp3-8k"):
        copies = [
            real_speech.Clip(c.set, c.name, c.path, c.text, c.language, real_speech.telephone(c, kind)) for c in clips
        ]
        with av.open(io.BytesIO(copies[0].data)) as container:
            assert container.streams.audio[0].rate == 8000
        heard = await served(backend_for, copies)
        wer = real_speech.corpus_wer([(c.text, t) for c, t in zip(clips, heard)], "en")
        assert wer <= original + 3, (kind, wer, original)
