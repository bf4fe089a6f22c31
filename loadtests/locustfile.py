"""Locust load test with the seed's user mix, on real speech from tests/data.

    locust -f loadtests/locustfile.py --headless -u 16 -r 4 -t 2m --host http://127.0.0.1:8000

With keys required, pass one: ``STT_LOCUST_KEY=stt_... locust ...``.

Tasks (weights): short sync upload x3, long async upload then poll until done x1, list jobs x2,
health x1, job status x1 (the cheap calls must stay fast while the models are saturated).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from locust import HttpUser, between, task

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SHORT = [(p.name, p.read_bytes()) for p in sorted(DATA.glob("harvard_0*.wav"))]
LONG = ("harvard_long.flac", (DATA / "harvard_long.flac").read_bytes())
POLL_TIMEOUT_S = 300


class TranscriptionUser(HttpUser):
    wait_time = between(0.5, 2.0)
    job_ids: list[str] = []

    def on_start(self):
        if key := os.environ.get("STT_LOCUST_KEY"):  # a service that wants keys
            self.client.headers["Authorization"] = f"Bearer {key}"

    @task(3)
    def short_sync_upload(self):
        name, data = random.choice(SHORT)
        self.client.post(
            "/api/v1/transcriptions",
            files={"file": (name, data)},
            data={"model": "tiny.en"},
            name="upload short (sync)",
        )

    @task(1)
    def long_async_upload_and_poll(self):
        response = self.client.post(
            "/api/v1/transcriptions", files={"file": LONG}, data={"sync": "false"}, name="upload long (async)"
        )
        if response.status_code != 202:
            return
        job_id = response.json()["id"]
        TranscriptionUser.job_ids = (TranscriptionUser.job_ids + [job_id])[-50:]
        deadline = time.monotonic() + POLL_TIMEOUT_S
        while time.monotonic() < deadline:
            status = self.client.get(f"/api/v1/transcriptions/{job_id}", name="job status").json()["status"]
            if status in ("COMPLETED", "FAILED"):
                break
            time.sleep(2)

    @task(2)
    def list_jobs(self):
        self.client.get("/api/v1/transcriptions", params={"limit": 20}, name="list jobs")

    @task(1)
    def health(self):
        self.client.get("/api/v1/health", name="health")

    @task(1)
    def job_status(self):
        if TranscriptionUser.job_ids:
            job_id = random.choice(TranscriptionUser.job_ids)
            self.client.get(f"/api/v1/transcriptions/{job_id}", name="job status")
