"""Telephone audio as it arrives: the same recorded speech as G.711, narrowband MP3 and AMR (#29).

    python -m loadtests.telephone [--models tiny.en,base] [--prompts 60]

Recorded speech from testkit/real_speech.py, re-encoded with PyAV's FFmpeg as phone systems
record and send it (testkit.real_speech.TELEPHONE: 8 kHz 16-bit PCM, G.711 u-law and A-law WAV,
MP3 at 8 kHz and 16 kbit/s, AMR-NB at 12.2 kbit/s), and transcribed by the service's Pipeline
in this process (LocalBackend, as loadtests/nonspeech.py), the language given:

- **wideband**: 16 kHz recordings (Asterisk's English prompts as its G.722 package records
  them, LibriVox's five utterances, pyannote's conversation) against their own 8 kHz copies:
  what the telephone band and codec cost;
- **prompts**: Asterisk's English prompts, recorded at 8 kHz: the 16-bit PCM originals against
  the same prompts in each codec.

Prints WER per kind and its difference from the original; writes docs/telephone.json. #29 asks
for u-law and A-law within 1 WER point of the 16 kHz copies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from loadtests.nonspeech import pipeline, transcribe
from testkit import real_speech

DOCS = Path(__file__).resolve().parents[1] / "docs"


def encoded(clips: list[real_speech.Clip], kind: str) -> list[real_speech.Clip]:
    return [
        real_speech.Clip(c.set, c.name, Path(f"{kind}/{c.name}"), c.text, c.language, real_speech.telephone(c, kind))
        for c in clips
    ]


async def measure(args) -> dict:
    models = args.models.split(",")
    pipe, _ = pipeline(models)
    sets = {
        "wideband": [real_speech.wideband(c) for c in real_speech.sample("asterisk-en", args.prompts)]
        + list(real_speech.clips("librivox"))
        + list(real_speech.clips("pyannote")),
        "prompts": real_speech.sample("asterisk-en", args.prompts),
    }
    rows, texts = [], {}
    for model in models:
        for set_name, clips in sets.items():
            heard = texts[f"{model}/{set_name}/original"] = await transcribe(pipe, model, clips, True)
            original = real_speech.corpus_wer(list(zip([c.text for c in clips], heard)), "en")
            row = {"model": model, "set": set_name, "clips": len(clips), "original": round(original, 2)}
            for kind in real_speech.TELEPHONE:
                if kind == "pcm-8k" and set_name == "prompts":
                    continue  # the prompts are 8 kHz PCM already
                copies = encoded(clips, kind)
                heard = texts[f"{model}/{set_name}/{kind}"] = await transcribe(pipe, model, copies, True)
                row[kind] = round(real_speech.corpus_wer([(c.text, t) for c, t in zip(clips, heard)], "en"), 2)
            rows.append(row)
            kinds = [k for k in real_speech.TELEPHONE if k in row]
            changes = ", ".join(f"{k} {row[k]:.2f} ({row[k] - row['original']:+.2f})" for k in kinds)
            print(f"{model} {set_name} ({len(clips)} clips): original {row['original']:.2f}; {changes}", flush=True)
    names = {set_name: [c.name for c in clips] for set_name, clips in sets.items()}
    kinds = {k: list(v) for k, v in real_speech.TELEPHONE.items()}
    return {"rows": rows, "kinds": kinds, "clips": names, "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--prompts", type=int, default=60, help="English prompts to re-encode")
    args = parser.parse_args()
    report = asyncio.run(measure(args))
    (DOCS / "telephone.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
