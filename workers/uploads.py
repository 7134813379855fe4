"""Staff uploads of an import (a manifest and its videos) become an import job on the `media` queue."""

from __future__ import annotations

from pathlib import Path

from django.core.files.uploadedfile import UploadedFile
from django.utils.text import get_valid_filename

from workers.models import Job
from workers.services import job_create, job_folder, job_queue


def _safe_name(name: str) -> str:
    """The file's own name only: no folders, no '..', nothing the filesystem would interpret."""
    base = Path(name.replace("\\", "/")).name
    cleaned = get_valid_filename(base) if base not in {"", ".", ".."} else ""
    if not cleaned:
        raise ValueError(f"{name!r}: not a usable file name")
    return cleaned


def _store(upload: UploadedFile, folder: Path) -> Path:
    target = folder / _safe_name(upload.name)
    with open(target, "wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return target


def import_job_create(
    *, manifest: UploadedFile, videos: list[UploadedFile], gold: bool = False, overlap: int | None = None, created_by=None
) -> Job:
    from workers.tasks.media import import_pairs

    job = job_create(kind=Job.Kind.IMPORT, created_by=created_by)
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
    job_queue(job=job, task=import_pairs)
    return job
