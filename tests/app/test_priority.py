"""The cpu profile's priorities, as a process started with them really gets them (a subprocess)."""

from __future__ import annotations

from pathlib import Path

from deployments.profiles import load_profile


def test_the_cpu_profile_runs_throughput_work_as_sched_idle_threads_and_their_children_follow():
    """Decode, VAD and speaker embeddings give way to the API and clients at once (SCHED_IDLE);
    the threads a deployment starts later (CTranslate2's, the decode pool's) inherit it. Run in
    a child process: this one keeps its priority."""
    import subprocess
    import sys

    profile = load_profile("cpu")
    assert profile.transcriber.idle and profile.preprocessor.idle and profile.diarizer.idle
    assert not load_profile("gpu").transcriber.idle  # a GPU decode leaves the cores to the rest
    code = (
        "import os, threading\n"
        "from deployments.priority import lower_priority\n"
        "lower_priority(19, True)\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append((os.sched_getscheduler(0),"
        " os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))))\n"
        "t.start(); t.join()\n"
        "print(seen[0] == (os.SCHED_IDLE, 19))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True", out.stderr
