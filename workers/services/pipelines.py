"""The loop as a Celery canvas: export → reward model → alignment (Flow-DPO or Flow-RWR) → generate pairs.

``pipeline_start`` records a ``Pipeline`` and sends a ``chain`` of immutable stage signatures, each on its
queue (export on ``default``, the rest on ``gpu``). A stage task creates (or, delivered again, finds) its
stage's job, runs it with ``job_execute`` — so it resumes from checkpoints like any job — and hands its
result to the next stage through the job rows, never through ``.get()``. A failed stage fails the pipeline
and stops the chain. One pipeline at a time: a partial unique index on ``Pipeline.is_active``.
"""

from __future__ import annotations

from celery import chain, signature
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from kombu.exceptions import OperationalError

from annotate.models import Judgment
from workers.models import DatasetSnapshot, Job, Pipeline
from workers.services import alignment as policy_jobs
from workers.services import generation, reward, snapshots
from workers.services.jobs import job_cancel, job_execute
from workers.task_routes import PIPELINE_FINISH_TASK, PIPELINE_STAGE_TASKS

STAGE_QUEUES = {stage: route.queue for stage, route in PIPELINE_STAGE_TASKS.items()}  # the stages, in order
ALIGNMENT_KINDS = {"dpo": Job.Kind.FLOW_DPO, "rwr": Job.Kind.FLOW_RWR, "grpo": Job.Kind.FLOW_GRPO}


class PipelineBusy(Exception):
    """Another pipeline is queued or running."""


def pipeline_defaults() -> dict:
    return {
        "min_new_judgments": settings.VIDPREF_PIPELINE_MIN_NEW_JUDGMENTS,
        "alignment_method": settings.VIDPREF_ALIGNMENT_METHOD,
        "generate_pairs": settings.VIDPREF_PIPELINE_GENERATE_PAIRS,
        "reward_config": {},
        "alignment_config": {},
    }


def pipeline_active() -> Pipeline | None:
    """The pipeline queued or running now, if any (at most one is: the ``one_active_pipeline`` index)."""
    return Pipeline.objects.filter(is_active=True).first()


def judgments_since_last_snapshot() -> int:
    """Judgments newer than the newest training snapshot's watermark (all of them before the first)."""
    watermark = (
        DatasetSnapshot.objects.filter(kind=DatasetSnapshot.Kind.TRAINING).aggregate(mark=Max("judgment_watermark"))[
            "mark"
        ]
        or 0
    )
    return Judgment.objects.filter(pk__gt=watermark).count()


def pipeline_start(
    *, params: dict | None = None, created_by=None, trigger: str = "admin", force: bool = False
) -> Pipeline:
    """Start a pipeline, or record why not: too few new judgments gives a ``skipped`` pipeline (unless
    ``force``); another active pipeline raises ``PipelineBusy``."""
    params = {**pipeline_defaults(), **(params or {})}
    if params["alignment_method"] not in ALIGNMENT_KINDS:
        raise ValueError(f"alignment_method {params['alignment_method']!r}: choose {', '.join(ALIGNMENT_KINDS)}")
    fresh = judgments_since_last_snapshot()
    if not force and fresh < params["min_new_judgments"]:
        return Pipeline.objects.create(
            status=Pipeline.Status.SKIPPED,
            is_active=False,
            params=params,
            trigger=trigger,
            created_by=created_by,
            finished_at=timezone.now(),
            reason=f"{fresh} new judgments since the last snapshot; a pipeline needs {params['min_new_judgments']} "
            "(VIDPREF_PIPELINE_MIN_NEW_JUDGMENTS)",
        )
    try:
        with transaction.atomic():
            pipeline = Pipeline.objects.create(params=params, trigger=trigger, created_by=created_by)
    except IntegrityError:
        active = Pipeline.objects.filter(is_active=True).first()
        raise PipelineBusy(
            f"{active} is still going; one pipeline runs at a time"
            if active
            else "another pipeline is starting; try again"
        ) from None
    pipeline_id = pipeline.pk

    def send() -> None:
        try:
            pipeline_canvas(pipeline_id).apply_async()
        except (OperationalError, OSError) as exc:
            pipeline_fail(pipeline_id=pipeline_id, reason=f"the broker was unreachable ({exc}); run it again")

    transaction.on_commit(send)
    return pipeline


def pipeline_canvas(pipeline_id: int):
    """The chain of stage tasks (immutable signatures, sent by name: the web never imports the tasks)."""
    stages = [signature(route.task, args=(pipeline_id,), immutable=True) for route in PIPELINE_STAGE_TASKS.values()]
    return chain(*stages, signature(PIPELINE_FINISH_TASK.task, args=(pipeline_id,), immutable=True))


def pipeline_stage_params(pipeline: Pipeline, stage: str) -> tuple[str, dict]:
    """(job kind, job params) of a stage, from the pipeline's params and the earlier stages' results."""
    done = {job.kind: job for job in pipeline.jobs.filter(status=Job.Status.SUCCEEDED)}
    params = pipeline.params
    if stage == "export":
        return Job.Kind.EXPORT, {"name": f"pipeline-{pipeline.pk}-{timezone.now():%Y%m%d-%H%M%S}"}
    snapshot_id = done[Job.Kind.EXPORT].result["snapshot_id"]
    if stage == "reward":
        return Job.Kind.REWARD, {"snapshot_id": snapshot_id, "config": params.get("reward_config") or {}}
    reward_version_id = done[Job.Kind.REWARD].result["model_version_id"]
    kind = ALIGNMENT_KINDS[params["alignment_method"]]
    if stage == "align":
        return kind, {
            "snapshot_id": snapshot_id,
            "reward_model_version_id": reward_version_id,
            "config": params.get("alignment_config") or {},
        }
    return Job.Kind.GENERATE, {
        "policy_model_version_id": done[kind].result["model_version_id"],
        "reward_model_version_id": reward_version_id,
        "pairs": params["generate_pairs"],
    }


def _stage_work(stage: str):
    """The work of the stage's job kind, looked up when the stage runs."""
    return {
        "export": snapshots.snapshot_work,
        "reward": reward.reward_work,
        "align": policy_jobs.policy_work,
        "generate": generation.generation_work,
    }[stage]


def pipeline_stage_run(*, pipeline_id: int, stage: str) -> dict | None:
    """Run one stage as a job of the pipeline (found again when the task is delivered twice)."""
    with transaction.atomic():
        pipeline = Pipeline.objects.select_for_update().get(pk=pipeline_id)
        if pipeline.status not in (Pipeline.Status.QUEUED, Pipeline.Status.RUNNING):
            return None  # cancelled or failed meanwhile: the rest of the chain does nothing
        kind, params = pipeline_stage_params(pipeline, stage)
        job = pipeline.jobs.filter(kind=kind).order_by("-pk").first()
        if job is None:
            job = Job.objects.create(kind=kind, params=params, pipeline=pipeline, created_by=pipeline.created_by)
        elif job.status == Job.Status.SUCCEEDED:
            return job.result  # this stage's task was delivered twice
        pipeline.status, pipeline.stage = Pipeline.Status.RUNNING, stage
        pipeline.save(update_fields=["status", "stage"])
    try:
        result = job_execute(job_id=job.pk, work=_stage_work(stage))
    except Exception as exc:
        pipeline_fail(pipeline_id=pipeline_id, reason=f"stage {stage} (job {job.pk}): {type(exc).__name__}: {exc}")
        raise
    job.refresh_from_db()
    if job.status != Job.Status.SUCCEEDED:
        cancelled = job.status == Job.Status.CANCELLED
        pipeline_fail(
            pipeline_id=pipeline_id,
            reason=f"stage {stage}: job {job.pk} is {job.status}",
            status=Pipeline.Status.CANCELLED if cancelled else Pipeline.Status.FAILED,
        )
        return None
    return result


def pipeline_fail(*, pipeline_id: int, reason: str, status: str = Pipeline.Status.FAILED) -> None:
    Pipeline.objects.filter(pk=pipeline_id, is_active=True).update(
        status=status, is_active=False, reason=reason[:4000], finished_at=timezone.now()
    )


def pipeline_finish(*, pipeline_id: int) -> None:
    Pipeline.objects.filter(pk=pipeline_id, status=Pipeline.Status.RUNNING).update(
        status=Pipeline.Status.SUCCEEDED, is_active=False, finished_at=timezone.now()
    )


def pipeline_cancel(*, pipeline: Pipeline, by=None) -> bool:
    """Cancel an active pipeline and its running stage; later stages do nothing."""
    if not pipeline.is_active:
        return False
    pipeline_fail(
        pipeline_id=pipeline.pk, reason=f"cancelled{f' by {by}' if by else ''}", status=Pipeline.Status.CANCELLED
    )
    for job in pipeline.jobs.exclude(status__in=[Job.Status.SUCCEEDED, Job.Status.FAILED, Job.Status.CANCELLED]):
        job_cancel(job=job, by=by)
    return True


def pipeline_stage_kind(pipeline: Pipeline, stage: str) -> str:
    """The job kind that runs ``stage`` of ``pipeline`` (the alignment stage's depends on its params)."""
    if stage == "align":
        return ALIGNMENT_KINDS.get(pipeline.params.get("alignment_method"), Job.Kind.FLOW_DPO)
    return {"export": Job.Kind.EXPORT, "reward": Job.Kind.REWARD, "generate": Job.Kind.GENERATE}[stage]


def pipeline_stages(pipeline: Pipeline) -> list[dict]:
    """The pipeline's stages in the order the chain runs them: name, job kind and the stage's job (None until
    the stage starts; the newest one where a stage ran twice). Reads ``pipeline.jobs.all()``, so a prefetch
    serves it."""
    jobs = sorted(pipeline.jobs.all(), key=lambda job: job.pk, reverse=True)
    stages = []
    for number, stage in enumerate(STAGE_QUEUES, start=1):
        kind = pipeline_stage_kind(pipeline, stage)
        stages.append(
            {
                "number": number,
                "name": stage,
                "kind": kind,
                "kind_label": Job.Kind(kind).label,
                "queue": STAGE_QUEUES[stage],
                "job": next((job for job in jobs if job.kind == kind), None),
            }
        )
    return stages
