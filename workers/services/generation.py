"""New pairs for labelling (``gpu`` queue): the aligned policy and the base policy generate a clip each for a
prompt (each its own seed, so even a policy that barely moved yields two different videos), the reward model scores both, and the pair joins the annotation queue with a
priority that is higher the less sure the reward model is (small |Δr|): active learning.

Prompts come from the job's ``prompt_file`` (CSV with a ``prompt`` column, or one prompt a line), else
``VIDPREF_PROMPT_SET``, else the prompts already in the database.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from django.conf import settings

from annotate.models import Prompt
from annotate.services.ingest import GeneratedPair, generated_pairs_queue
from workers.models import Job, ModelVersion
from workers.services.jobs import job_folder


def prompts_load(path: str | Path | None) -> list[str]:
    """Prompts from a CSV with a ``prompt`` column or a text file with one a line; the database's without a path."""
    if not path:
        return list(Prompt.objects.order_by("pk").values_list("text", flat=True))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompt file not found")
    with open(path, newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(handle)
            if "prompt" not in (reader.fieldnames or []):
                raise ValueError(f"{path}: a prompt CSV needs a 'prompt' column; found {reader.fieldnames}")
            prompts = [row["prompt"].strip() for row in reader]
        else:
            prompts = [line.strip() for line in handle]
    prompts = [prompt for prompt in prompts if prompt]
    if not prompts:
        raise ValueError(f"{path}: no prompts in it")
    return prompts


def generation_job_create(*, policy_version: ModelVersion, reward_version: ModelVersion | None = None,
                          overrides: dict | None = None, created_by=None) -> Job:
    """Queue pair generation with ``policy_version``; ``overrides`` are GenerationConfig values."""
    from workers.services.jobs import _Sender, job_create

    if policy_version.kind != ModelVersion.Kind.POLICY:
        raise ValueError(f"{policy_version.name} is not an aligned policy")
    if reward_version is not None and reward_version.kind != ModelVersion.Kind.REWARD:
        raise ValueError(f"{reward_version.name} is not a reward model")
    params = {**(overrides or {}), "policy_model_version_id": policy_version.pk,
              "reward_model_version_id": reward_version.pk if reward_version else None}
    return job_create(kind=Job.Kind.GENERATE, params=params, created_by=created_by,
                      task=_Sender("workers.tasks.gpu.generate_pairs"))


def uncertainty_priority(reward_a: float, reward_b: float) -> float:
    """In (0, 1]: 1 when the reward model cannot tell the two apart, towards 0 as it grows sure."""
    return 1.0 / (1.0 + abs(reward_a - reward_b))


def pairs_generate_run(*, job: Job) -> dict:
    import torch

    from alignment.flow.model import load_policy
    from alignment.flow.preference import reward_model_scores
    from alignment.flow.sample import sample_videos, write_clips
    from workers.services.alignment import base_policy_folder

    params = job.params
    count = int(params.get("pairs") or settings.VIDPREF_PIPELINE_GENERATE_PAIRS)
    prompts = prompts_load(params.get("prompt_file") or settings.VIDPREF_PROMPT_SET or None)
    if not prompts:
        raise ValueError("no prompts to generate for: give the job a prompt_file, set VIDPREF_PROMPT_SET, "
                         "or import some pairs first")
    policy_version = ModelVersion.objects.get(pk=params["policy_model_version_id"])
    rng = random.Random(job.pk)
    chosen = [rng.choice(prompts) for _ in range(count)]
    seeds = [rng.randrange(2**31) for _ in range(count)]
    folder = job_folder(job) / "videos"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sampling = {"steps": int(params.get("steps", 20)), "guidance_scale": float(params.get("guidance_scale", 5.0))}
    names = {}
    side_seeds = {"a": seeds, "b": [seed + 1 for seed in seeds]}
    for side, (source, label) in {"a": (policy_version.path, policy_version.name),
                                  "b": (str(base_policy_folder()), "base")}.items():
        job.report_progress({"a": 0, "b": 1}[side], 3, f"sampling {count} clips from {label}")
        policy = load_policy(source, device=device)
        clips = sample_videos(policy, chosen, side_seeds[side], progress=False, **sampling)
        names[side] = write_clips(clips, folder, [f"{side}-{index:05d}" for index in range(count)], fps=policy.fps)
        names[f"{side}_label"] = label
        del policy
    reward_id = params.get("reward_model_version_id")
    job.report_progress(2, 3, "scoring with the reward model" if reward_id else "queueing")
    if reward_id:
        items = [(str(path), prompt) for side in "ab" for path, prompt in zip(names[side], chosen)]
        scores = reward_model_scores(ModelVersion.objects.get(pk=reward_id).path, items, progress=False)
        rewards = [(scores[(str(a), p)], scores[(str(b), p)]) for a, b, p in zip(names["a"], names["b"], chosen)]
    else:
        rewards = [(0.0, 0.0)] * count
    pairs = [GeneratedPair(prompt=prompt, video_a=a, video_b=b, generator_a=names["a_label"], generator_b="base",
                           params_a={"seed": seed, "reward": ra, **sampling},
                           params_b={"seed": seed + 1, "reward": rb, **sampling},
                           priority=uncertainty_priority(ra, rb))
             for prompt, seed, a, b, (ra, rb) in zip(chosen, seeds, names["a"], names["b"], rewards)]
    report = generated_pairs_queue(pairs=pairs, source=f"generated:job-{job.pk}",
                                   name=f"generated by {policy_version.name} (job {job.pk})", created_by=job.created_by)
    job.append_log(report.summary())
    return {**report.as_dict(), "policy": policy_version.name}


def generate_work(job: Job) -> dict:
    return pairs_generate_run(job=job)
