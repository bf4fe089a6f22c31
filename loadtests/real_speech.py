"""Word error rates on recorded human speech: the service against bare faster-whisper (#29).

    python -m loadtests.real_speech [--per-set 30] [--sets asterisk-en,librivox,...]

The corpus is testkit/real_speech.py's (Debian packages: Asterisk's telephone prompts in five
languages, LibriVox read speech). For each set and each model that can transcribe it (tiny.en:
the English sets; base: all), the same clips go through

- **bare**: faster-whisper's ``WhisperModel.transcribe`` on the same model files, beam 5, the
  clip's language given, one clip at a time; and
- **service**: the Ray Serve application as `make run` starts it (HAProxy in front), one sync
  request per clip over HTTP, the same model, beam 5 and language;

then once more on ``base`` with no language given, on both, to see which language each
detects. Last, the recorded non-speech (music on hold, tones) through both, English given on
tiny.en and nothing on base: every word that comes back is invented. WER per set is over the
set's words (jiwer), after the normalisation of testkit.real_speech. Prints a table; writes
docs/real_speech.json. The service's verdict (#29: no more than 0.5 points worse than bare) is
read off the table, not asserted here.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import httpx

from loadtests.bench import model_dir, start_service
from testkit import real_speech

DOCS = Path(__file__).resolve().parents[1] / "docs"
BEAM = 5
MODELS = {"tiny.en": lambda clip: clip.language == "en", "base": lambda clip: True}


def bare(model: str, clips: list[real_speech.Clip], detect: bool) -> dict[str, tuple[str, str]]:
    """name -> (text, language) from bare faster-whisper, one clip at a time."""
    from faster_whisper import WhisperModel, decode_audio

    whisper = WhisperModel(model_dir(model), device="cpu", compute_type="int8", cpu_threads=2)
    out = {}
    for clip in clips:
        segments, info = whisper.transcribe(
            decode_audio(io.BytesIO(clip.audio())), beam_size=BEAM, language=None if detect else clip.language
        )
        out[clip.set + "/" + clip.name] = (" ".join(s.text.strip() for s in segments), info.language)
    return out


def served(url: str, model: str, clips: list[real_speech.Clip], detect: bool) -> dict[str, tuple[str, str]]:
    out = {}
    with httpx.Client(base_url=url, timeout=900) as client:
        for clip in clips:
            data = {"model": model, "beam_size": str(BEAM)} | ({} if detect else {"language": clip.language})
            response = client.post("/api/v1/transcriptions", files={"file": (clip.path.name, clip.audio())}, data=data)
            response.raise_for_status()
            body = response.json()
            out[clip.set + "/" + clip.name] = (body["text"], body["language"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-set", type=int, default=30, help="clips per set, spread over it")
    parser.add_argument("--sets", default=",".join(real_speech.SETS))
    args = parser.parse_args()
    corpus = {name: real_speech.sample(name, args.per_set) for name in args.sets.split(",")}
    every = [clip for clips in corpus.values() for clip in clips]
    # Non-speech as clips with an empty reference: English given to tiny.en, base detects.
    quiet = real_speech.nonspeech()

    runs = {}  # (who, model, detect) -> name -> (text, language)
    started = time.perf_counter()
    for model, takes in MODELS.items():
        clips = [c for c in every if takes(c)]
        runs["bare", model, False] = bare(model, clips, detect=False)
        if model == "base":
            runs["bare", model, True] = bare(model, clips, detect=True)
        runs["bare", model, "quiet"] = bare(model, quiet, detect=model == "base")
    bare_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as data_dir:
        url, stop = start_service(data_dir, {"models": list(MODELS), "beam_size": BEAM})
        try:
            started = time.perf_counter()
            for model, takes in MODELS.items():
                clips = [c for c in every if takes(c)]
                runs["service", model, False] = served(url, model, clips, detect=False)
                if model == "base":
                    runs["service", model, True] = served(url, model, clips, detect=True)
                runs["service", model, "quiet"] = served(url, model, quiet, detect=model == "base")
            service_s = time.perf_counter() - started
        finally:
            stop()

    rows = []
    for set_name, clips in corpus.items():
        language = clips[0].language
        seconds = sum(c.seconds() for c in clips)
        for model, takes in MODELS.items():
            if not takes(clips[0]):
                continue
            row = {"set": set_name, "model": model, "clips": len(clips), "seconds": round(seconds, 1)}
            for who in ("bare", "service"):
                texts = runs[who, model, False]
                row[f"{who}_wer"] = round(
                    real_speech.corpus_wer([(c.text, texts[f"{c.set}/{c.name}"][0]) for c in clips], language), 2
                )
                if model == "base":
                    found = runs[who, model, True]
                    row[f"{who}_detected"] = sum(found[f"{c.set}/{c.name}"][1] == language for c in clips)
            row["service_minus_bare"] = round(row["service_wer"] - row["bare_wer"], 2)
            rows.append(row)

    lines = [
        "| set | model | clips | audio (s) | WER bare | WER service | service - bare | language found (bare/service) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        detected = f"{r['bare_detected']} / {r['service_detected']} of {r['clips']}" if "bare_detected" in r else ""
        lines.append(
            f"| {r['set']} | {r['model']} | {r['clips']} | {r['seconds']} | {r['bare_wer']:.2f} | "
            f"{r['service_wer']:.2f} | {r['service_minus_bare']:+.2f} | {detected} |"
        )
    quiet_seconds = sum(c.seconds() for c in quiet)
    invented = {}
    lines += ["", f"Non-speech: {len(quiet)} files, {quiet_seconds / 60:.1f} min; words that came back (invented):", ""]
    lines += ["| model | bare | service | service's words |", "|---|---|---|---|"]
    for model in MODELS:
        counts = {}
        for who in ("bare", "service"):
            texts = [text for text, _ in runs[who, model, "quiet"].values()]
            counts[who] = sum(len(real_speech.normalize(t, "en").split()) for t in texts)
        said = " / ".join(t for t, _ in runs["service", model, "quiet"].values() if t.strip())[:200]
        invented[model] = counts
        lines.append(f"| {model} | {counts['bare']} | {counts['service']} | {said or '(none)'} |")
    print("\n".join(lines))
    print(f"\nbare passes {bare_s:.0f} s, service passes {service_s:.0f} s")
    report = {
        "rows": rows,
        "per_set": args.per_set,
        "nonspeech": {"files": len(quiet), "seconds": round(quiet_seconds, 1), "invented_words": invented},
        "texts": _texts(runs),
    }
    (DOCS / "real_speech.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")


def _texts(runs: dict) -> dict:
    """Every hypothesis, to read what went wrong where."""
    kind = {False: "given", True: "detect", "quiet": "nonspeech"}
    return {f"{who}/{model}/{kind[detect]}": texts for (who, model, detect), texts in runs.items()}


if __name__ == "__main__":
    main()
