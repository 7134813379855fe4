"""Writes of the workers app: job lifecycle (``jobs``) and dataset snapshots (``snapshots``)."""

from workers.services.jobs import job_create, job_fail, job_folder, job_queue, job_start, job_succeed

__all__ = ["job_create", "job_fail", "job_folder", "job_queue", "job_start", "job_succeed"]
