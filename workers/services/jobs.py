"""Job lifecycle: create (and queue after commit), start, finish, fail, cancel, retry, and the watchdog.

Tasks call ``job_execute`` (or the pieces below), nothing else. Every delivery of a job's task is an
*attempt* recorded on the row, so a job redelivered after its worker died shows both runs.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from workers.models import Job, JobCancelled
from workers.services.webhooks import webhook_emit
from workers.task_routes import JOB_TASKS

log = logging.getLogger(__name__)


def json_safe(value):
    """``value`` with NaN and ±inf floats as None: PostgreSQL's json refuses them, and a metric over an empty
    validation split (no decided pairs of some dimension) is NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def job_folder_path(job: Job) -> Path:
    """Where the job's own folder is (it may not exist yet); the creation time in its name keeps it apart from
    a job of the same id in an earlier database (a fresh test database, a restore)."""
    return Path(settings.JOB_ROOT) / f"job-{job.pk}-{job.created_at:%Y%m%dT%H%M%S%f}"


def job_folder(job: Job) -> Path:
    """The job's own folder, created if needed."""
    folder = job_folder_path(job)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def job_create(*, kind: str, params: dict | None = None, created_by=None, send: bool = True) -> Job:
    """Record a job and, unless ``send`` is false (the caller queues it later with ``job_queue``), queue its
    kind's task once the row is committed."""
    job = Job.objects.create(kind=kind, params=params or {}, created_by=created_by)
    if send:
        job_queue(job=job)
    return job


def job_queue(*, job: Job) -> None:
    """Send the task of the job's kind (``JOB_TASKS``, by name) with the job's id once the surrounding
    transaction commits (never a row the worker can't see)."""
    task_name = JOB_TASKS[job.kind].task

    def send() -> None:
        try:
            result = current_app.send_task(task_name, args=(job.pk,))
        except (OperationalError, OSError) as exc:  # the broker is down: the job waits, queued, for jobs_resend
            log.warning("job %s stays queued until the broker is back: %s", job.pk, exc)
            return
        Job.objects.filter(pk=job.pk).update(celery_id=result.id)

    transaction.on_commit(send)


def jobs_resend(*, older_than: timedelta = timedelta(seconds=60)) -> list[int]:
    """Send the tasks of queued jobs whose message never reached the broker (it was down when they were
    created): beat runs this every minute. Returns the job ids sent."""
    cutoff = timezone.now() - older_than
    sent = []
    unsent = Job.objects.filter(status=Job.Status.QUEUED, celery_id="", created_at__lt=cutoff, kind__in=list(JOB_TASKS))
    for job in unsent:
        job_queue(job=job)
        sent.append(job.pk)
    return sent


def _now_iso() -> str:
    return timezone.now().isoformat(timespec="seconds")


def job_start(*, job_id: int) -> Job | None:
    """Mark a queued job running and record the attempt; None when it should not run (finished or cancelled).

    A redelivered task finds its job running: the earlier attempt is closed as lost and this one goes on
    (the work resumes from its newest checkpoint); a finished job is left alone.
    """
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.is_finished:
            return None
        if job.status == Job.Status.RUNNING and _attempt_alive(job):
            running = job.attempts[-1]
            job.append_log(
                f"a second delivery on {socket.gethostname()} was ignored: attempt {running['number']} "
                f"is still running on {running['worker']} (pid {running['pid']})"
            )
            return None
        for attempt in job.attempts:
            if attempt.get("outcome") == "running":
                attempt.update(outcome="lost (worker died or was killed)", finished_at=_now_iso())
        job.attempts.append(
            {
                "number": len(job.attempts) + 1,
                "worker": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": _now_iso(),
                "finished_at": None,
                "outcome": "running",
            }
        )
        job.status = Job.Status.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.heartbeat_at = timezone.now()
        job.progress_text = (
            f"started on {socket.gethostname()}"
            if len(job.attempts) == 1
            else f"attempt {len(job.attempts)} on {socket.gethostname()}: resuming"
        )
        job.save(update_fields=["status", "started_at", "attempts", "heartbeat_at", "progress_text"])
    if len(job.attempts) > 1:
        job.append_log(f"attempt {len(job.attempts)} on {socket.gethostname()} (pid {os.getpid()}): resuming")
    return job


def _attempt_alive(job: Job) -> bool:
    """Whether the job's open attempt still runs: on this machine, its process exists; elsewhere, its
    heartbeat is fresh. A task delivered twice must not run twice at once."""
    if not job.attempts or job.attempts[-1].get("outcome") != "running":
        return False
    attempt = job.attempts[-1]
    if attempt.get("worker") == socket.gethostname():
        try:
            os.kill(int(attempt["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return int(attempt["pid"]) != os.getpid()
    silent_for = timedelta(minutes=settings.VIDPREF_JOB_STALE_MINUTES)
    return job.heartbeat_at is not None and timezone.now() - job.heartbeat_at < silent_for


def job_run(*, job: Job) -> None:
    """Send a queued job's task again (its first message was lost, e.g. the broker was down when it was
    created). Harmless when the first message does arrive: the second delivery finds the job running."""
    if job.status != Job.Status.QUEUED:
        raise ValueError(f"job {job.pk} is {job.status}: only a queued job can be run; a failed one can be retried")
    if job.kind not in JOB_TASKS:
        raise ValueError(f"job {job.pk}: jobs of kind {job.kind!r} cannot be run from here")
    job_queue(job=job)


def _close_attempt(job: Job, outcome: str) -> None:
    if job.attempts and job.attempts[-1].get("outcome") == "running":
        job.attempts[-1].update(outcome=outcome, finished_at=_now_iso())


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def job_outcome_text(job: Job) -> str:
    """What a finished job's progress text says: its outcome, in a line ("done: 24 pairs queued",
    "failed: OSError: …", "cancelled by admin"), whatever its kind; the last step's text would mislead."""
    if job.status == Job.Status.FAILED:
        return f"failed: {job.error or 'unknown error'}"[:300]
    if job.status == Job.Status.CANCELLED:
        return "cancelled"
    if job.status != Job.Status.SUCCEEDED:
        return job.progress_text
    result = job.result or {}
    if "pairs_created" in result:  # an import or a generation: the pairs it added to the queue
        verb = "queued" if job.kind == Job.Kind.GENERATE else "imported"
        held = result.get("pairs_held") or 0
        parts = [f"{_count(max(0, result['pairs_created'] - held), 'pair')} {verb}"]
        if held:
            parts.append(f"{_count(held, 'pair')} from the untrained built-in policy held back")
        if result.get("pairs_existing"):
            parts.append(f"{result['pairs_existing']} already present")
        if result.get("skipped"):
            parts.append(f"{len(result['skipped'])} skipped")
        text = ", ".join(parts)
    elif "snapshot_id" in result:
        pairs = (result.get("counts") or {}).get("pairs")
        text = f"snapshot {result.get('name', result['snapshot_id'])}" + (
            f" ({_count(pairs, 'pair')})" if pairs is not None else ""
        )
        if (result.get("videoalign") or {}).get("reason"):
            text += f"; no VideoAlign CSVs: {result['videoalign']['reason']}"
    elif "model_version_id" in result:
        text = f"model {result.get('name', result['model_version_id'])}"
    elif job.kind == Job.Kind.PREVIEW and result.get("videos"):
        text = "guided and unguided videos ready"
    else:
        text = ""
    return f"done: {text}"[:300] if text else "done"


def job_succeed(*, job: Job, result: dict | None = None, metrics: dict | None = None) -> None:
    with transaction.atomic():
        job.status = Job.Status.SUCCEEDED
        job.progress = 1.0
        job.finished_at = timezone.now()
        job.result = json_safe(result or {})
        if metrics is not None:
            job.metrics = json_safe(metrics)
        job.progress_text = job_outcome_text(job)
        _close_attempt(job, "succeeded")
        job.save(update_fields=["status", "progress", "finished_at", "result", "metrics", "attempts", "progress_text"])
        webhook_emit(event="job.succeeded", data=job_payload(job))


def job_fail(*, job: Job, error: BaseException) -> None:
    with transaction.atomic():
        job.status = Job.Status.FAILED
        job.finished_at = timezone.now()
        job.error = f"{type(error).__name__}: {error}"
        job.progress_text = job_outcome_text(job)
        job.append_log("".join(traceback.format_exception(error)).rstrip())
        _close_attempt(job, "failed")
        job.save(update_fields=["status", "finished_at", "error", "attempts", "progress_text"])
        webhook_emit(event="job.failed", data=job_payload(job))


def job_payload(job: Job) -> dict:
    return {
        "id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "params": job.params,
        "result": job.result,
        "error": job.error,
        "attempts": len(job.attempts),
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def job_execute(*, job_id: int, work: Callable[[Job], dict | tuple[dict, dict]]) -> dict | None:
    """Run ``work(job)`` as the job's attempt: start it, record the outcome. ``work`` returns the result
    dict, or ``(result, metrics)``. A cancelled job stops quietly; any other error fails the job and
    propagates (Celery logs it)."""
    job = job_start(job_id=job_id)
    if job is None:
        return None
    began = time.monotonic()
    # the worker's terminal: one line when a job starts and one when it ends (settings LOGGING keeps the rest quiet)
    log.info(
        "job %s (%s) started%s",
        job.pk,
        job.get_kind_display(),
        f", attempt {len(job.attempts)}" if len(job.attempts) > 1 else "",
    )
    try:
        outcome = work(job)
    except JobCancelled:
        job.refresh_from_db(fields=["attempts"])
        _close_attempt(job, "cancelled")
        job.save(update_fields=["attempts"])
        job.append_log("stopped: cancelled from the admin")
        log.info("job %s (%s) cancelled after %.0f s", job.pk, job.get_kind_display(), time.monotonic() - began)
        return None
    except Exception as exc:
        job_fail(job=job, error=exc)
        log.error(
            "job %s (%s) failed after %.0f s: %s",
            job.pk,
            job.get_kind_display(),
            time.monotonic() - began,
            f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
        )
        raise
    result, metrics = outcome if isinstance(outcome, tuple) else (outcome, None)
    job_succeed(job=job, result=result, metrics=metrics)
    job.refresh_from_db(fields=["progress_text"])
    log.info(
        "job %s (%s) %s in %.0f s",
        job.pk,
        job.get_kind_display(),
        job.progress_text or "succeeded",
        time.monotonic() - began,
    )
    return result


def job_cancel(*, job: Job, by=None) -> bool:
    """Cancel a queued or running job. A queued task is revoked and skipped if it still arrives; a running
    one stops at its next progress report. False when the job had already finished."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.is_finished:
            return False
        who = f" by {by}" if by else ""
        locked.status = Job.Status.CANCELLED
        locked.finished_at = timezone.now()
        locked.progress_text = f"cancelled{who} at {locked.progress * 100:.0f} %"
        locked.save(update_fields=["status", "finished_at", "progress_text"])
    job.append_log(f"cancelled{who}")
    if locked.celery_id:
        transaction.on_commit(lambda: current_app.control.revoke(locked.celery_id))
    job.refresh_from_db()
    return True


def job_retry(*, job: Job, by=None) -> Job:
    """Queue a failed or cancelled job again, as the same job: it resumes from the newest checkpoint in its
    folder and the record keeps every attempt."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.status not in (Job.Status.FAILED, Job.Status.CANCELLED):
            raise ValueError(f"job {job.pk} is {locked.status}: only a failed or cancelled job can be retried")
        locked.status = Job.Status.QUEUED
        locked.finished_at = None
        locked.error = ""
        locked.progress_text = "queued again: resumes from its newest checkpoint"
        locked.save(update_fields=["status", "finished_at", "error", "progress_text"])
        if locked.kind not in JOB_TASKS:
            raise ValueError(f"job {job.pk}: jobs of kind {locked.kind!r} cannot be retried from here")
        job_queue(job=locked)
    locked.append_log(f"retry queued{f' by {by}' if by else ''}")
    return locked


def jobs_mark_stale(*, silent_for: timedelta | None = None) -> list[int]:
    """Fail running jobs whose worker has not reported for ``silent_for`` (``VIDPREF_JOB_STALE_MINUTES``):
    a machine that died without its task being redelivered. Retry resumes them from their checkpoints."""
    silent_for = silent_for or timedelta(minutes=settings.VIDPREF_JOB_STALE_MINUTES)
    cutoff = timezone.now() - silent_for
    stale = []
    for job in Job.objects.filter(status=Job.Status.RUNNING, heartbeat_at__lt=cutoff):
        minutes = (timezone.now() - job.heartbeat_at).total_seconds() / 60
        error = RuntimeError(
            f"no sign of life from the worker for {minutes:.0f} minutes (its machine died, or the "
            "task was lost); Retry resumes it from the newest checkpoint"
        )
        _close_attempt(job, "lost (no heartbeat)")
        job_fail(job=job, error=error)
        stale.append(job.pk)
    return stale
