"""Whole sets of recorded prompts: the service's path against bare faster-whisper on every prompt (#29).

    python -m loadtests.real_speech_sets [--sets asterisk-es,asterisk-ru] [--model base]

loadtests/real_speech.py compares 30 clips a set over HTTP; 30 prompts are ~150-220 words, and
two runs of the same code on two boxes differed by up to 2 WER points a set (CTranslate2's int8
kernels differ by CPU). This runs every prompt of each set (218-247) through the service's
Pipeline in this process (LocalBackend, eight requests in flight so they pack) and through bare
faster-whisper (``WhisperModel.transcribe`` on the same loaded model, beam 5, language given,
one at a time), in the same run. Prints and writes docs/real_speech_sets.json (merged with
the sets already there).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path

from loadtests.nonspeech import pipeline, transcribe
from testkit import real_speech

DOCS = Path(__file__).resolve().parents[1] / "docs"


async def measure(sets: list[str], model: str) -> dict:
    from faster_whisper import decode_audio

    pipe, loaded = pipeline([model])
    whisper = loaded.transcribers[model].runner.engine.model
    out = {}
    for name in sets:
        clips = list(real_speech.clips(name))
        ours = await transcribe(pipe, model, clips, True)
        theirs = []
        for clip in clips:
            samples = decode_audio(io.BytesIO(clip.audio()))
            segments, _ = whisper.transcribe(samples, beam_size=5, language=clip.language)
            theirs.append(" ".join(s.text.strip() for s in segments))
        language = clips[0].language
        service = real_speech.corpus_wer([(c.text, t) for c, t in zip(clips, ours)], language)
        bare = real_speech.corpus_wer([(c.text, t) for c, t in zip(clips, theirs)], language)
        out[f"{name}/{model}"] = {
            "clips": len(clips),
            "bare_wer": round(bare, 2),
            "service_wer": round(service, 2),
            "service_minus_bare": round(service - bare, 2),
        }
        print(name, model, out[f"{name}/{model}"], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default=",".join(f"asterisk-{lang}" for lang in real_speech.ASTERISK_LANGUAGES))
    parser.add_argument("--model", default="base")
    args = parser.parse_args()
    found = asyncio.run(measure(args.sets.split(","), args.model))
    path = DOCS / "real_speech_sets.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(kept | found, indent=1) + "\n")


if __name__ == "__main__":
    main()
