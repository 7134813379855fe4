"""Tasks on the `gpu` queue: training, pair generation, guided previews. torch is loaded in the child process each
job starts (and here only to build the tiny base policy once, where no VIDPREF_BASE_POLICY is set); the web never
loads it.

Run this queue with ``--concurrency 1 --prefetch-multiplier 1``: one job per GPU machine at a time. A task runs
in the prefork pool's daemonic child, so its GPU work runs in a child process of its own
(``workers.services.launch``): training under ``python -m alignment`` (``accelerate launch`` on all the machine's
GPUs when it has several), sampling under ``python -m alignment sample-plan``.
"""

from celery import shared_task

from workers.services import alignment as policy_jobs
from workers.services import generation, pipelines, previews, reward
from workers.services.jobs import job_execute


@shared_task(name="workers.tasks.gpu.train_reward", acks_late=True, reject_on_worker_lost=True)
def train_reward(job_id: int) -> dict | None:
    """Train VideoReward on the job's snapshot and register a ModelVersion. Delivered again after a worker
    died, it resumes from the newest checkpoint in the job's folder; a finished job is skipped."""
    return job_execute(job_id=job_id, work=reward.reward_work)


@shared_task(name="workers.tasks.gpu.pipeline_reward", acks_late=True, reject_on_worker_lost=True)
def pipeline_reward(pipeline_id: int) -> dict | None:
    return pipelines.pipeline_stage_run(pipeline_id=pipeline_id, stage="reward")


@shared_task(name="workers.tasks.gpu.pipeline_align", acks_late=True, reject_on_worker_lost=True)
def pipeline_align(pipeline_id: int) -> dict | None:
    return pipelines.pipeline_stage_run(pipeline_id=pipeline_id, stage="align")


@shared_task(name="workers.tasks.gpu.pipeline_generate", acks_late=True, reject_on_worker_lost=True)
def pipeline_generate(pipeline_id: int) -> dict | None:
    return pipelines.pipeline_stage_run(pipeline_id=pipeline_id, stage="generate")


def _train_policy(job_id: int) -> dict | None:
    return job_execute(job_id=job_id, work=policy_jobs.policy_work)


@shared_task(name="workers.tasks.gpu.train_sft", acks_late=True, reject_on_worker_lost=True)
def train_sft(job_id: int) -> dict | None:
    """Supervised fine-tuning of the video model on the chosen videos; registers a policy ModelVersion."""
    return _train_policy(job_id)


@shared_task(name="workers.tasks.gpu.train_flow_dpo", acks_late=True, reject_on_worker_lost=True)
def train_flow_dpo(job_id: int) -> dict | None:
    """Flow-DPO on the snapshot's preference pairs; registers a policy ModelVersion; resumes when redelivered."""
    return _train_policy(job_id)


@shared_task(name="workers.tasks.gpu.train_flow_grpo", acks_late=True, reject_on_worker_lost=True)
def train_flow_grpo(job_id: int) -> dict | None:
    """Flow-GRPO (online RL from a reward model's scores of the policy's own samples); registers a policy
    ModelVersion; resumes when redelivered."""
    return _train_policy(job_id)


@shared_task(name="workers.tasks.gpu.train_flow_rwr", acks_late=True, reject_on_worker_lost=True)
def train_flow_rwr(job_id: int) -> dict | None:
    """Flow-RWR (reward-weighted flow matching); registers a policy ModelVersion; resumes when redelivered."""
    return _train_policy(job_id)


@shared_task(name="workers.tasks.gpu.train_latent_reward", acks_late=True, reject_on_worker_lost=True)
def train_latent_reward(job_id: int) -> dict | None:
    """Flow-NRG's latent reward model on the snapshot's pairs noised alike; registers a latent_reward ModelVersion."""
    return _train_policy(job_id)


@shared_task(name="workers.tasks.gpu.generate_pairs", acks_late=True, reject_on_worker_lost=True)
def generate_pairs(job_id: int) -> dict | None:
    """Generate new pairs with a policy, score them, queue them for labelling (least certain first)."""
    return job_execute(job_id=job_id, work=generation.generation_work)


@shared_task(name="workers.tasks.gpu.guided_preview", acks_late=True, reject_on_worker_lost=True)
def guided_preview(job_id: int) -> dict | None:
    """Sample one prompt with one seed unguided and Flow-NRG-guided; two MP4s in the job's folder."""
    return job_execute(job_id=job_id, work=previews.preview_work)
