"""Tasks on the `gpu` queue: training. torch is imported inside the task bodies (the web never loads it).

Run this queue with ``--concurrency 1 --prefetch-multiplier 1``: one job per GPU machine at a time; a
training job uses all of the machine's GPUs through accelerate.
"""

from celery import shared_task

from workers.services.jobs import job_execute


@shared_task(name="workers.tasks.gpu.train_reward", acks_late=True, reject_on_worker_lost=True)
def train_reward(job_id: int) -> dict | None:
    """Train VideoReward on the job's snapshot and register a ModelVersion. Delivered again after a worker
    died, it resumes from the newest checkpoint in the job's folder; a finished job is skipped."""
    from workers.services.training import reward_train_run

    def work(job):
        version = reward_train_run(job=job)
        return {"model_version_id": version.pk, "name": version.name, "path": version.path}, version.metrics

    return job_execute(job_id=job_id, work=work)
