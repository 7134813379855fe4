"""What the training kinds of job share (a reward model: ``workers.services.reward``; a policy or a latent reward
model: ``workers.services.alignment``): the job's config as the site's base with the admin's changes over it, the
trainer's progress as the job's, and the config the trainer saved.

The trainer itself runs in a child process (``workers.services.launch.run_trainer``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from alignment.config import config_to_dict
from workers.models import Job
from workers.services.jobs import json_safe


def config_merge(base: dict, overrides: dict) -> dict:
    """``overrides`` over ``base``, nested dicts merged key by key (``{"model": {"lora_rank": 16}}`` keeps the
    base's other ``model`` values)."""
    merged = dict(base)
    for key, value in overrides.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = config_merge(merged[key], value) if nested else value
    return merged


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
    saved = output_dir / "train_config.json"
    try:
        return json.loads(saved.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return config_to_dict(config)
