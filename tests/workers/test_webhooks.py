"""Signed webhooks: snapshot created, job succeeded / failed; retried with backoff, every attempt logged."""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import seed_judged_pairs
from workers.models import Job, Webhook, WebhookDelivery
from workers.services.jobs import job_execute
from workers.services.webhooks import webhook_deliver, webhook_emit, webhook_signature, webhook_signature_valid

SECRET = "s3cret-for-tests"


class Receiver:
    """A real HTTP endpoint that checks each request's signature and answers with the next planned status."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                valid = webhook_signature_valid(
                    secret=SECRET,
                    timestamp=int(self.headers["X-VidPref-Timestamp"]),
                    body=body,
                    signature=self.headers["X-VidPref-Signature"],
                )
                receiver.requests.append({"headers": dict(self.headers), "body": json.loads(body), "valid": valid})
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status if valid else 401)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"try later")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=(200,)):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for server in made:
        server.close()


def test_signature_is_hmac_of_timestamp_and_body_and_rejects_tampering_and_replays():
    body = b'{"event":"job.failed"}'
    signature = webhook_signature(secret=SECRET, timestamp=1_764_000_000, body=body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert webhook_signature_valid(
        secret=SECRET, timestamp=1_764_000_000, body=body, signature=signature, now=1_764_000_100
    )
    assert not webhook_signature_valid(
        secret=SECRET, timestamp=1_764_000_000, body=body + b" ", signature=signature, now=1_764_000_100
    )
    assert not webhook_signature_valid(
        secret="other", timestamp=1_764_000_000, body=body, signature=signature, now=1_764_000_100
    )
    assert not webhook_signature_valid(
        secret=SECRET, timestamp=1_764_000_000, body=body, signature=signature, now=1_764_000_000 + 3600
    )  # an old request replayed


def test_failed_job_is_announced_retried_until_delivered_and_logged(
    db, receiver, settings, django_capture_on_commit_callbacks
):
    settings.VIDPREF_WEBHOOK_ATTEMPTS = 4
    endpoint = receiver(statuses=(500, 503, 200))
    Webhook.objects.create(name="ops", url=endpoint.url, secret=SECRET, events=["job.failed"])
    Webhook.objects.create(name="muted", url=endpoint.url, secret=SECRET, events=["snapshot.created"])
    job = Job.objects.create(kind=Job.Kind.EXPORT)
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError):
        job_execute(job_id=job.pk, work=lambda _job: (_ for _ in ()).throw(RuntimeError("disk full")))
    delivery = WebhookDelivery.objects.get()  # only the webhook that wants job.failed
    assert len(callbacks) == 1 and delivery.event == "job.failed" and delivery.payload["data"]["id"] == job.pk
    assert [webhook_deliver(delivery_id=delivery.pk) for _ in range(3)] == [False, False, True]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 3, 200)
    assert all(request["valid"] for request in endpoint.requests)
    assert {r["headers"]["X-VidPref-Delivery"] for r in endpoint.requests} == {str(delivery.pk)}
    assert endpoint.requests[0]["body"]["data"]["error"] == "RuntimeError: disk full"


def test_a_receiver_that_keeps_failing_ends_as_failed_with_the_reason(db, settings):
    settings.VIDPREF_WEBHOOK_ATTEMPTS = 2
    webhook = Webhook.objects.create(name="gone", url="http://127.0.0.1:9/nothing-listens", secret=SECRET)
    delivery = WebhookDelivery.objects.create(webhook=webhook, event="job.succeeded", payload={"data": {}})
    assert not webhook_deliver(delivery_id=delivery.pk) and not webhook_deliver(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 2 and "ConnectionError" in delivery.error
    with pytest.raises(ValueError, match="unknown webhook event"):
        webhook_emit(event="job.exploded", data={})


def test_worker_delivers_snapshot_and_job_events_after_an_export(celery_worker_process, receiver):
    endpoint = receiver()
    Webhook.objects.create(name="training-cluster", url=endpoint.url, secret=SECRET)  # every event
    from django.db import connection

    with connection.cursor() as cursor:
        seed_judged_pairs(cursor, pairs=30, judgments_per_pair=3)
    from workers.services.snapshots import snapshot_job_create

    name = f"hooked-{uuid.uuid4().hex[:8]}"
    job = snapshot_job_create(params={"name": name}, created_by=None)
    deadline = time.monotonic() + 120
    while len(endpoint.requests) < 2:
        assert time.monotonic() < deadline, celery_worker_process.log_path.read_text()[-3000:]
        time.sleep(0.3)
    events = {request["body"]["event"]: request for request in endpoint.requests}
    assert set(events) == {"snapshot.created", "job.succeeded"} and all(r["valid"] for r in endpoint.requests)
    assert events["snapshot.created"]["body"]["data"]["name"] == name
    assert events["job.succeeded"]["body"]["data"]["id"] == job.pk
    assert WebhookDelivery.objects.filter(status="delivered").count() == 2
