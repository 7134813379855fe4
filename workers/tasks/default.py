"""Tasks on the `default` queue: light bookkeeping."""

import os

from celery import shared_task


@shared_task(name="workers.tasks.default.ping")
def ping(payload: str = "pong") -> dict:
    """Round trip through the broker, a worker and the result store; used by health checks and tests."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        database = cursor.fetchone()[0]
    return {"payload": payload, "database": database, "pid": os.getpid()}


@shared_task(name="workers.tasks.default.export_snapshot", acks_late=True, reject_on_worker_lost=True)
def export_snapshot(job_id: int) -> dict | None:
    """Export a snapshot with the job's filters. Safe to deliver twice: a finished job is skipped, and a
    killed run leaves only a hidden partial folder that the next export sweeps away."""
    from workers.services import job_fail, job_start, job_succeed
    from workers.services.snapshots import snapshot_create, snapshot_params_parse

    job = job_start(job_id=job_id)
    if job is None:
        return None
    try:
        options = snapshot_params_parse(job.params)
        snapshot = snapshot_create(**options, job=job, created_by=job.created_by, progress=job.report_progress)
    except Exception as exc:
        job_fail(job=job, error=exc)
        raise
    result = {"snapshot_id": snapshot.pk, "name": snapshot.name, "uri": snapshot.uri, "counts": snapshot.counts}
    job.append_log(f"snapshot {snapshot.name}: {snapshot.counts} at {snapshot.uri}")
    job_succeed(job=job, result=result)
    return result


@shared_task(name="workers.tasks.default.export_snapshot_nightly")
def export_snapshot_nightly() -> int | None:
    """Beat's nightly export: queue one when something was judged since the last snapshot. Returns the job id."""
    from workers.services.snapshots import snapshot_job_create_if_due

    job = snapshot_job_create_if_due()
    return job.pk if job else None


@shared_task(name="workers.tasks.default.recompute_agreement")
def recompute_agreement(filters: dict | None = None) -> int:
    """Recompute and store the agreement statistics (beat: every few minutes; the dashboard: on demand)."""
    from datetime import datetime

    from annotate.services.stats import agreement_report_refresh

    filters = filters or {}
    moments = {key: datetime.fromisoformat(filters[key]) if filters.get(key) else None
               for key in ("judged_from", "judged_until")}
    return agreement_report_refresh(batch_ids=tuple(filters.get("batch_ids") or ()), **moments).pk
