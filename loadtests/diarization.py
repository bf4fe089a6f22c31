"""Speaker diarization: error rate, speaker counts and word attribution on built conversations,
the clustering threshold chosen by measurement, and what diarization costs on the service.

    python -m loadtests.diarization [--rounds 3] [--two 10] [--three 6]

Part 1 (in-process, the library code the Diarizer deployment runs): conversations among
distinct voices (testkit/conversations.py: Piper and espeak-ng, pauses, short replies, noise),
DER by pyannote.metrics (collar 0.25 s) for a sweep of clustering thresholds with the number of
speakers not given, and given; then word-level speaker accuracy with tiny.en.
Part 2 (the Ray Serve app, cpu profile): the same conversations sync with diarize=true and
without, alternating, ``--rounds`` times (processing time ratio, same run); and plain requests'
throughput (the bench corpus at concurrency 16) with the Diarizer deployed vs with
STT_DIARIZATION=false, each in its own start of the service in this run.
Writes docs/diarization.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from loadtests import corpus as corpus_mod  # noqa: E402
from loadtests.bench import service_run, start_service  # noqa: E402
from testkit import conversations  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
CACHE = Path(__file__).resolve().parent / ".corpus" / "conversations"
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5)


def error_rates(found, threshold: float, given: bool) -> dict:
    from pyannote.metrics.diarization import DiarizationErrorRate

    from serve_app.diarization import clustering

    out = {}
    for count in (2, 3):
        metric = DiarizationErrorRate(collar=0.25)
        right = total = 0
        for talk, windows in found:
            if len(talk.speakers) != count:
                continue
            bounds = (count, count) if given else (None, None)
            result = clustering.diarize(windows, *bounds, threshold=threshold)
            metric(conversations.reference(talk), conversations.hypothesis(result.turns))
            right += len(result.speakers) == count
            total += 1
        out[f"{count}_speakers"] = {"der": round(abs(metric), 4), "count_right": f"{right}/{total}"}
    return out


async def word_accuracy(talks) -> dict:
    from pyannote.metrics.diarization import DiarizationErrorRate

    from serve_app.asr.catalog import ModelCatalog
    from serve_app.core.settings import Settings
    from serve_app.diarization import speakers
    from serve_app.transcription.assembly import Assembly
    from serve_app.transcription.backends import LocalBackend
    from serve_app.transcription.request import TranscriptionRequest

    settings = Settings()
    catalog = ModelCatalog.load(settings.catalog_path, settings.cache_dir)
    backend = LocalBackend(settings, catalog)
    resolved = TranscriptionRequest.parse(model="tiny.en", diarize=True).resolve(
        catalog.get("tiny.en"), default_beam_size=5
    )
    right = total = 0
    for talk in talks:
        items = backend.transcribe(
            talk.path.read_bytes(), "tiny.en", resolved.decode, resolved.prepare, resolved.diarize
        )
        transcript = await Assembly().collect(items)
        turns = [speakers.SpeakerTurn(s.start, s.end, s.speaker) for s in transcript.segments]
        mapping = DiarizationErrorRate().optimal_mapping(conversations.reference(talk), conversations.hypothesis(turns))
        r, t = conversations.word_accuracy(talk, transcript.words, mapping)
        right, total = right + r, total + t
    return {"words": total, "right": right, "accuracy": round(right / total, 4)}


def library_part(talks) -> dict:
    from serve_app.audio.decode import decode
    from serve_app.diarization import clustering
    from serve_app.diarization.encoder import SpeakerEncoder

    encoder = SpeakerEncoder()
    started = time.perf_counter()
    found = [(talk, encoder.embed(decode(talk.path.read_bytes()))) for talk in talks]
    embed_s = time.perf_counter() - started
    sweep = {str(t): error_rates(found, t, given=False) for t in THRESHOLDS}
    chosen = clustering.DISTANCE_THRESHOLD
    report = {
        "conversations": {
            "two": sum(len(t.speakers) == 2 for t in talks),
            "three": sum(len(t.speakers) == 3 for t in talks),
        },
        "audio_s": round(sum(t.seconds for t in talks), 1),
        "embed_x_real_time": round(sum(t.seconds for t in talks) / embed_s, 1),
        "threshold": chosen,
        "sweep_speakers_not_given": sweep,
        "speakers_not_given": error_rates(found, chosen, given=False),
        "speakers_given": error_rates(found, chosen, given=True),
        "word_attribution": asyncio.run(word_accuracy(talks)),
    }
    return report


def timed(client: httpx.Client, talk, diarize: bool) -> float:
    data = {"model": "tiny.en", "language": "en"} | ({"diarize": "true"} if diarize else {})
    response = client.post("/api/v1/transcriptions", files={"file": ("talk.wav", talk.path.read_bytes())}, data=data)
    response.raise_for_status()
    return response.json()["processing_time"]


def service_part(talks, rounds: int) -> dict:
    bench = corpus_mod.build()
    short = {k: v for k, v in bench.items() if v["seconds"] < 30}
    out: dict = {"rounds": []}
    with tempfile.TemporaryDirectory() as data_dir:
        url, stop = start_service(data_dir, {"diarization": False})
        try:
            service_run(url, dict(list(short.items())[:16]), 16)  # warm
            plain_off = [service_run(url, short, 16).xrt for _ in range(rounds)]
        finally:
            stop()
    with tempfile.TemporaryDirectory() as data_dir:
        url, stop = start_service(data_dir, {"diarization": True})
        try:
            service_run(url, dict(list(short.items())[:16]), 16)
            with httpx.Client(base_url=url, timeout=900) as client:
                timed(client, talks[0], True)  # warm the Diarizer
                plain_on = []
                for n in range(rounds):
                    plain_on.append(service_run(url, short, 16).xrt)
                    without = sum(timed(client, t, False) for t in talks)
                    with_ = sum(timed(client, t, True) for t in talks)
                    out["rounds"].append(
                        {
                            "plain_s": round(without, 2),
                            "diarize_s": round(with_, 2),
                            "cost": round(with_ / without, 3),
                            "c16_xrt_diarizer_off": round(plain_off[n], 1),
                            "c16_xrt_diarizer_on": round(plain_on[n], 1),
                        }
                    )
        finally:
            stop()
    out["cost_median"] = statistics.median(r["cost"] for r in out["rounds"])
    out["plain_throughput_ratio"] = round(statistics.median(plain_on) / statistics.median(plain_off), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--two", type=int, default=10)
    parser.add_argument("--three", type=int, default=6)
    parser.add_argument("--skip-service", action="store_true")
    args = parser.parse_args()
    talks = conversations.test_set(CACHE, count_two=args.two, count_three=args.three)
    report = {"library": library_part(talks)}
    print(json.dumps(report, indent=1))
    if not args.skip_service:
        report["service"] = service_part(talks[:6], args.rounds)
        print(json.dumps(report["service"], indent=1))
    (DOCS / "diarization.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
