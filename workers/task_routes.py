"""Which Celery task runs each kind of job, each pipeline stage and each webhook delivery, and on which queue.

Services send a task by its name (``send_task``, or a ``signature`` by name), never by importing
``workers.tasks``: the task modules import the services, not the reverse, and the web process never loads the
worker side. A task's name is a wire format: a message queued before a deploy is delivered after it by that name,
so the names never change. The queue is the one ``CELERY_TASK_ROUTES`` gives the name (``workers.tasks.<queue>.…``),
written out here for the pages that show it; ``tests/workers/test_task_routes.py`` checks the two agree and that
every name is a registered task.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.models import Job


@dataclass(frozen=True)
class TaskRoute:
    task: str  # the registered name of the task (``@shared_task(name=…)`` in workers/tasks/<queue>.py)
    queue: str  # default, media or gpu


# The task that runs a job of each kind, with the job's id as its one argument.
JOB_TASKS: dict[str, TaskRoute] = {
    Job.Kind.IMPORT: TaskRoute("workers.tasks.media.import_pairs", "media"),
    Job.Kind.EXPORT: TaskRoute("workers.tasks.default.export_snapshot", "default"),
    Job.Kind.REWARD: TaskRoute("workers.tasks.gpu.train_reward", "gpu"),
    Job.Kind.SFT: TaskRoute("workers.tasks.gpu.train_sft", "gpu"),
    Job.Kind.FLOW_DPO: TaskRoute("workers.tasks.gpu.train_flow_dpo", "gpu"),
    Job.Kind.FLOW_RWR: TaskRoute("workers.tasks.gpu.train_flow_rwr", "gpu"),
    Job.Kind.FLOW_GRPO: TaskRoute("workers.tasks.gpu.train_flow_grpo", "gpu"),
    Job.Kind.LATENT_REWARD: TaskRoute("workers.tasks.gpu.train_latent_reward", "gpu"),
    Job.Kind.GENERATE: TaskRoute("workers.tasks.gpu.generate_pairs", "gpu"),
    Job.Kind.PREVIEW: TaskRoute("workers.tasks.gpu.guided_preview", "gpu"),
}

# The pipeline's chain, in order: each stage's task takes the pipeline's id; the finish task closes the pipeline.
PIPELINE_STAGE_TASKS: dict[str, TaskRoute] = {
    "export": TaskRoute("workers.tasks.default.pipeline_export", "default"),
    "reward": TaskRoute("workers.tasks.gpu.pipeline_reward", "gpu"),
    "align": TaskRoute("workers.tasks.gpu.pipeline_align", "gpu"),
    "generate": TaskRoute("workers.tasks.gpu.pipeline_generate", "gpu"),
}
PIPELINE_FINISH_TASK = TaskRoute("workers.tasks.default.pipeline_finish", "default")

# One attempt at POSTing a webhook delivery, with the delivery's id.
WEBHOOK_DELIVERY_TASK = TaskRoute("workers.tasks.default.deliver_webhook", "default")
