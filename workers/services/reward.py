"""Reward-model jobs (``reward``, ``gpu`` queue): VideoReward trained on a snapshot, registered as a ``ModelVersion``.

The web side (``reward_job_create``) only records the job, it never imports torch; the worker side
(``reward_work``) builds the ``alignment`` config, trains in a child process and registers the model. A job
delivered again (worker killed) resumes from the newest checkpoint in its folder.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from alignment.config import config_from_dict, read_config_file
from alignment.labels import DIMENSION_NAMES
from alignment.reward.config import RewardTrainConfig
from workers.models import DatasetSnapshot, Job, ModelVersion
from workers.services.jobs import job_create, job_folder, json_safe
from workers.services.launch import run_trainer
from workers.services.snapshots import snapshot_local_folder
from workers.services.training import config_merge, trained_config, training_progress

SMALL_BACKBONE_CONFIG = {
    "model": {"backbone": "small"},
    "learning_rate": 1e-3,
    "epochs": 4,
    "batch_size": 16,
    "warmup_steps": 20,
    "num_workers": 2,
    "cache_videos": 256,
    "keep_best": True,
}
"""Used when ``VIDPREF_REWARD_CONFIG`` names no file: a small video transformer that trains on a CPU.
For the paper's model, point ``VIDPREF_REWARD_CONFIG`` at a RewardTrainConfig with a local Qwen2-VL folder."""


def reward_base_config() -> dict:
    """The site's reward training defaults: ``VIDPREF_REWARD_CONFIG``'s file, else the small CPU backbone."""
    return read_config_file(settings.VIDPREF_REWARD_CONFIG) if settings.VIDPREF_REWARD_CONFIG else SMALL_BACKBONE_CONFIG


def reward_job_create(
    *,
    snapshot: DatasetSnapshot,
    init_version: ModelVersion | None = None,
    overrides: dict | None = None,
    created_by=None,
) -> Job:
    """Queue reward-model training on ``snapshot``; ``overrides`` are RewardTrainConfig values (nested dicts).
    ``init_version``: a VideoAlign-format reward version (the released VideoReward) to fine-tune instead of a new
    model."""
    if snapshot.kind != DatasetSnapshot.Kind.TRAINING:
        raise ValueError(f"snapshot {snapshot.name} is an evaluation set; train on a training snapshot")
    if not snapshot.counts.get("train"):
        raise ValueError(f"snapshot {snapshot.name} has no pairs in its train split")
    params: dict = {"snapshot_id": snapshot.pk, "config": overrides or {}}
    if init_version is not None:
        if init_version.kind != ModelVersion.Kind.REWARD or (init_version.config or {}).get("format") != "videoalign":
            raise ValueError(
                f"model version {init_version.name} is not a VideoAlign reward checkpoint; register one with "
                "`manage.py register_videoalign_model` to start from it"
            )
        params["init_version_id"] = init_version.pk
    return job_create(kind=Job.Kind.REWARD, params=params, created_by=created_by)


def reward_work(job: Job) -> tuple[dict, dict]:
    """A reward job's work (run by ``job_execute``): train the job's reward model (resuming from its newest
    checkpoint), register it, and return (result, metrics)."""
    from alignment.checkpoints import checkpoints  # worker side only: the web imports this module to create jobs

    snapshot = DatasetSnapshot.objects.get(pk=job.params["snapshot_id"])
    base = reward_base_config()
    job.append_log(
        f"base config: {settings.VIDPREF_REWARD_CONFIG}"
        if settings.VIDPREF_REWARD_CONFIG
        else "base config: the small CPU backbone (set VIDPREF_REWARD_CONFIG for Qwen2-VL)"
    )
    folder = job_folder(job)
    values = config_merge(base, job.params.get("config") or {})
    values.update(
        output_dir=str(folder / "reward"),
        snapshot=str(snapshot_local_folder(snapshot, folder)),
        media_root=str(settings.MEDIA_ROOT),
        progress=False,
    )
    init_version = None
    if job.params.get("init_version_id"):
        init_version = ModelVersion.objects.get(pk=job.params["init_version_id"])
        values.update(init_from=init_version.path, init_from_base_model=init_version.config.get("base_model"))
        job.append_log(f"fine-tuning VideoAlign checkpoint {init_version.name} ({init_version.path})")
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
    validation = {
        dim: {key: last[dim][key] for key in ("accuracy_with_ties", "accuracy_without_ties")}
        for dim in DIMENSION_NAMES
        if dim in last
    }
    job.append_log(
        "validation accuracy with / without ties: "
        + (
            ", ".join(
                f"{dim} {scores['accuracy_with_ties']:.3f} / {scores['accuracy_without_ties']:.3f}"
                for dim, scores in validation.items()
            )
            or "no validation pairs"
        )
    )
    version_config = trained_config(config, Path(config.output_dir))
    if init_version is not None:  # a VideoAlign folder again: it can be started from, and loads by path
        version_config.update(
            format="videoalign", base_model=init_version.config.get("base_model"), started_from=init_version.name
        )
    version = ModelVersion.objects.create(
        kind=ModelVersion.Kind.REWARD,
        name=f"reward-{job.pk}",
        path=str(Path(config.output_dir) / "model"),
        snapshot=snapshot,
        config=version_config,
        job=job,
        metrics=json_safe(
            {
                "validation": validation,
                "validation_pairs": last.get("n_pairs", 0),
                "epoch": last.get("epoch"),
                "final_train_loss": metrics["train_loss"][-1]["loss"] if metrics["train_loss"] else None,
                "train_samples_per_second": metrics.get("train_samples_per_second"),
                "normalization": metrics.get("normalization"),
                "charts": training_charts(metrics),
            }
        ),
    )
    return {"model_version_id": version.pk, "name": version.name, "path": version.path}, version.metrics


def training_charts(metrics: dict, *, max_points: int = 400) -> dict:
    """The curves the job page and the model comparison draw: training loss by step, and each evaluation's
    accuracy without ties per dimension."""
    losses = [[point["step"], point["loss"]] for point in metrics.get("train_loss", [])]
    stride = max(1, len(losses) // max_points)
    accuracy = {
        dim: [[entry["step"], entry[dim]["accuracy_without_ties"]] for entry in metrics.get("eval", []) if dim in entry]
        for dim in DIMENSION_NAMES
    }
    return {"train_loss": losses[::stride], "val_accuracy_without_ties": accuracy}
