"""Webhook deliveries to real receivers on loopback: to the address that was checked, bounded
against receivers that flood or trickle, queued within bounds, signed with a secret a tenant
can rotate (its generations kept in the real PostgreSQL)."""

from __future__ import annotations

import asyncio
import socket
import threading
import tracemalloc
import types
import uuid

from serve_app.jobs import webhook_secrets
from serve_app.jobs.store import JobStore
from serve_app.jobs.webhook_targets import check_webhook_url
from serve_app.jobs.webhooks import WebhookSender, tenant_secret, verify
from tests.webhook_receiver import WebhookReceiver

MASTER = "delivery-test-master-secret"
LOOPBACK = ["127.0.0.0/8"]


class Recorder:  # records attempts in memory, where a test needs no database
    def __init__(self):
        self.attempts = []

    async def record_delivery(self, *args):
        self.attempts.append(args)


def target(url: str, tenant: str = "acme", request_id: str | None = None):
    return types.SimpleNamespace(id=uuid.uuid4(), user_id=tenant, webhook_url=url, request_id=request_id)


class HostileReceiver:
    """A raw TCP receiver that reads the request, then answers as ``behave(conn)`` does;
    records how many bytes it managed to send before the sender hung up."""

    def __init__(self, behave):
        self.behave, self.sent, self.hung_up, self.closing = behave, 0, threading.Event(), threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        with conn:
            conn.recv(65536)  # the request (small: headers and a JSON body)
            try:
                self.behave(self, conn)
            except OSError:  # the sender closed the connection: what these receivers wait for
                pass
            self.hung_up.set()

    def close(self):
        self.closing.set()
        self.server.close()


def flood(receiver, conn):
    """A 2xx, then 100 MB of body, as fast as the sender takes it."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n")
    chunk = b"x" * 65536
    while receiver.sent < 100 * 2**20:
        receiver.sent += conn.send(chunk)


def trickle(receiver, conn):
    """The status line a byte at a time, one every 0.2 s: each read is quick, the answer never ends."""
    for byte in b"HTTP/1.1 200 OK\r\n" * 1000:
        receiver.sent += conn.send(bytes([byte]))
        if receiver.closing.wait(0.2):  # the receiver's pace (not a wait of the test's)
            return


async def test_delivery_to_a_receiver_by_name_goes_to_the_checked_address():
    receiver = WebhookReceiver()
    port = receiver.server.server_address[1]
    job = target(f"http://localhost:{port}/hook", request_id="pin-1")
    sender, recorder = WebhookSender(MASTER, max_attempts=1, allow=LOOPBACK), Recorder()
    try:
        assert await check_webhook_url(job.webhook_url, LOOPBACK) == "127.0.0.1"
        assert await sender.deliver(recorder, job, "job.completed", {"id": str(job.id)})
    finally:
        receiver.close()
    [delivery] = receiver.deliveries
    assert delivery["headers"]["Host"] == f"localhost:{port}" and delivery["headers"]["X-Request-ID"] == "pin-1"
    assert verify(tenant_secret(MASTER, "acme"), delivery["headers"], delivery["body"])
    assert recorder.attempts[0][-1] is True


async def test_a_receiver_streaming_100_mb_costs_the_worker_no_more_than_a_socket_read():
    receiver = HostileReceiver(flood)
    sender, recorder = WebhookSender(MASTER, max_attempts=1, allow=LOOPBACK), Recorder()
    tracemalloc.start()
    try:
        delivered = await sender.deliver(recorder, target(receiver.url), "job.completed", {"ok": True})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await asyncio.to_thread(receiver.hung_up.wait, 60)
        receiver.close()
    # recorded: (id, url, event, attempt, status, error, delivered)
    assert delivered and recorder.attempts[0][4] == 200  # the status counts; the body is never read
    assert peak < 1 * 2**20, f"the delivery held {peak} bytes"
    # What the receiver got out before the sender hung up is what loopback's socket buffers hold.
    assert receiver.hung_up.is_set() and receiver.sent < 32 * 2**20, receiver.sent


async def test_a_receiver_trickling_bytes_is_cut_at_the_attempts_deadline():
    receiver = HostileReceiver(trickle)
    sender = WebhookSender(MASTER, max_attempts=2, backoff_seconds=0, timeout_seconds=2, allow=LOOPBACK)
    recorder = Recorder()
    try:
        delivered = await sender.deliver(recorder, target(receiver.url), "job.completed", {"ok": True})
        await asyncio.to_thread(receiver.hung_up.wait, 60)
    finally:
        receiver.close()
    assert not delivered
    assert [(a[3], a[4], a[5]) for a in recorder.attempts] == [
        (1, None, "no answer within 2 s"),
        (2, None, "no answer within 2 s"),
    ]
    assert receiver.hung_up.is_set()


async def test_deliveries_wait_in_a_bounded_queue_with_a_share_per_tenant():
    held = threading.Event()
    receiver = HostileReceiver(lambda r, conn: held.wait(120))  # answers nothing until released
    sender = WebhookSender(MASTER, max_attempts=1, allow=LOOPBACK, max_pending=3, max_pending_per_tenant=2)
    recorder = Recorder()
    try:
        accepted = [sender.submit(recorder, target(receiver.url, "flood"), "job.completed", {}) for _ in range(3)]
        assert accepted == [True, True, False]  # the tenant's share is 2
        assert sender.submit(recorder, target(receiver.url, "small"), "job.completed", {})
        assert not sender.submit(recorder, target(receiver.url, "third"), "job.completed", {})  # all 3 taken
        assert sender.pending == 3
    finally:
        held.set()
        await sender.close()
        receiver.close()
    assert sender.pending == 0


async def test_a_tenant_rotates_its_secret_and_both_sign_for_a_day(job_dsn):
    store = JobStore(job_dsn)
    await store.migrate()
    receiver = WebhookReceiver()
    sender = WebhookSender(MASTER, max_attempts=1, allow=LOOPBACK, secrets=store)
    try:
        assert await webhook_secrets.current(store, "acme") == (0, False)
        assert await webhook_secrets.rotate(store, "acme") == 1
        assert await webhook_secrets.current(store, "acme") == (1, True)
        assert await webhook_secrets.current(store, "other") == (0, False)  # a rotation is the tenant's own
        assert await sender.deliver(Recorder(), target(receiver.url), "job.completed", {"n": 1})
    finally:
        receiver.close()
        await store.close()
    [delivery] = receiver.deliveries
    headers, body = delivery["headers"], delivery["body"]
    assert len(headers["webhook-signature"].split()) == 2
    assert verify(tenant_secret(MASTER, "acme", 1), headers, body)
    assert verify(tenant_secret(MASTER, "acme", 0), headers, body)  # the previous one, for a day
    assert tenant_secret(MASTER, "acme", 1) != tenant_secret(MASTER, "acme", 0)
