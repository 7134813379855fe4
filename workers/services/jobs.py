"""Job lifecycle: create (and queue after commit), start, finish, fail. Tasks call these, nothing else."""

from __future__ import annotations

import traceback
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from workers.models import Job


def job_folder(job: Job) -> Path:
    """The job's own folder; the creation time in its name keeps it apart from a job of the same id in an
    earlier database (a fresh test database, a restore)."""
    folder = Path(settings.JOB_ROOT) / f"job-{job.pk}-{job.created_at:%Y%m%dT%H%M%S%f}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def job_create(*, kind: str, params: dict | None = None, created_by=None, task=None) -> Job:
    """Record a job and queue ``task`` (a Celery task taking the job id) once the row is committed."""
    job = Job.objects.create(kind=kind, params=params or {}, created_by=created_by)
    if task is not None:
        job_queue(job=job, task=task)
    return job


def job_queue(*, job: Job, task) -> None:
    """Send ``task(job.pk)`` once the surrounding transaction commits (never a row the worker can't see)."""

    def send() -> None:
        result = task.delay(job.pk)
        Job.objects.filter(pk=job.pk).update(celery_id=result.id)

    transaction.on_commit(send)


def job_start(*, job_id: int) -> Job | None:
    """Mark a queued job running; None when it should not run (already finished or cancelled).

    A redelivered task finds its job running and goes on (it resumes); a finished job is left alone.
    """
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.is_finished:
            return None
        job.status = Job.Status.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.save(update_fields=["status", "started_at"])
    return job


def job_succeed(*, job: Job, result: dict | None = None, metrics: dict | None = None) -> None:
    job.status = Job.Status.SUCCEEDED
    job.progress = 1.0
    job.finished_at = timezone.now()
    job.result = result or {}
    if metrics is not None:
        job.metrics = metrics
    job.save(update_fields=["status", "progress", "finished_at", "result", "metrics"])


def job_fail(*, job: Job, error: BaseException) -> None:
    job.status = Job.Status.FAILED
    job.finished_at = timezone.now()
    job.error = f"{type(error).__name__}: {error}"
    job.append_log("".join(traceback.format_exception(error)).rstrip())
    job.save(update_fields=["status", "finished_at", "error"])
