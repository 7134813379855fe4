"""Tasks on the `media` queue: ingest and transcoding (CPU, ffmpeg)."""

from pathlib import Path

from celery import shared_task

from workers.services.jobs import job_execute


@shared_task(name="workers.tasks.media.import_pairs", acks_late=True, reject_on_worker_lost=True)
def import_pairs(job_id: int) -> dict | None:
    """Run an uploaded import (manifest + videos in the job's folder). Safe to deliver twice:
    a finished job is skipped and a re-run import creates nothing new."""
    from annotate.services.ingest import pairs_import

    def work(job):
        report = pairs_import(
            manifest=Path(job.params["manifest"]),
            media_root=Path(job.params["media_root"]),
            gold=job.params.get("gold", False),
            overlap=job.params.get("overlap"),
            confine_to_media_root=True,  # an uploaded manifest may name only the files uploaded with it
            created_by=job.created_by,
            progress=job.report_progress,
        )
        for error in report.skipped:
            job.append_log(f"{report.manifest} {error}; the row was skipped")
        job.append_log(report.summary())
        return report.as_dict()

    return job_execute(job_id=job_id, work=work)
