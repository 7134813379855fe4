"""Import jobs (``import``, ``media`` queue): a staff upload of a manifest and its videos, ingested by a worker.

``import_job_create`` stores the upload in the job's folder and queues the job (the web side); ``import_work``
runs ``annotate``'s ingest on it (the worker side: probe, transcode, deduplicate).
"""

from __future__ import annotations

from pathlib import Path

from django.core.files.uploadedfile import UploadedFile
from django.utils.text import get_valid_filename

from annotate.services.ingest import pairs_import
from workers.models import Job
from workers.services.jobs import job_create, job_folder, job_queue


def upload_file_name(name: str) -> str:
    """An uploaded file's own name only: no folders, no '..', nothing the filesystem would interpret."""
    base = Path(name.replace("\\", "/")).name
    cleaned = get_valid_filename(base) if base not in {"", ".", ".."} else ""
    if not cleaned:
        raise ValueError(f"{name!r}: not a usable file name")
    return cleaned


def _store(upload: UploadedFile, folder: Path) -> Path:
    target = folder / upload_file_name(upload.name)
    with open(target, "wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return target


def import_job_create(
    *,
    manifest: UploadedFile,
    videos: list[UploadedFile],
    gold: bool = False,
    overlap: int | None = None,
    created_by=None,
) -> Job:
    """Store the upload in a new import job's folder and queue the job."""
    job = job_create(kind=Job.Kind.IMPORT, created_by=created_by, send=False)  # queued once its files are stored
    upload_dir = job_folder(job) / "upload"
    upload_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = _store(manifest, upload_dir)
    for video in videos:
        _store(video, upload_dir)
    job.params = {
        "manifest": str(manifest_path),
        "media_root": str(upload_dir),
        "gold": gold,
        "overlap": overlap,
        "files": len(videos),
    }
    job.save(update_fields=["params"])
    job_queue(job=job)
    return job


def import_work(job: Job) -> dict:
    """An import job's work (run by ``job_execute``): the uploaded manifest and videos in the job's folder. A re-run
    import creates nothing new."""
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
