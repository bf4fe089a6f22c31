"""A webhook delivery to a real receiver on loopback goes to the address that was checked."""

from __future__ import annotations

from serve_app.jobs.webhooks import check_webhook_url


async def test_delivery_to_a_receiver_by_name_goes_to_the_checked_address():
    import types
    import uuid

    from serve_app.jobs.webhooks import WebhookSender, tenant_secret, verify
    from tests.webhook_receiver import WebhookReceiver

    receiver = WebhookReceiver()
    port = receiver.server.server_address[1]
    recorded = []

    class Store:  # records attempts; this test needs no database
        async def record_delivery(self, *args):
            recorded.append(args)

    job = types.SimpleNamespace(
        id=uuid.uuid4(), user_id="acme", webhook_url=f"http://localhost:{port}/hook", request_id="pin-1"
    )
    sender = WebhookSender("pinning-test-master-secret", max_attempts=1, allow=["127.0.0.0/8"])
    try:
        assert await check_webhook_url(job.webhook_url, ["127.0.0.0/8"]) == "127.0.0.1"
        assert await sender.deliver(Store(), job, "job.completed", {"id": str(job.id)})
    finally:
        receiver.close()
    [delivery] = receiver.deliveries
    assert delivery["headers"]["Host"] == f"localhost:{port}" and delivery["headers"]["X-Request-ID"] == "pin-1"
    assert verify(
        tenant_secret("pinning-test-master-secret", "acme"), delivery["body"], delivery["headers"]["X-STT-Signature"]
    )
    assert recorded[0][-1] is True
