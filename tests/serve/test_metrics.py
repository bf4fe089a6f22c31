"""Prometheus metrics: a real scrape of the node's metrics port after real requests.

The counters must move by exactly what was done (three sync transcriptions, two async jobs, a
missing job), read with prometheus_client's own parser, beside Ray Serve's built-in metrics.
"""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from testkit.speech import audio

from .test_jobs import submit, wait_all


def scrape(service) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(service.metrics_url, timeout=30).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels`` (all replicas)."""
    wanted = set(labels.items())
    return sum(value for (n, series), value in samples.items() if n == name and wanted <= series)


def settled(service, timeout: float = 60) -> dict:
    """A scrape once nothing is running and the service's metrics in two scrapes a few seconds
    apart agree (the replicas report every second; what earlier tests did has all arrived)."""
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        active = service.run(lambda store: store.stats())
        now = scrape(service)
        ours = {key: value for key, value in now.items() if key[0].startswith("ray_stt_")}
        if not active["queue_depth"] and not active["processing"] and ours == previous:
            return now
        previous = ours
        time.sleep(3)
    raise AssertionError("metrics did not settle")


def test_counters_move_by_what_was_done(service):
    before = settled(service)
    durations = []
    with service.client() as client:
        for _ in range(3):
            response = client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_01.wav"))})
            assert response.status_code == 200, response.text
            durations.append(response.json()["duration"])
        assert client.get("/api/v1/transcriptions/00000000-0000-0000-0000-000000000000").status_code == 404
    ids = [submit(service, "harvard_02.wav"), submit(service, "harvard_03.wav")]
    done = wait_all(service, ids)
    durations_async = [done[i]["result"]["duration"] for i in ids]

    # Counters move when the work is done; the queue gauge when the JobWorker next looks at the
    # queue (at most once a second, or at its next poll), so it may lag them by a few seconds
    # (a CI run scraped 1.0 right after the fifth transcription was counted).
    deadline = time.monotonic() + 60
    while True:
        after = scrape(service)
        moved = total(after, "ray_stt_transcriptions_total") - total(before, "ray_stt_transcriptions_total")
        if (moved >= 5 and total(after, "ray_stt_queue_depth") == 0) or time.monotonic() > deadline:
            break
        time.sleep(1)

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    upload = "/api/v1/transcriptions"
    assert delta("ray_stt_requests_total", route=upload, model="tiny.en", status="200") == 3
    assert delta("ray_stt_requests_total", route=upload, model="tiny.en", status="202") == 2
    assert delta("ray_stt_requests_total", route="/api/v1/transcriptions/{job_id}", status="404") == 1
    assert delta("ray_stt_transcriptions_total", model="tiny.en", kind="sync") == 3
    assert delta("ray_stt_transcriptions_total", model="tiny.en", kind="async") == 2
    assert abs(delta("ray_stt_audio_seconds_total", kind="sync") - sum(durations)) < 0.01
    assert abs(delta("ray_stt_audio_seconds_total", kind="async") - sum(durations_async)) < 0.01
    assert delta("ray_stt_processing_seconds_count", model="tiny.en") == 5
    assert delta("ray_stt_real_time_factor_count", model="tiny.en") == 5
    # the histograms reach hours: the largest finite bucket of processing time is 8 h
    assert any(n == "ray_stt_processing_seconds_bucket" and ("le", "28800.0") in s for n, s in after)
    assert delta("ray_stt_jobs_finished_total", status="COMPLETED") == 5
    assert delta("ray_stt_decode_windows_count", model="tiny.en") >= 1  # packed: fewer calls than requests
    assert total(after, "ray_stt_queue_depth") == 0
    # Ray Serve's own metrics are on the same scrape
    assert total(after, "ray_serve_deployment_request_counter_total", deployment="Ingress") > 0


def test_no_label_takes_unbounded_values(service):
    """No job id, file name or tenant in any label of the service's metrics; routes as declared."""
    before = scrape(service)
    job_route, unmatched = {"route": "/api/v1/transcriptions/{job_id}"}, {"route": "unmatched"}
    with service.client() as client:
        client.get("/api/v1/transcriptions/not-a-job-at-all")
        client.get("/no/such/page/anywhere")
        declared = set(client.get("/openapi.json").json()["paths"])

    def counted(samples) -> bool:  # both requests reported by their replicas
        return all(
            total(samples, "ray_stt_requests_total", **labels) > total(before, "ray_stt_requests_total", **labels)
            for labels in (job_route, unmatched)
        )

    deadline = time.monotonic() + 60
    while not counted(after := scrape(service)):
        assert time.monotonic() < deadline, "the two requests were not counted within 60 s"
        time.sleep(0.5)
    for name, labels in after:
        if name.startswith("ray_stt_"):
            keys = {k for k, _ in labels}
            assert not keys & {"job_id", "id", "filename", "tenant", "user_id"}, (name, keys)
            route = dict(labels).get("route")
            assert route is None or route in declared | {"unmatched", "handle:transcribe"}, route
