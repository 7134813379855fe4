"""Guided previews for the admin's personalisation page (``gpu`` queue): one prompt and one seed, sampled
without and with Flow-NRG reward guidance (the admin's VQ/MQ/TA weights and strength w), written as
``unguided.mp4`` and ``guided.mp4`` in the job's folder. The latent reward model's scores of both clean
results (σ = 0) are recorded, so the page shows what the guidance changed.

Preview jobs (``preview``): ``preview_job_create`` checks the inputs, records and queues one (the web side);
``preview_work`` runs it (the worker side, the sampling in a child process)."""

from __future__ import annotations

import dataclasses

from alignment.flow.config import GenerationConfig
from alignment.labels import DIMENSION_NAMES
from workers.models import Job, ModelVersion
from workers.services.alignment import base_policy_folder
from workers.services.generation import (
    GenerationInputError,
    generation_config,
    generation_limits_check,
    generator_name,
    guidance_inputs_check,
    model_version_check,
)
from workers.services.jobs import job_create, job_folder
from workers.services.launch import SamplingPlanError, run_sampling

PREVIEW_FILES = {"unguided": "unguided.mp4", "guided": "guided.mp4"}
MAX_SEED = 2**31 - 1


def preview_job_create(
    *,
    prompt: str,
    seed: int,
    latent_reward_version: ModelVersion | None,
    policy_version: ModelVersion | None = None,
    weights: str = GenerationConfig.weights,
    guidance_strength: float = GenerationConfig.guidance_strength,
    guidance_sigma_min: float = GenerationConfig.guidance_sigma_min,
    guidance_max_ratio: float = GenerationConfig.guidance_max_ratio,
    steps: int = GenerationConfig.steps,
    guidance_scale: float = GenerationConfig.guidance_scale,
    created_by=None,
) -> Job:
    """Queue a guided preview of ``prompt`` with ``policy_version`` (None: the base policy)."""
    prompt = prompt.strip()
    if not prompt:
        raise GenerationInputError("prompt", "choose a prompt or type one")
    if not 0 <= seed <= MAX_SEED:
        raise GenerationInputError("seed", f"{seed}: give a seed from 0 to {MAX_SEED}")
    config = generation_config(
        {
            "weights": weights,
            "guidance_strength": guidance_strength,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "guidance_sigma_min": guidance_sigma_min,
            "guidance_max_ratio": guidance_max_ratio,
        }
    )
    generation_limits_check(config)
    model_version_check(policy_version, ModelVersion.Kind.POLICY, "policy_version")
    guidance_inputs_check(config, latent_reward_version, required=True)
    params = {
        "prompt": prompt,
        "seed": seed,
        "weights": config.weights_label(),
        "guidance_strength": config.guidance_strength,
        "guidance_sigma_min": config.guidance_sigma_min,
        "guidance_max_ratio": config.guidance_max_ratio,
        "steps": config.steps,
        "guidance_scale": config.guidance_scale,
        "policy_model_version_id": policy_version.pk if policy_version else None,
        "latent_reward_model_version_id": latent_reward_version.pk,
    }
    return job_create(kind=Job.Kind.PREVIEW, params=params, created_by=created_by)


def preview_work(job: Job) -> dict:
    """A preview job's work (run by ``job_execute``): sample the prompt unguided and guided, and score both with the
    latent reward, in a child process (``alignment.cli_sample``: this task's process is a daemonic child of the
    worker, which must not hold CUDA)."""
    params = job.params
    config = generation_config(params)
    versions = ModelVersion.objects.in_bulk(
        [pk for pk in (params.get("policy_model_version_id"), params["latent_reward_model_version_id"]) if pk]
    )
    policy_version = versions.get(params.get("policy_model_version_id"))
    latent_version = versions[params["latent_reward_model_version_id"]]
    policy_name = policy_version.name if policy_version else "base"
    policy_folder = str(policy_version.path if policy_version else base_policy_folder())
    prompt, seed = params["prompt"], int(params["seed"])
    folder = job_folder(job)
    generators = {"unguided": policy_name, "guided": generator_name(policy_name, config, guided=True)}
    plan = {
        "config": dataclasses.asdict(config),
        "latent_reward": latent_version.path,
        "latent_reward_name": latent_version.name,
        "score_latents": True,
        "sides": [
            {
                "name": side,
                "policy": policy_folder,
                "label": generators[side],
                "prompts": [prompt],
                "seeds": [seed],
                "guided": side == "guided",
                "folder": str(folder),
                "stems": [PREVIEW_FILES[side].removesuffix(".mp4")],
            }
            for side in ("unguided", "guided")
        ],
    }
    try:
        sampled = run_sampling(job=job, plan=plan)
    except SamplingPlanError as error:
        raise GenerationInputError(error.field or "latent_reward_version", str(error)) from None
    weights = config.dimension_weights()
    scores = {}
    for side in ("unguided", "guided"):
        rewards = sampled["sides"][side]["latent_scores"][0]  # the latent reward's view of the clean result (σ = 0)
        scores[side] = {
            "weighted": float(sum(w * r for w, r in zip(weights, rewards))),
            **{dim: float(value) for dim, value in zip(DIMENSION_NAMES, rewards)},
        }
    job.append_log(
        f"{prompt!r}, seed {seed}: latent reward {scores['unguided']['weighted']:+.3f} unguided, "
        f"{scores['guided']['weighted']:+.3f} guided "
        f"({config.weights_label()}, w={config.guidance_strength:g})"
    )
    return {
        "videos": PREVIEW_FILES,
        "latent_reward_scores": scores,
        "prompt": prompt,
        "seed": seed,
        "weights": dict(zip(DIMENSION_NAMES, weights)),
        "guidance_strength": config.guidance_strength,
        "guidance_sigma_min": config.guidance_sigma_min,
        "guidance_max_ratio": config.guidance_max_ratio,
        "policy": policy_name,
        "latent_reward": latent_version.name,
        "fps": sampled["fps"],
        "generators": generators,
    }
