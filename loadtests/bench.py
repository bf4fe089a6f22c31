"""Side-by-side benchmark, one command, one run, same audio, model and machine:

  (a) WhisperX's default pipeline run by hand (pyannote VAD, batch 8)
  (b) faster-whisper's BatchedInferencePipeline run by hand (batch 8): the strongest bare baseline
  (c) the service over HTTP at concurrency 1, 4 and 16

For each: audio seconds per wall second (x real time), p50/p95 request latency, WER against the
corpus transcripts; plus a lone ~5 s request, (b) against the service at concurrency 1.
Prints a table and writes docs/PERFORMANCE.md and docs/performance.png.

    python -m loadtests.bench                 # starts the service itself (local Ray, temp data)
    python -m loadtests.bench --url http://127.0.0.1:8000   # measure a running service
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from loadtests.corpus import build  # noqa: E402
from serve_app.audio.decode import decode  # noqa: E402
from testkit.speech import corpus_wer  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
MODEL, BEAM, BATCH, THREADS = "tiny.en", 5, 8, 2
LONE = "harvard_04.wav"  # 4.96 s


@dataclass
class Run:
    name: str
    audio_seconds: float
    wall_seconds: float
    latencies: list[float] = field(default_factory=list)
    wer: float = 0.0

    @property
    def xrt(self) -> float:
        return self.audio_seconds / self.wall_seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def model_dir(model: str = MODEL) -> str:
    """The folder of ``model``'s CTranslate2 files, as the service's catalog resolves it."""
    from serve_app.asr.catalog import ModelCatalog
    from serve_app.core.settings import Settings

    s = Settings()
    return ModelCatalog.load(s.catalog_path, s.cache_dir).resolve(model)


def sequential(name: str, corpus: dict, transcribe) -> Run:
    total = sum(v["seconds"] for v in corpus.values())
    pairs, latencies = [], []
    started = time.perf_counter()
    for path, meta in corpus.items():
        t0 = time.perf_counter()
        text = transcribe(Path(path).read_bytes())
        latencies.append(time.perf_counter() - t0)
        pairs.append((meta["text"], text))
    return Run(name, total, time.perf_counter() - started, latencies, corpus_wer(pairs))


def whisperx_default(corpus: dict) -> tuple[Run, callable]:
    import whisperx

    pipe = whisperx.load_model(
        model_dir(),
        "cpu",
        compute_type="int8",
        language="en",
        vad_method="pyannote",
        threads=THREADS,
        asr_options={"beam_size": BEAM},
    )

    def transcribe(data: bytes) -> str:
        result = pipe.transcribe(decode(data), batch_size=BATCH, language="en")
        return " ".join(s["text"].strip() for s in result["segments"])

    transcribe(Path(next(iter(corpus))).read_bytes())  # warm-up
    return sequential("(a) WhisperX default pipeline", corpus, transcribe), transcribe


def faster_whisper_batched(corpus: dict) -> tuple[Run, callable]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    pipe = BatchedInferencePipeline(WhisperModel(model_dir(), device="cpu", compute_type="int8", cpu_threads=THREADS))

    def transcribe(data: bytes) -> str:
        segments, _ = pipe.transcribe(decode(data), language="en", beam_size=BEAM, batch_size=BATCH)
        return " ".join(s.text.strip() for s in segments)

    transcribe(Path(next(iter(corpus))).read_bytes())
    return sequential("(b) faster-whisper batched", corpus, transcribe), transcribe


def service_run(url: str, corpus: dict, concurrency: int) -> Run:
    items = list(corpus.items())
    total = sum(v["seconds"] for _, v in items)

    # One client, kept-alive connections, like any load generator: a new httpx.Client per
    # request builds an SSL context each time and took ~5% of the 2 cores from the service.
    client = httpx.Client(base_url=url, timeout=900, limits=httpx.Limits(max_connections=concurrency))

    def one(item):
        path, meta = item
        t0 = time.perf_counter()
        r = client.post(
            "/api/v1/transcriptions",
            files={"file": (Path(path).name, Path(path).read_bytes())},
            data={"model": MODEL, "language": "en", "beam_size": str(BEAM)},
        )
        r.raise_for_status()
        return time.perf_counter() - t0, meta["text"], r.json()["text"]

    started = time.perf_counter()
    with client, ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(one, items))
    wall = time.perf_counter() - started
    return Run(
        f"(c) service, concurrency {concurrency}",
        total,
        wall,
        [o[0] for o in out],
        corpus_wer([(o[1], o[2]) for o in out]),
    )


def lone_latency(transcribe, data: bytes, n: int = 7) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        transcribe(data)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def start_service(data_dir: str, args: dict | None = None) -> tuple[str, callable]:
    import ray
    from ray import serve

    from deployments.app import APP_NAME, build_app
    from deployments.local_cluster import free_port, local_cluster_env, stop_local_cluster
    from deployments.worker_setup import worker_runtime_env

    port = free_port()
    root = str(Path(__file__).resolve().parents[1])
    run_dir = local_cluster_env(free_ports=True)  # as `make run` (deployments/local_cluster.py) starts it
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        runtime_env=worker_runtime_env({"HF_HUB_OFFLINE": "1", "PYTHONPATH": root}),
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"data_dir": data_dir, **(args or {})}), name=APP_NAME, route_prefix="/")

    def stop():
        stop_local_cluster(run_dir)

    return f"http://127.0.0.1:{port}", stop


def _c16(runs: list[Run]) -> Run:
    best = [r for r in runs if "16" in r.name]
    return best[0] if best else runs[-1]


def report(runs: list[Run], lone: dict[str, float], corpus: dict, extra: list[str] = ()) -> str:
    a, b = runs[0], runs[1]
    c16 = _c16(runs)
    short = sum(1 for p in corpus if p.endswith(".wav"))
    lines = [
        "# Performance",
        "",
        f"Measured by `python -m loadtests.bench` on {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, {os.cpu_count()} cores, no GPU. Model {MODEL} int8, beam {BEAM}, "
        f"{THREADS} CPU threads, batch {BATCH} for the bare pipelines. Corpus: {short} short files and "
        f"{len(corpus) - short} long ones, {a.audio_seconds:.0f} s of Piper speech "
        "(loadtests/corpus.py). All rows come from the same run of the bench on the same machine.",
        "",
        "| pipeline | x real time | p50 latency (s) | p95 latency (s) | WER % |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(f"| {r.name} | {r.xrt:.1f} | {r.pct(0.5):.2f} | {r.pct(0.95):.2f} | {r.wer:.2f} |")
    lines += [
        "",
        "Ratios (the rows above):",
        "",
        f"- service at concurrency 16 / (b): **{c16.xrt / b.xrt:.2f}x** throughput (target >= 1.0)",
        f"- service at concurrency 16 / (a): **{c16.xrt / a.xrt:.2f}x** throughput (target >= 3)",
        f"- service WER - (b) WER: **{c16.wer - b.wer:+.2f}** points (target <= +1)",
        f"- lone ~5 s request, p50: service {lone['service']:.2f} s, (b) {lone['bare']:.2f} s: "
        f"**{lone['service'] / lone['bare']:.2f}x** (target <= 2)",
        "",
        *extra,
        "",
        "![throughput](performance.png)",
        "",
    ]
    return "\n".join(lines)


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = [r.name.replace(", concurrency", "\nconc.") for r in runs]
    bars = ax.barh(names, [r.xrt for r in runs], color=["#999", "#777"] + ["#2a7"] * (len(runs) - 2))
    ax.bar_label(bars, fmt="%.1fx")
    ax.invert_yaxis()
    ax.set_xlabel("audio seconds per wall second (x real time), higher is better")
    ax.set_title(f"{MODEL} int8 on {os.cpu_count()} CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def one_round(args, corpus: dict, lone_bytes: bytes) -> tuple[list[Run], dict[str, float]]:
    """(a), (b) and the lone (b) latency alone on the machine, then the service's rows."""
    runs, lone = [], {}
    if not args.skip_whisperx:
        run, _ = whisperx_default(corpus)
        runs.append(run)
        print(f"{run.name}: {run.xrt:.1f}x, WER {run.wer:.2f}", flush=True)
    else:
        runs.append(Run("(a) WhisperX default pipeline (skipped)", 1, float("inf")))
    run, bare = faster_whisper_batched(corpus)
    runs.append(run)
    print(f"{run.name}: {run.xrt:.1f}x, WER {run.wer:.2f}", flush=True)
    lone["bare"] = lone_latency(bare, lone_bytes)
    del bare

    stop = None
    url = args.url
    if url is None:
        url, stop = start_service(tempfile.mkdtemp(prefix="stt-bench-"))
    try:
        with httpx.Client(base_url=url, timeout=900) as client:
            warm = {"file": (LONE, lone_bytes)}
            client.post("/api/v1/transcriptions", files=warm, data={"model": MODEL}).raise_for_status()

            def via_service(data: bytes) -> str:
                r = client.post(
                    "/api/v1/transcriptions",
                    files={"file": (LONE, data)},
                    data={"model": MODEL, "language": "en", "beam_size": str(BEAM)},
                )
                return r.json()["text"]

            lone["service"] = lone_latency(via_service, lone_bytes)
        for c in [int(x) for x in args.concurrency.split(",")]:
            run = service_run(url, corpus, c)
            runs.append(run)
            print(f"{run.name}: {run.xrt:.1f}x, p50 {run.pct(0.5):.2f}s, WER {run.wer:.2f}", flush=True)
    finally:
        if stop:
            stop()
    return runs, lone


def median_round(rounds: list[tuple[list[Run], dict[str, float]]]) -> tuple[list[Run], dict[str, float]]:
    """Per row, the run with the median throughput; the lone latencies' medians."""
    runs = []
    for i in range(len(rounds[0][0])):
        ordered = sorted((r[0][i] for r in rounds), key=lambda run: run.xrt)
        runs.append(ordered[len(ordered) // 2])
    lone = {k: statistics.median(r[1][k] for r in rounds) for k in rounds[0][1]}
    return runs, lone


def round_lines(rounds: list[tuple[list[Run], dict[str, float]]]) -> list[str]:
    """The ratios of each round: its rows were measured minutes apart, so they pair best."""
    if len(rounds) < 2:
        return []
    lines = [
        "",
        f"Each round ({len(rounds)}) on its own: the table above shows, per row, the round with the "
        "median throughput; the ratios below pair rows of the same round.",
        "",
        "| round | (a) | (b) | c16 | c16/(a) | c16/(b) | WER c16 - (b) |",
        "|---|---|---|---|---|---|---|",
    ]
    paired = []
    for n, (runs, _) in enumerate(rounds, 1):
        a, b, c16 = runs[0], runs[1], _c16(runs)
        paired.append(c16.xrt / a.xrt)
        lines.append(
            f"| {n} | {a.xrt:.1f} | {b.xrt:.1f} | {c16.xrt:.1f} | {c16.xrt / a.xrt:.2f} | "
            f"{c16.xrt / b.xrt:.2f} | {c16.wer - b.wer:+.2f} |"
        )
    lines += ["", f"Median of the paired c16/(a) ratios: **{statistics.median(paired):.2f}x**."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="measure this running service instead of starting one")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat everything; the box's speed drifts, medians and paired ratios hold",
    )
    parser.add_argument("--skip-whisperx", action="store_true", help="leave out (a) (slow)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    corpus = build()
    lone_bytes = (Path(__file__).resolve().parents[1] / "tests" / "data" / LONE).read_bytes()
    print(f"corpus: {len(corpus)} files, {sum(v['seconds'] for v in corpus.values()):.0f} s", flush=True)
    rounds = []
    for n in range(args.rounds):
        if args.rounds > 1:
            print(f"-- round {n + 1} of {args.rounds}", flush=True)
        rounds.append(one_round(args, corpus, lone_bytes))
    runs, lone = median_round(rounds)
    text = report(runs, lone, corpus, round_lines(rounds))
    print("\n" + text)
    if not args.no_write:
        # Sections written by hand after the marker (Locust figures, GPU runs) are kept.
        marker = "<!-- end of bench output -->"
        old = (DOCS / "PERFORMANCE.md").read_text() if (DOCS / "PERFORMANCE.md").exists() else ""
        kept = old.split(marker, 1)[1] if marker in old else "\n"
        (DOCS / "PERFORMANCE.md").write_text(text + marker + kept)
        plot(runs, DOCS / "performance.png")
        (DOCS / "performance.json").write_text(
            json.dumps(
                [{"name": r.name, "xrt": r.xrt, "p50": r.pct(0.5), "p95": r.pct(0.95), "wer": r.wer} for r in runs]
                + [
                    {
                        "lone": lone,
                        "rounds": [[{"name": r.name, "xrt": r.xrt, "wer": r.wer} for r in rr] for rr, _ in rounds],
                    }
                ],
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
