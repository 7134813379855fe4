"""Training jobs on the ``gpu`` queue: a reward model from a snapshot, registered as a ``ModelVersion``.

The web process only records the job (it never imports torch); the worker builds the ``alignment``
config, trains, and registers the model. A job delivered again (worker killed) resumes from the newest
checkpoint in its folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from workers.models import DatasetSnapshot, Job, ModelVersion
from workers.services.jobs import job_create, job_folder, json_safe
from workers.services.launch import run_trainer

DIMENSIONS = ("VQ", "MQ", "TA")

SMALL_BACKBONE_CONFIG = {"model": {"backbone": "small"}, "learning_rate": 1e-3, "epochs": 4, "batch_size": 16,
                         "warmup_steps": 20, "num_workers": 2, "cache_videos": 256, "keep_best": True}
"""Used when ``VIDPREF_REWARD_CONFIG`` names no file: a small video transformer that trains on a CPU.
For the paper's model, point ``VIDPREF_REWARD_CONFIG`` at a RewardTrainConfig with a local Qwen2-VL folder."""


def reward_base_config() -> dict:
    """The site's reward training defaults: ``VIDPREF_REWARD_CONFIG``'s file, else the small CPU backbone."""
    from alignment.config import read_config_file

    return read_config_file(settings.VIDPREF_REWARD_CONFIG) if settings.VIDPREF_REWARD_CONFIG else SMALL_BACKBONE_CONFIG


def reward_job_create(*, snapshot: DatasetSnapshot, overrides: dict | None = None, created_by=None) -> Job:
    """Queue reward-model training on ``snapshot``; ``overrides`` are RewardTrainConfig values (nested dicts)."""
    from workers.tasks.gpu import train_reward

    if snapshot.kind != DatasetSnapshot.Kind.TRAINING:
        raise ValueError(f"snapshot {snapshot.name} is an evaluation set; train on a training snapshot")
    if not snapshot.counts.get("train"):
        raise ValueError(f"snapshot {snapshot.name} has no pairs in its train split")
    return job_create(kind=Job.Kind.REWARD, params={"snapshot_id": snapshot.pk, "config": overrides or {}},
                      created_by=created_by, task=train_reward)


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _local_snapshot(snapshot: DatasetSnapshot, folder: Path) -> Path:
    """The snapshot as a local folder: as it is, or downloaded from its ``s3://`` prefix into ``folder``."""
    if not snapshot.uri.startswith("s3://"):
        return Path(snapshot.uri)
    import boto3

    bucket, _, prefix = snapshot.uri[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=settings.AWS_S3_ENDPOINT_URL, region_name=settings.AWS_S3_REGION_NAME)
    target = folder / snapshot.name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            destination = target / item["Key"][len(prefix) + 1:]
            destination.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(destination))
    return target


def training_progress(job: Job) -> Callable[[dict], None]:
    """An ``on_progress(state)`` for a trainer's progress file (``alignment.progress``): the job's progress and
    heartbeat (which also notices a cancel: ``JobCancelled``) and the loss curve in ``job.metrics["live"]`` for
    the job page's chart. A resumed run's curve goes on from the earlier attempts' points before its first step."""
    earlier: list[list[float]] = list((job.metrics.get("live") or {}).get("train_loss", []))

    def on_progress(state: dict) -> None:
        step, total, loss = state["step"], state["total"], state.get("loss")
        job.report_progress(step, total, f"step {step} of {total}" + (f", loss {loss:.4f}" if loss is not None else ""))
        points = state.get("train_loss") or []
        first = points[0][0] if points else step + 1
        curve = [point for point in earlier if point[0] < first] + points
        Job.objects.filter(pk=job.pk).update(metrics=json_safe({**job.metrics, "live": {"train_loss": curve}}))

    return on_progress


def trained_config(config, output_dir: Path) -> dict:
    """The config the child trained with, as it saved it (``auto`` settings decided for its machine), else
    ``config``."""
    from alignment.config import config_to_dict

    saved = output_dir / "train_config.json"
    try:
        return json.loads(saved.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return config_to_dict(config)


def reward_train_run(*, job: Job) -> ModelVersion:
    """Train the job's reward model (resuming from its newest checkpoint) and register it."""
    from alignment.checkpoints import checkpoints
    from alignment.config import config_from_dict
    from alignment.reward.config import RewardTrainConfig

    snapshot = DatasetSnapshot.objects.get(pk=job.params["snapshot_id"])
    base = reward_base_config()
    job.append_log(f"base config: {settings.VIDPREF_REWARD_CONFIG}" if settings.VIDPREF_REWARD_CONFIG else
                   "base config: the small CPU backbone (set VIDPREF_REWARD_CONFIG for Qwen2-VL)")
    folder = job_folder(job)
    values = _merge(base, job.params.get("config") or {})
    values.update(output_dir=str(folder / "reward"), snapshot=str(_local_snapshot(snapshot, folder)),
                  media_root=str(settings.MEDIA_ROOT), progress=False)
    if not values.get("frame_cache_dir") and settings.VIDPREF_FRAME_CACHE:
        values["frame_cache_dir"] = settings.VIDPREF_FRAME_CACHE  # shared by every run on this machine
        if values.get("frame_cache_max_gb") is None and settings.VIDPREF_FRAME_CACHE_MAX_GB > 0:
            values["frame_cache_max_gb"] = settings.VIDPREF_FRAME_CACHE_MAX_GB
    config = config_from_dict(RewardTrainConfig, values, where=f"job {job.pk}'s reward config")

    existing = checkpoints(Path(config.output_dir))
    if existing:
        job.append_log(f"resuming from checkpoint {existing[-1].name}")

    metrics = run_trainer(job=job, command="reward-train", config=config, on_progress=training_progress(job))
    # The model registered is the chosen epoch's (keep_best) or the last one's; so are its accuracies.
    chosen_step = (metrics.get("best") or {}).get("step")
    last = next((entry for entry in metrics["eval"] if entry["step"] == chosen_step), metrics["eval"][-1])
    validation = {dim: {key: last[dim][key] for key in ("accuracy_with_ties", "accuracy_without_ties")}
                  for dim in DIMENSIONS if dim in last}
    job.append_log("validation accuracy with / without ties: " + (", ".join(
        f"{dim} {scores['accuracy_with_ties']:.3f} / {scores['accuracy_without_ties']:.3f}"
        for dim, scores in validation.items()) or "no validation pairs"))
    return ModelVersion.objects.create(
        kind=ModelVersion.Kind.REWARD, name=f"reward-{job.pk}", path=str(Path(config.output_dir) / "model"),
        snapshot=snapshot, config=trained_config(config, Path(config.output_dir)), job=job,
        metrics=json_safe({"validation": validation, "validation_pairs": last.get("n_pairs", 0),
                           "epoch": last.get("epoch"),
                           "final_train_loss": metrics["train_loss"][-1]["loss"] if metrics["train_loss"] else None,
                           "train_samples_per_second": metrics.get("train_samples_per_second"),
                           "normalization": metrics.get("normalization"),
                           "charts": training_charts(metrics)}),
    )


def training_charts(metrics: dict, *, max_points: int = 400) -> dict:
    """The curves the job page and the model comparison draw: training loss by step, and each evaluation's
    accuracy without ties per dimension."""
    losses = [[point["step"], point["loss"]] for point in metrics.get("train_loss", [])]
    stride = max(1, len(losses) // max_points)
    accuracy = {dim: [[entry["step"], entry[dim]["accuracy_without_ties"]] for entry in metrics.get("eval", [])
                      if dim in entry] for dim in DIMENSIONS}
    return {"train_loss": losses[::stride], "val_accuracy_without_ties": accuracy}


def reward_work(job: Job) -> tuple[dict, dict]:
    """A reward job's work (run by ``job_execute``): (result, metrics)."""
    version = reward_train_run(job=job)
    return {"model_version_id": version.pk, "name": version.name, "path": version.path}, version.metrics
