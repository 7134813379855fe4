"""``python -m alignment sample-plan``: sample videos from flow policies as a JSON plan says, in a process of its own.

A Celery worker's pair generation and guided previews run their GPU part through this command (their task runs
in a forked, daemonic child of the worker, which must not hold CUDA or start processes): the worker writes the
plan, follows ``--progress-file`` and reads ``--result``. Without Django; the plan names folders, prompts and
seeds, nothing of the database.

The plan (JSON)::

    {"config": {GenerationConfig values: steps, guidance_scale, weights, guidance_strength, …},
     "latent_reward": "<folder>" | null, "latent_reward_name": "latent-reward-5",
     "score_latents": false,                 # also the latent reward's normalised (VQ, MQ, TA) of each clip
     "reward_model": "<folder>" | null,      # score every clip with VideoReward (weighted normalised mean)
     "total": 9,                              # the progress bar's length (default: the clips, +1 for scoring)
     "sides": [{"name": "a", "policy": "<folder>", "label": "flow-dpo-3+nrg(…)", "prompts": […],
                "seeds": […], "guided": true, "folder": "<out>", "stems": ["a-00000", …]}, …]}

The result: ``{"fps": 16, "sides": {"a": {"paths": […], "latent_scores": [[vq, mq, ta], …]}, …},
"reward_scores": {"a": […], …}}``; a plan the models cannot run (a latent reward model that reads other latents
than the policy makes) exits with code 2 and ``{"error": {"field", "message"}}`` as the result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from alignment.flow.config import GenerationConfig

SAMPLING_BATCH = 4  # clips sampled at once


class PlanError(ValueError):
    """A plan the models cannot run; ``field`` names the input to change (the worker's form field)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def clip_batches(policy, prompts: list[str], seeds: list[int], *, config: GenerationConfig, latent_reward=None):
    """One clip per (prompt, seed), ``SAMPLING_BATCH`` at a time, reward-guided (Flow-NRG with the config's
    weights and strength) when ``latent_reward`` is given. Yields (uint8 clips (b, T, H, W, 3), final latents
    (b, C, t, h, w), text embeddings (b, L, D)) per batch; the initial noise of each clip comes from its own seed,
    as in ``sample_videos``."""
    from alignment.flow.guidance import reward_guidance
    from alignment.flow.sample import initial_noise, sample_latents

    latent_shape = policy.latent_shape()
    negative = policy.pad_text(policy.encode_prompts([""])) if config.guidance_scale != 1.0 else None  # (1, L, D)
    for start in range(0, len(prompts), SAMPLING_BATCH):
        chunk = prompts[start : start + SAMPLING_BATCH]
        text = policy.pad_text(policy.encode_prompts(chunk))  # (b, L, D): guidance reads one row per clip
        transform = (
            reward_guidance(
                latent_reward,
                text,
                weights=config.dimension_weights(),
                scale=config.guidance_strength,
                sigma_min=config.guidance_sigma_min,
                max_ratio=config.guidance_max_ratio,
            )
            if latent_reward is not None
            else None
        )
        noise = initial_noise(seeds[start : start + SAMPLING_BATCH], latent_shape)
        latents = sample_latents(
            policy,
            text,
            None if negative is None else negative.expand(len(chunk), -1, -1),
            noise,
            steps=config.steps,
            guidance_scale=config.guidance_scale,
            velocity_transform=transform,
        )
        yield policy.decode_latents(latents), latents, text


def latent_reward_check(latent_reward, policy, name: str) -> None:
    """The latent reward model must read this policy's latents and text embeddings."""
    mine, theirs = latent_reward.transformer_config, policy.transformer.config
    for key in ("in_channels", "text_dim"):
        if mine.get(key) != theirs.get(key):
            raise PlanError(
                "latent_reward_version",
                f"{name} reads latents with {key}={mine.get(key)} but the policy "
                f"makes {theirs.get(key)}; train a latent reward model on this "
                "policy's base",
            )


def run_plan(plan: dict, *, report: Callable[[int, int, str], None] = lambda done, total, text: None) -> dict:
    """Sample, write and score what ``plan`` says (see the module docstring); ``report(done, total, text)`` after
    each batch."""
    import torch

    from alignment.flow.latent_reward import load_latent_reward
    from alignment.flow.model import load_policy
    from alignment.flow.sample import write_clips

    config = GenerationConfig(**plan.get("config", {}))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    latent_reward = (
        load_latent_reward(plan["latent_reward"], map_location=device) if plan.get("latent_reward") else None
    )
    sides = plan["sides"]
    clips_total = sum(len(side["seeds"]) for side in sides)
    total = plan.get("total") or clips_total + (1 if plan.get("reward_model") else 0)
    result: dict = {"sides": {}, "fps": None}
    policy, loaded_from, done = None, None, 0
    for side in sides:
        label, count = side.get("label", side["name"]), len(side["seeds"])
        if side["policy"] != loaded_from:
            policy = None  # free the previous policy before loading the next
            report(done, total, f"loading {label}")
            policy, loaded_from = load_policy(side["policy"], device=device), side["policy"]
            if latent_reward is not None:
                latent_reward_check(latent_reward, policy, plan.get("latent_reward_name") or plan["latent_reward"])
        report(done, total, f"sampling {count} clip{'s' if count != 1 else ''}: {label}")
        assert policy is not None  # loaded for this side or an earlier one
        clips: list = []
        scores: list[float] = []
        for batch, latents, text in clip_batches(
            policy,
            side["prompts"],
            side["seeds"],
            config=config,
            latent_reward=latent_reward if side.get("guided") else None,
        ):
            clips.extend(batch)
            if plan.get("score_latents") and latent_reward is not None:
                with torch.no_grad():  # the latent reward's view of the clean result (σ = 0)
                    rewards = latent_reward.normalize(
                        latent_reward(latents.to(device), torch.zeros(len(batch), device=device), text.to(device))
                    )
                scores.extend(rewards.float().cpu().tolist())
            done += len(batch)
            report(done, total, f"sampled {len(clips)} of {count}: {label}")
        paths = write_clips(clips, side["folder"], side["stems"], fps=policy.fps)
        result["sides"][side["name"]] = {"paths": [str(path) for path in paths], "latent_scores": scores or None}
        result["fps"] = policy.fps
    policy = None
    if plan.get("reward_model"):
        from alignment.flow.preference import reward_model_scores

        report(done, total, f"scoring with {plan.get('reward_model_name') or plan['reward_model']}")
        items = [
            (path, prompt)
            for side in sides
            for path, prompt in zip(result["sides"][side["name"]]["paths"], side["prompts"])
        ]
        model_scores = reward_model_scores(plan["reward_model"], items, progress=False)
        result["reward_scores"] = {
            side["name"]: [
                model_scores[(path, prompt)]
                for path, prompt in zip(result["sides"][side["name"]]["paths"], side["prompts"])
            ]
            for side in sides
        }
        done += 1
    report(done, total, "sampled")
    return result


def main(args) -> int:
    """The ``sample-plan`` command: ``--plan``, ``--progress-file``, ``--result``."""
    from alignment.progress import ProgressFile

    plan = json.loads(Path(args.plan).read_text())
    progress = ProgressFile(args.progress_file) if args.progress_file else None
    try:
        result = run_plan(plan, report=progress.report if progress else lambda done, total, text: None)
    except PlanError as error:
        Path(args.result).write_text(json.dumps({"error": {"field": error.field, "message": str(error)}}))
        print(f"sample-plan: {error}")
        return 2
    Path(args.result).write_text(json.dumps(result, indent=2))
    return 0
