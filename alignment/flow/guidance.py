"""Flow-NRG: reward guidance of a flow policy's sampling by a latent reward model, and guided generation.

The velocity is edited at every sampling step (``sample_latents``'s ``velocity_transform``, applied after
classifier-free guidance):

    ṽ = v − w · σ/(1 − σ) · ∇ₓ r(x_σ, σ, y),    r = Σ_d w_d · r̂_d (normalised VQ, MQ, TA)

The sign, in this library's convention (x_σ = (1 − σ)·x₀ + σ·ε, σ = 1 noise → 0 data): the optimal velocity
is v = E[ε − x₀ | x_σ] = (E[ε | x_σ] − x_σ)/(1 − σ) (substituting x₀ = (x_σ − σ·ε)/(1 − σ)), and Tweedie's
formula gives E[ε | x_σ] = −σ·∇ log p_σ(x_σ), so

    v = −(x_σ + σ · ∇ log p_σ(x_σ)) / (1 − σ).

Sampling from the tilted density p_σ · exp(w·r) replaces the score by ∇ log p_σ + w·∇r, which adds exactly
−w · σ/(1 − σ) · ∇r to v: the paper's formula holds with t = σ. The term is −(positive)·∇r, and since σ
falls during sampling, x ← x + (σ_next − σ)·ṽ adds (σ − σ_next)·w·σ/(1 − σ)·∇r, a step *up* the reward.
(Read with the opposite time convention, t = 1 − σ, the same formula would push the reward down.)

σ/(1 − σ) grows without bound as σ → 1, where x_σ is nearly pure noise and the reward model's gradient
carries almost no information; the coefficient is capped at ``max_ratio`` (10 by default: the cap binds
for σ > 10/11 ≈ 0.91, the first few steps of a 30-step schedule), so those steps get a bounded push.

``sigma_min`` (0 by default: every step, as the paper) leaves the steps with σ ≤ ``sigma_min`` unguided: the
reward's gradient is computed in latent space and can carry high-frequency detail that the last few
denoising steps then keep; stopping the guidance a little before the end lets the policy clean that up (a
guidance interval, as Kynkäänniemi et al. 2024 found for classifier-free guidance).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from alignment.flow.config import DEFAULT_MAX_RATIO, DEFAULT_SCALE, parse_weights  # noqa: F401  (torch-free)
from alignment.flow.latent_reward import LatentRewardModel
from alignment.flow.model import FlowPolicy
from alignment.flow.sample import VelocityTransform, sample_videos, write_clips
from alignment.labels import DIMENSION_NAMES


def reward_guidance(
    latent_reward: LatentRewardModel,
    text_embeds: torch.Tensor,
    *,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
    scale: float = DEFAULT_SCALE,
    max_ratio: float = DEFAULT_MAX_RATIO,
    sigma_min: float = 0.0,
) -> VelocityTransform:
    """A ``velocity_transform`` for ``sample_latents`` / ``sample_videos``: ṽ = v − scale · min(σ/(1 − σ),
    max_ratio) · ∇ₓ r(x_σ, σ, y), r the ``weights``-weighted sum of the normalised VQ, MQ, TA; steps at
    σ ≤ ``sigma_min`` are left unguided.

    ``text_embeds`` (B, L, D) or (1, L, D), padded as the policy pads them (``policy.pad_text``): the
    prompt(s) of the clips being sampled, one row for all of them or one per clip. With ``scale`` 0 or
    all ``weights`` 0 the velocity is returned untouched (the reward model is not run)."""
    if len(weights) != len(DIMENSION_NAMES):
        raise ValueError(f"weights {tuple(weights)}: give one per dimension ({', '.join(DIMENSION_NAMES)})")
    if max_ratio <= 0:
        raise ValueError(f"max_ratio {max_ratio}: must be > 0")
    if not 0.0 <= sigma_min < 1.0:
        raise ValueError(f"sigma_min {sigma_min}: must be in [0, 1) (0 guides every step)")
    weights = tuple(float(w) for w in weights)
    active = scale != 0 and any(weights)
    latent_reward.eval()

    def transform(latents: torch.Tensor, sigmas: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        if not active or bool((sigmas <= sigma_min).all()):
            return velocity
        text = text_embeds.to(latents.device)
        if text.shape[0] != latents.shape[0]:
            text = text.expand(latents.shape[0], -1, -1)
        with torch.enable_grad():  # sampling runs under no_grad
            x = latents.detach().float().requires_grad_(True)
            reward = latent_reward.score(x, sigmas, text, weights)  # (B,); clips are independent
            (gradient,) = torch.autograd.grad(reward.sum(), x)
        ratio = (sigmas / (1.0 - sigmas).clamp_min(1e-12)).clamp(max=max_ratio) * (sigmas > sigma_min)
        ratio = ratio.view(-1, *([1] * (latents.dim() - 1)))
        return velocity - scale * ratio * gradient

    return transform


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a CSV with a ``prompt`` column, or a text file with one a line (blank lines skipped)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if "prompt" not in (reader.fieldnames or []):
                raise ValueError(
                    f"{path}: no 'prompt' column (found {reader.fieldnames}); add one, or give a "
                    f"text file with one prompt a line"
                )
            prompts = [row["prompt"].strip() for row in reader if row["prompt"] and row["prompt"].strip()]
    else:
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def generate_videos(
    policy: FlowPolicy,
    prompts: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    latent_reward: LatentRewardModel | None = None,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
    scale: float = DEFAULT_SCALE,
    sigma_min: float = 0.0,
    max_ratio: float = DEFAULT_MAX_RATIO,
    steps: int = 30,
    guidance_scale: float = 5.0,
    negative_prompt: str = "",
    batch_size: int = 4,
    progress: bool = True,
) -> list[dict]:
    """One MP4 per (prompt, seed) in ``out_dir`` (``p<prompt index>-s<seed>.mp4``), reward-guided when
    ``latent_reward`` is given, and ``out_dir/videos.jsonl`` listing prompt, seed, weights, scale, max_ratio, file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for index, prompt in enumerate(prompts):
        transform = None
        if latent_reward is not None:
            text = policy.pad_text(policy.encode_prompts([prompt]))  # (1, L, D)
            transform = reward_guidance(
                latent_reward, text, weights=weights, scale=scale, max_ratio=max_ratio, sigma_min=sigma_min
            )
        clips = sample_videos(
            policy,
            [prompt] * len(seeds),
            list(seeds),
            steps=steps,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            batch_size=batch_size,
            velocity_transform=transform,
            progress=progress,
        )
        names = [f"p{index:04d}-s{seed}" for seed in seeds]
        for seed, path in zip(seeds, write_clips(clips, out_dir, names, fps=policy.fps)):
            records.append(
                {
                    "prompt": prompt,
                    "seed": int(seed),
                    "weights": dict(zip(DIMENSION_NAMES, weights)) if latent_reward is not None else None,
                    "scale": scale if latent_reward is not None else None,
                    "max_ratio": max_ratio if latent_reward is not None else None,
                    "file": path.name,
                }
            )
    with open(out_dir / "videos.jsonl", "w") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    return records
