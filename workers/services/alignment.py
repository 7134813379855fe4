"""Aligning the video model (``sft``, ``flow_dpo``, ``flow_rwr``, ``flow_grpo`` jobs) and Flow-NRG's latent reward model
(``latent_reward``) on the ``gpu`` queue, from a snapshot, registered as a ``ModelVersion`` (``policy`` or
``latent_reward``). The trained policy is a LoRA (or a transformer) over the base policy folder. The four kinds
share one trainer runner: ``policy_job_create`` records and queues a job (the web side), ``policy_work`` runs it
(the worker side, the trainer in a child process).

The base policy is ``VIDPREF_BASE_POLICY`` (a local diffusers-format Wan folder). Without it the workers
use a tiny Wan built once in ``var/models`` — enough to run the loop on a CPU, not to make good videos.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from django.conf import settings

from alignment.config import config_from_dict, read_config_file
from alignment.flow.config import TRAINERS, FlowGRPOConfig, LatentRewardConfig
from workers.models import DatasetSnapshot, Job, ModelVersion
from workers.services.jobs import job_create, job_folder, json_safe
from workers.services.launch import run_trainer
from workers.services.snapshots import snapshot_local_folder
from workers.services.training import config_merge, trained_config, training_progress

METHODS = {
    Job.Kind.SFT: "sft",
    Job.Kind.FLOW_DPO: "flow-dpo",
    Job.Kind.FLOW_RWR: "flow-rwr",
    Job.Kind.FLOW_GRPO: "flow-grpo",
    Job.Kind.LATENT_REWARD: "latent-reward-train",
}

# Without VIDPREF_ALIGNMENT_CONFIG: a short LoRA run that a CPU finishes in minutes on the tiny policy.
SMALL_POLICY_CONFIG = {
    "lora_rank": 8,
    "learning_rate": 1e-3,
    "batch_size": 4,
    "epochs": 2,
    "beta": 500.0,
    "max_eval_items": 16,
    "save_every_steps": 20,
    "progress": False,
}
# Flow-GRPO's: few prompts a step, small groups and few SDE steps (each step samples and scores videos)
SMALL_GRPO_CONFIG = {
    "lora_rank": 8,
    "learning_rate": 1e-3,
    "batch_size": 2,
    "group_size": 4,
    "sample_steps": 6,
    "epochs": 1000,  # passes over the prompts: max_steps ends the run
    "max_steps": 20,
    "max_eval_items": 8,
    "eval_sample_steps": 12,
    "save_every_steps": 10,
    "progress": False,
}


def policy_config_class(kind: str):
    """The alignment config dataclass of a policy job kind (torch-free)."""
    if kind == Job.Kind.LATENT_REWARD:
        return LatentRewardConfig
    if kind == Job.Kind.FLOW_GRPO:
        return FlowGRPOConfig
    return TRAINERS[METHODS[kind]]


def base_policy_folder() -> Path:
    """The policy every alignment starts from (see the module docstring)."""
    if settings.VIDPREF_BASE_POLICY:
        folder = Path(settings.VIDPREF_BASE_POLICY)
        if not (folder / "transformer" / "config.json").is_file():
            raise FileNotFoundError(
                f"VIDPREF_BASE_POLICY={folder}: no transformer/config.json there; point it at a "
                "local diffusers-format Wan folder"
            )
        return folder
    folder = Path(settings.VAR_DIR) / "models" / "tiny-wan-policy"
    if not (folder / "transformer" / "config.json").is_file():
        from alignment.flow.tiny import build_tiny_wan_policy  # torch: worker side only, never in the web process

        build_tiny_wan_policy(folder)
    return folder


def policy_base_config(kind: str) -> dict:
    """The site's defaults for a method: ``VIDPREF_ALIGNMENT_CONFIG``'s file, else the small CPU run."""
    configured = settings.VIDPREF_ALIGNMENT_CONFIG
    small = SMALL_GRPO_CONFIG if kind == Job.Kind.FLOW_GRPO else SMALL_POLICY_CONFIG
    base = read_config_file(configured) if configured else small
    accepted = {field.name for field in dataclasses.fields(policy_config_class(kind))}
    return {key: value for key, value in base.items() if key in accepted}


def policy_job_create(
    *,
    kind: str,
    snapshot: DatasetSnapshot,
    overrides: dict | None = None,
    reward_version: ModelVersion | None = None,
    created_by=None,
) -> Job:
    """Queue SFT / Flow-DPO / Flow-RWR / a latent reward model on ``snapshot``; ``reward_version`` relabels pairs
    (or scores RWR videos)."""
    if kind not in METHODS:
        raise ValueError(f"{kind!r} is not an alignment job; choose one of {', '.join(METHODS)}")
    if snapshot.kind != DatasetSnapshot.Kind.TRAINING or not snapshot.counts.get("train"):
        raise ValueError(f"snapshot {snapshot.name}: align on a training snapshot with pairs in its train split")
    if reward_version is not None and kind == Job.Kind.LATENT_REWARD:
        raise ValueError("a latent reward model learns from the snapshot's labels; leave the reward model empty")
    if reward_version is not None and reward_version.kind != ModelVersion.Kind.REWARD:
        raise ValueError(f"{reward_version.name} is not a reward model")
    if kind == Job.Kind.FLOW_GRPO and reward_version is None:
        raise ValueError("Flow-GRPO learns from a reward model's scores of its own samples: choose a reward model")
    params = {
        "snapshot_id": snapshot.pk,
        "config": overrides or {},
        "reward_model_version_id": reward_version.pk if reward_version else None,
    }
    return job_create(kind=kind, params=params, created_by=created_by)


def policy_work(job: Job) -> tuple[dict, dict]:
    """A policy or latent reward job's work (run by ``job_execute``): train with the job's method (resuming from
    its newest checkpoint), register the ModelVersion, and return (result, metrics)."""
    from alignment.checkpoints import checkpoints  # worker side only: the web imports this module to create jobs

    method = METHODS[job.kind]
    latent = job.kind == Job.Kind.LATENT_REWARD
    snapshot = DatasetSnapshot.objects.get(pk=job.params["snapshot_id"])
    folder = job_folder(job)
    values = config_merge(policy_base_config(job.kind), job.params.get("config") or {})
    values.update(
        output_dir=str(folder / "policy"),
        snapshot=str(snapshot_local_folder(snapshot, folder)),
        media_root=str(settings.MEDIA_ROOT),
        policy=str(base_policy_folder()),
        cache_dir=str(Path(settings.VAR_DIR) / "cache" / "flow"),
        progress=False,
    )
    reward_id = job.params.get("reward_model_version_id")
    if method == "flow-grpo":  # the prompts of the snapshot, the samples scored by the reward model
        reward_version = ModelVersion.objects.get(pk=reward_id)
        values.update(reward_model=reward_version.path, reward_base_model=reward_version.config.get("base_model"))
        values = {key: value for key, value in values.items() if key not in ("media_root", "cache_dir")}
    elif reward_id and values.get("label_source") == "reward_model" or method == "flow-rwr" and reward_id:
        values.update(label_source="reward_model", reward_model=ModelVersion.objects.get(pk=reward_id).path)
    config_class = policy_config_class(job.kind)
    config = config_from_dict(config_class, values, where=f"job {job.pk}'s {method} config")
    labels = "" if latent or method == "flow-grpo" else f"; labels: {config.label_source}"
    rewards = f"; rewards from {config.reward_model}" if method == "flow-grpo" else ""
    job.append_log(f"{method} on {snapshot.name} from {config.policy}{labels}{rewards}")
    existing = checkpoints(Path(config.output_dir))
    if existing:
        job.append_log(f"resuming from checkpoint {existing[-1].name}")
    metrics = run_trainer(job=job, command=method, config=config, on_progress=training_progress(job))
    losses = [[point["step"], point["loss"]] for point in metrics.get("train_loss", [])]
    version = ModelVersion.objects.create(
        kind=ModelVersion.Kind.LATENT_REWARD if latent else ModelVersion.Kind.POLICY,
        name=f"{'latent-reward' if latent else method}-{job.pk}",
        path=str(Path(config.output_dir) / "final"),
        snapshot=snapshot,
        config=trained_config(config, Path(config.output_dir)),
        job=job,
        metrics=json_safe(
            {
                "method": method,
                "final_eval": (metrics.get("eval") or [{}])[-1],
                "charts": {
                    "train_loss": losses[:: max(1, len(losses) // 400)],
                    **(
                        {
                            "reward_mean": [
                                [point["step"], point["reward_mean"]] for point in metrics.get("train_loss", [])
                            ][:: max(1, len(losses) // 400)]
                        }
                        if method == "flow-grpo"
                        else {}
                    ),
                },
            }
        ),
    )
    return {"model_version_id": version.pk, "name": version.name, "path": version.path}, version.metrics
