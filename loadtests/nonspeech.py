"""Both sides of the no-speech trade: words invented on real non-speech, words lost on real speech (#29).

    python -m loadtests.nonspeech [--models tiny.en,base] [--per-set 30] [--sweep]

Runs the service's Pipeline in this process (LocalBackend: the same Preprocessor and
Transcriber code the deployments host, without Ray, so a setting can be changed between passes
on one loaded model) over testkit/real_speech.py's corpus:

- **invented**: every word that comes back from 28 minutes of non-speech (music on hold, tones,
  sound effects, DTMF, noise, room tone), per hour, with the VAD on (as served) and off (every
  30 s decoded: what the decode-side guards alone catch);
- **lost**: deleted words (jiwer's alignment against the references) on recorded speech (the
  English prompts, LibriVox, pyannote's conversation; on base also the es/fr/it/ru prompts),
  and on ``quiet_speech()``, prompts where a second talker is 20-30 dB softer;

each with the guards of serve_app/asr/guards.py off and on. ``--sweep`` adds, guards on, the
Silero VAD's threshold and end padding around the served values (tiny.en only). Prints tables
and writes docs/nonspeech.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import jiwer

from serve_app.asr.guards import SpeechGuards
from serve_app.audio.preprocess import PrepareOptions
from serve_app.audio.vad import SileroVad
from serve_app.core.transcript import DecodeOptions
from testkit import real_speech

DOCS = Path(__file__).resolve().parents[1] / "docs"
CONCURRENCY = 8  # requests in flight at once: they batch and pack as a served load does


def pipeline(models: list[str]):
    from serve_app.asr.catalog import ModelCatalog
    from serve_app.core.settings import Settings
    from serve_app.transcription.backends import LocalBackend, LocalModels

    settings = Settings(diarization=False, models=models)
    catalog = ModelCatalog.load(settings.catalog_path, settings.cache_dir)
    loaded = LocalModels(settings, catalog)
    return LocalBackend(settings, catalog, None, models=loaded).pipeline, loaded


async def transcribe(pipe, model: str, clips: list[real_speech.Clip], vad: bool) -> list[str]:
    from serve_app.transcription.assembly import Assembly

    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(clip: real_speech.Clip) -> str:
        options = DecodeOptions(language=clip.language if model.endswith(".en") or clip.text else None)
        async with gate:
            result = await Assembly().collect(pipe.run(clip.audio(), model, options, PrepareOptions(vad=vad), None))
        return result.text

    return await asyncio.gather(*(one(c) for c in clips))


def invented(clips: list[real_speech.Clip], texts: list[str]) -> dict:
    by_kind: dict[str, int] = {}
    said = []
    for clip, text in zip(clips, texts):
        words = len(real_speech.normalize(text, "en").split())
        by_kind[clip.set] = by_kind.get(clip.set, 0) + words
        if words:
            said.append(f"{clip.set}/{clip.name}: {text.strip()[:60]}")
    total = sum(by_kind.values())
    hours = sum(c.seconds() for c in clips) / 3600
    return {"words": total, "per_hour": round(total / hours, 1), "by_kind": by_kind, "said": said}


def lost(clips: list[real_speech.Clip], texts: list[str]) -> dict:
    refs = [real_speech.normalize(c.text, c.language) for c in clips]
    hyps = [real_speech.normalize(t, c.language) or "<empty>" for c, t in zip(clips, texts)]
    out = jiwer.process_words(refs, hyps)
    words = sum(len(r.split()) for r in refs)
    return {"words": words, "lost": out.deletions, "wer": round(100 * out.wer, 2)}


async def measure(args) -> dict:
    models = args.models.split(",")
    pipe, loaded = pipeline(models)
    quiet_audio = real_speech.nonspeech()
    soft = real_speech.quiet_speech(12)
    english = real_speech.sample("asterisk-en", args.per_set) + list(real_speech.clips("librivox"))
    english += list(real_speech.clips("pyannote"))
    others = [c for lang in ("es", "fr", "it", "ru") for c in real_speech.sample(f"asterisk-{lang}", args.per_set)]
    report: dict = {"nonspeech_minutes": round(sum(c.seconds() for c in quiet_audio) / 60, 1), "rows": []}
    for model in models:
        engine = loaded.transcribers[model].runner.engine
        speech = english + (others if not model.endswith(".en") else [])
        for guards in (False, True):
            engine.guards = SpeechGuards() if guards else None
            row = {"model": model, "guards": guards}
            started = time.perf_counter()
            for vad in (True, False):
                row[f"invented_vad_{'on' if vad else 'off'}"] = invented(
                    quiet_audio, await transcribe(pipe, model, quiet_audio, vad)
                )
            row["speech"] = lost(speech, await transcribe(pipe, model, speech, True))
            row["quiet_speech"] = lost(soft, await transcribe(pipe, model, soft, True))
            row["seconds"] = round(time.perf_counter() - started, 1)
            report["rows"].append(row)
            print(_line(row), flush=True)
        engine.guards = SpeechGuards()
    if args.sweep:
        report["sweep"] = await sweep(pipe, models[0], quiet_audio, soft, english)
    return report


async def sweep(pipe, model: str, quiet_audio, soft, english) -> list[dict]:
    """The VAD's threshold and end padding around the served values, guards on."""
    served = pipe.preprocessor.vad
    rows = []
    try:
        for threshold in (0.35, 0.5, 0.65):
            for pad in (200, 400, 600):
                pipe.preprocessor.vad = SileroVad(threshold=threshold, speech_pad_ms=pad)
                row = {"threshold": threshold, "speech_pad_ms": pad}
                row["invented"] = invented(quiet_audio, await transcribe(pipe, model, quiet_audio, True))
                row["speech"] = lost(english, await transcribe(pipe, model, english, True))
                row["quiet_speech"] = lost(soft, await transcribe(pipe, model, soft, True))
                rows.append(row)
                print(
                    f"VAD threshold {threshold} pad {pad} ms: invented {row['invented']['words']}, "
                    f"speech lost {row['speech']['lost']} (WER {row['speech']['wer']}), "
                    f"quiet lost {row['quiet_speech']['lost']} (WER {row['quiet_speech']['wer']})",
                    flush=True,
                )
    finally:
        pipe.preprocessor.vad = served
    return rows


def _line(row: dict) -> str:
    on, off = row["invented_vad_on"], row["invented_vad_off"]
    return (
        f"{row['model']} guards {'on ' if row['guards'] else 'off'}: invented {on['words']} "
        f"({on['per_hour']}/h) VAD on, {off['words']} ({off['per_hour']}/h) VAD off; "
        f"speech lost {row['speech']['lost']} of {row['speech']['words']} (WER {row['speech']['wer']}); "
        f"quiet speech lost {row['quiet_speech']['lost']} of {row['quiet_speech']['words']} "
        f"(WER {row['quiet_speech']['wer']}); {row['seconds']} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--per-set", type=int, default=30, help="prompts per asterisk language")
    parser.add_argument("--sweep", action="store_true", help="also sweep the VAD's threshold and padding")
    args = parser.parse_args()
    report = asyncio.run(measure(args))
    (DOCS / "nonspeech.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
