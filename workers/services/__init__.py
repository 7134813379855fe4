"""Writes of the workers app: job lifecycle (``jobs``), dataset snapshots (``snapshots``), training
(``training``) and webhooks (``webhooks``)."""

from workers.services.jobs import (
    job_cancel,
    job_create,
    job_execute,
    job_fail,
    job_folder,
    job_queue,
    job_retry,
    job_start,
    job_succeed,
)

__all__ = ["job_cancel", "job_create", "job_execute", "job_fail", "job_folder", "job_queue", "job_retry", "job_start",
           "job_succeed"]
