"""Tasks on the `gpu` queue: training. torch is imported inside the task bodies (the web never loads it)."""

from celery import shared_task

from workers.services import job_fail, job_start, job_succeed


@shared_task(name="workers.tasks.gpu.train_reward", acks_late=True, reject_on_worker_lost=True)
def train_reward(job_id: int) -> dict | None:
    """Train VideoReward on the job's snapshot and register a ModelVersion. Delivered again after a worker
    died, it resumes from the newest checkpoint in the job's folder; a finished job is skipped."""
    from workers.services.training import reward_train_run

    job = job_start(job_id=job_id)
    if job is None:
        return None
    try:
        version = reward_train_run(job=job)
    except Exception as exc:
        job_fail(job=job, error=exc)
        raise
    result = {"model_version_id": version.pk, "name": version.name, "path": version.path}
    job_succeed(job=job, result=result, metrics=version.metrics)
    return result
