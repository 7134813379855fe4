"""Tasks on the `media` queue: ingest and transcoding (CPU, ffmpeg)."""

from celery import shared_task

from workers.services import imports
from workers.services.jobs import job_execute


@shared_task(name="workers.tasks.media.import_pairs", acks_late=True, reject_on_worker_lost=True)
def import_pairs(job_id: int) -> dict | None:
    """Run an uploaded import (manifest + videos in the job's folder). Safe to deliver twice:
    a finished job is skipped and a re-run import creates nothing new."""
    return job_execute(job_id=job_id, work=imports.import_work)
