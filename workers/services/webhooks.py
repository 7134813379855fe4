"""Signed webhooks: snapshot created, job succeeded, job failed — each delivery logged, retried with backoff.

Every request is a JSON POST with these headers::

    X-VidPref-Event: job.succeeded
    X-VidPref-Delivery: 42                       (the same on every retry of this delivery)
    X-VidPref-Timestamp: 1764062400              (unix seconds when this attempt was signed)
    X-VidPref-Signature: sha256=<hex>            HMAC-SHA256(secret, "<timestamp>.<body>")

A receiver recomputes the HMAC over the timestamp and the raw body with its copy of the secret, compares
in constant time (``webhook_signature_valid``), and rejects old timestamps to stop replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from workers.models import Webhook, WebhookDelivery
from workers.task_routes import WEBHOOK_DELIVERY_TASK

log = logging.getLogger(__name__)


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_signature_valid(
    *, secret: str, timestamp: int, body: bytes, signature: str, tolerance_s: float = 300.0, now: float | None = None
) -> bool:
    """A receiver's check: the signature matches and the timestamp is recent (no replays)."""
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(webhook_signature(secret=secret, timestamp=timestamp, body=body), signature)


def webhook_emit(*, event: str, data: dict) -> list[WebhookDelivery]:
    """Record a delivery for every active webhook that wants ``event``; each is sent once the surrounding
    transaction commits (a rolled-back job never announces itself)."""
    if event not in Webhook.Event.values:
        raise ValueError(f"unknown webhook event {event!r}; known: {', '.join(Webhook.Event.values)}")
    deliveries = []
    for webhook in Webhook.objects.filter(is_active=True):
        if not webhook.wants(event):
            continue
        payload = {"event": event, "created_at": timezone.now().isoformat(), "data": data}
        delivery = WebhookDelivery.objects.create(
            webhook=webhook, event=event, payload=json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
        )
        deliveries.append(delivery)
    if deliveries:
        ids = [delivery.pk for delivery in deliveries]
        transaction.on_commit(lambda: _send(ids))
    return deliveries


def _send(delivery_ids: list[int]) -> None:
    try:
        for pk in delivery_ids:
            current_app.send_task(WEBHOOK_DELIVERY_TASK.task, args=(pk,))
    except (OperationalError, OSError) as exc:  # the broker is down: webhooks_resend sends them later
        log.warning("webhook deliveries %s wait for the broker: %s", delivery_ids, exc)


def webhooks_resend(*, older_than_s: float = 60.0) -> list[int]:
    """Send deliveries that never left (the broker was down when their event happened)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    ids = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, attempts=0, created_at__lt=cutoff
        ).values_list("pk", flat=True)
    )
    if ids:
        _send(ids)
    return ids


def webhook_deliver(*, delivery_id: int) -> bool:
    """One attempt at POSTing a delivery. True when the receiver answered 2xx (or it was delivered before);
    every attempt's outcome is recorded on the delivery."""
    import requests

    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    if delivery.status == WebhookDelivery.Status.DELIVERED:
        return True
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "VidPref-Webhooks/1",
        "X-VidPref-Event": delivery.event,
        "X-VidPref-Delivery": str(delivery.pk),
        "X-VidPref-Timestamp": str(timestamp),
        "X-VidPref-Signature": webhook_signature(secret=delivery.webhook.secret, timestamp=timestamp, body=body),
    }
    delivery.attempts += 1
    delivery.last_attempt_at = timezone.now()
    try:
        response = requests.post(
            delivery.webhook.url,
            data=body,
            headers=headers,
            timeout=settings.VIDPREF_WEBHOOK_TIMEOUT_S,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        delivery.response_status = None
        delivery.error = f"attempt {delivery.attempts}: {type(exc).__name__}: {exc}"[:2000]
        ok = False
    else:
        delivery.response_status = response.status_code
        delivery.response_body = response.text[:2000]
        ok = 200 <= response.status_code < 300
        delivery.error = "" if ok else f"attempt {delivery.attempts}: the receiver answered {response.status_code}"
    if ok:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
    elif delivery.attempts >= settings.VIDPREF_WEBHOOK_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
    delivery.save()
    return ok


def webhook_retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: exponential backoff."""
    return settings.VIDPREF_WEBHOOK_BACKOFF_S * 2 ** max(0, attempts - 1)


def webhook_redeliver(*, delivery: WebhookDelivery) -> None:
    """Send a delivery again (from the admin), with a fresh budget of attempts."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=WebhookDelivery.Status.PENDING, attempts=0)
    pk = delivery.pk
    transaction.on_commit(lambda: _send([pk]))
