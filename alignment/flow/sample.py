"""Sampling from a flow policy: Euler steps from σ = 1 (noise) to σ = 0 with classifier-free guidance.

The σ grid is uniform in [1, 0] and shifted by the policy scheduler's ``shift`` (``flow_shift``), as
diffusers' FlowMatch schedulers do: σ' = shift·σ / (1 + (shift − 1)·σ). Each step is

    v = v_uncond + g · (v_cond − v_uncond);   v = velocity_transform(x, σ, v) if given;   x ← x + (σ_next − σ) · v

``velocity_transform(latents, sigmas, velocity) -> velocity`` is the hook for guidance that edits the
velocity (Flow-NRG adds a reward gradient there; mind that σ falls during sampling). The initial noise
of each clip comes from its own seed, so a clip does not depend on what it was batched with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from alignment.flow.model import FlowPolicy

VelocityTransform = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sampling_sigmas(steps: int, shift: float = 1.0) -> torch.Tensor:
    """steps + 1 noise levels from 1 down to 0, shifted."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def initial_noise(seeds: Sequence[int], latent_shape: tuple[int, ...]) -> torch.Tensor:
    """(N, *latent_shape) standard normal noise, row i from ``seeds[i]``."""
    return torch.stack(
        [torch.randn(latent_shape, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
    )


@torch.no_grad()
def sample_latents(
    policy: FlowPolicy,
    text_embeds: torch.Tensor,
    negative_embeds: torch.Tensor | None,
    noise: torch.Tensor,
    *,
    steps: int = 30,
    guidance_scale: float = 5.0,
    shift: float | None = None,
    velocity_transform: VelocityTransform | None = None,
) -> torch.Tensor:
    """Integrate ``noise`` (B, C, t, h, w) to latents; ``text_embeds``/``negative_embeds`` (B, L, D).

    Guidance needs ``negative_embeds`` when ``guidance_scale`` ≠ 1."""
    device = policy.device
    latents = noise.to(device, torch.float32)
    text = text_embeds.to(device)
    guided = guidance_scale != 1.0
    if guided:
        if negative_embeds is None:
            raise ValueError("guidance_scale ≠ 1 needs negative_embeds (the empty or negative prompt's embeddings)")
        text = torch.cat([negative_embeds.to(device), text])
    sigmas = sampling_sigmas(steps, policy.sampling_shift if shift is None else shift)
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        batch_sigmas = torch.full((latents.shape[0],), sigma, device=device)
        if guided:
            unconditional, conditional = policy.velocity(
                torch.cat([latents, latents]), torch.cat([batch_sigmas, batch_sigmas]), text
            ).chunk(2)
            velocity = unconditional + guidance_scale * (conditional - unconditional)
        else:
            velocity = policy.velocity(latents, batch_sigmas, text)
        if velocity_transform is not None:
            velocity = velocity_transform(latents, batch_sigmas, velocity)
        latents = latents + (sigma_next - sigma) * velocity
    return latents


def sample_videos(
    policy: FlowPolicy,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int = 30,
    guidance_scale: float = 5.0,
    negative_prompt: str = "",
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 4,
    velocity_transform: VelocityTransform | None = None,
    progress: bool = True,
) -> np.ndarray:
    """One clip per (prompt, seed): uint8 (N, T, H, W, 3). Sizes default to the policy's."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
    latent_shape = policy.latent_shape(num_frames, height, width)
    policy.transformer.eval()
    clips = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="sample", disable=not progress, leave=False):
        chunk_prompts = list(prompts[start : start + batch_size])
        text = policy.pad_text(policy.encode_prompts(chunk_prompts))
        negative = (
            policy.pad_text(policy.encode_prompts([negative_prompt])).expand(len(chunk_prompts), -1, -1)
            if guidance_scale != 1.0
            else None
        )
        noise = initial_noise(seeds[start : start + batch_size], latent_shape)
        latents = sample_latents(
            policy,
            text,
            negative,
            noise,
            steps=steps,
            guidance_scale=guidance_scale,
            velocity_transform=velocity_transform,
        )
        clips.append(policy.decode_latents(latents))
    return np.concatenate(clips) if clips else np.zeros((0, 0, 0, 0, 3), np.uint8)


def write_clips(
    clips: np.ndarray | Sequence[np.ndarray], folder: str | Path, names: Sequence[str], *, fps: float
) -> list[Path]:
    """Write uint8 clips (N, T, H, W, 3) as browser-safe MP4s ``folder/<name>.mp4``."""
    from alignment.data.video import write_mp4

    if len(names) != len(clips):
        raise ValueError(f"{len(clips)} clips but {len(names)} names")
    folder = Path(folder)
    return [write_mp4(clip, folder / f"{name}.mp4", fps=int(round(fps))) for clip, name in zip(clips, names)]
