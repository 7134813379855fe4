"""Tasks on the `default` queue: light bookkeeping."""

import os
from datetime import datetime

from celery import shared_task
from django.conf import settings
from django.db import connection

from annotate.services.stats import agreement_report_refresh
from workers.models import WebhookDelivery
from workers.services import jobs, pipelines, snapshots, webhooks


@shared_task(name="workers.tasks.default.ping")
def ping(payload: str = "pong") -> dict:
    """Round trip through the broker, a worker and the result store; used by health checks and tests."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        database = cursor.fetchone()[0]
    return {"payload": payload, "database": database, "pid": os.getpid()}


@shared_task(name="workers.tasks.default.export_snapshot", acks_late=True, reject_on_worker_lost=True)
def export_snapshot(job_id: int) -> dict | None:
    """Export a snapshot with the job's filters. Safe to deliver twice: a finished job is skipped, and a
    killed run leaves only a hidden partial folder that the next export sweeps away."""
    return jobs.job_execute(job_id=job_id, work=snapshots.snapshot_work)


@shared_task(name="workers.tasks.default.export_snapshot_nightly")
def export_snapshot_nightly() -> int | None:
    """Beat's nightly export: queue one when something was judged since the last snapshot. Returns the job id."""
    job = snapshots.snapshot_job_create_if_due()
    return job.pk if job else None


@shared_task(name="workers.tasks.default.recompute_agreement")
def recompute_agreement(filters: dict | None = None) -> int:
    """Recompute and store the agreement statistics (beat: every few minutes; the dashboard: on demand)."""
    filters = filters or {}
    moments = {
        key: datetime.fromisoformat(filters[key]) if filters.get(key) else None
        for key in ("judged_from", "judged_until")
    }
    return agreement_report_refresh(batch_ids=tuple(filters.get("batch_ids") or ()), **moments).pk


@shared_task(name="workers.tasks.default.jobs_resend")
def jobs_resend() -> list[int]:
    """Beat, every minute: send the tasks of jobs (and the webhook deliveries) created while the broker was
    down. Returns the job ids."""
    webhooks.webhooks_resend()
    return jobs.jobs_resend()


@shared_task(name="workers.tasks.default.sweep_leases")
def sweep_leases() -> int:
    """Beat, every minute: free the slots of leases that ran out (a next-pair request sweeps only when it finds
    nothing). Returns how many slots were freed."""
    from annotate.services.assignment import assignments_expire

    return assignments_expire()


@shared_task(name="workers.tasks.default.jobs_watchdog")
def jobs_watchdog() -> list[int]:
    """Beat, every few minutes: fail running jobs whose worker stopped reporting. Returns their ids."""
    return jobs.jobs_mark_stale()


@shared_task(name="workers.tasks.default.deliver_webhook", bind=True, max_retries=None)
def deliver_webhook(self, delivery_id: int) -> bool:
    """POST one webhook delivery; on failure retry with exponential backoff until its attempts run out."""
    if webhooks.webhook_deliver(delivery_id=delivery_id):
        return True
    attempts = WebhookDelivery.objects.values_list("attempts", flat=True).get(pk=delivery_id)
    if attempts < settings.VIDPREF_WEBHOOK_ATTEMPTS:
        raise self.retry(countdown=webhooks.webhook_retry_delay(attempts))
    return False


@shared_task(name="workers.tasks.default.pipeline_export", acks_late=True, reject_on_worker_lost=True)
def pipeline_export(pipeline_id: int) -> dict | None:
    """The pipeline's first stage: a snapshot of everything judged so far."""
    return pipelines.pipeline_stage_run(pipeline_id=pipeline_id, stage="export")


@shared_task(name="workers.tasks.default.pipeline_finish")
def pipeline_finish(pipeline_id: int) -> None:
    pipelines.pipeline_finish(pipeline_id=pipeline_id)


@shared_task(name="workers.tasks.default.pipeline_scheduled")
def pipeline_scheduled() -> int | None:
    """Beat's pipeline entry (nightly by default; edit it under Periodic tasks): start one unless too few new
    judgments arrived or one is still running. Returns the started pipeline's id."""
    try:
        pipeline = pipelines.pipeline_start(trigger="schedule")
    except pipelines.PipelineBusy:
        return None
    return pipeline.pk if pipeline.is_active else None
