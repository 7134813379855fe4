"""Flow-GRPO's pieces (Liu et al. 2025, arXiv 2505.05470): the SDE sampler with a log-probability per step,
group-relative advantages and the clipped objective with a KL penalty — pure PyTorch on a ``FlowPolicy``.

**The SDE.** Euler's ODE step x ← x + (σ' − σ)·v (``alignment.flow.sample``; v = ε − x₀) becomes a reverse-time
SDE with the same marginals, so that each step is a Gaussian policy π(x' | x) with a log-probability. With
dt = σ' − σ < 0 and a noise level a, the step's standard deviation is s = a·√(σ / (1 − σ)) (at σ = 1 the
second-largest σ of the grid stands in, as Flow-GRPO's reference code does) and

    x' = x·(1 + s²·dt / (2σ)) + v·(1 + s²·(1 − σ) / (2σ))·dt + s·√(−dt)·ε,   ε ~ N(0, I)

which is Euler's step at a = 0. ``log π`` is the Gaussian log-density of x' given that mean and s·√(−dt),
**averaged** over the latent's elements (not summed), as the reference code does: the importance ratio
exp(log π_θ − log π_old) then stays in a range where clipping means something.

**The objective** per step k and sample i, with advantage A_i (the sample's reward standardised within the
group of samples of its prompt) clipped to ±``adv_clip_max`` and r = exp(log π_θ − log π_old):

    L = mean(max(−A·r, −A·clip(r, 1 − ε, 1 + ε))) + β·mean(‖μ_θ − μ_ref‖² / (2 s²))

where the KL term is Flow-GRPO's: the squared distance of the two steps' means (the reference being the policy
with its LoRA off, as in Flow-DPO) over 2s², i.e. the Gaussians' KL times −dt (kept as the reference code has it,
so that its β carries over). "Denoising reduction" (train on few sampling steps, sample the
final model with the full schedule) is the caller's choice of ``steps``.

Reference: yifan123/flow_grpo (``sd3_sde_with_logprob.py``, ``stat_tracking.py``, ``scripts/train_sd3.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from alignment.flow.model import FlowPolicy
from alignment.flow.sample import sampling_sigmas


@dataclass
class SDEStep:
    """One SDE step: the next latents (B, …), log π per sample (B,), the step's mean (B, …) and std (B,)."""

    next_latents: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def _per_sample(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) σ as (B, 1, 1, …) float32 on ``like``'s device."""
    value = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if value.dim() == 0:
        value = value.expand(like.shape[0])
    return value.view(-1, *([1] * (like.dim() - 1)))


def sde_step(
    latents: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
    *,
    noise_level: float,
    sigma_max: float,
    next_latents: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SDEStep:
    """The step from ``latents`` at σ to σ' (< σ) given the policy's ``velocity``: sample the next latents (or
    score the given ``next_latents``) and return their log-probability under the step's Gaussian.
    ``sigma_max`` stands in for σ = 1 in the std (the grid's second-largest σ)."""
    if noise_level <= 0:
        raise ValueError(f"noise_level {noise_level}: must be > 0 (0 is the deterministic ODE, with no log-prob)")
    x, v = latents.float(), velocity.float()
    s_t = _per_sample(sigma, x)
    s_next = _per_sample(sigma_next, x)
    dt = s_next - s_t
    if bool((dt >= 0).any()):
        raise ValueError("sigma_next must be below sigma: sampling runs from noise (σ = 1) to data (σ = 0)")
    std = torch.sqrt(s_t / (1 - torch.where(s_t >= 1, torch.full_like(s_t, sigma_max), s_t))) * noise_level
    mean = x * (1 + std**2 / (2 * s_t) * dt) + v * (1 + std**2 * (1 - s_t) / (2 * s_t)) * dt
    scale = std * torch.sqrt(-dt)
    if next_latents is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        next_latents = mean + scale * noise
    target = next_latents.detach().float()
    log_density = -((target - mean) ** 2) / (2 * scale**2) - torch.log(scale) - 0.5 * math.log(2 * math.pi)
    log_prob = log_density.mean(dim=tuple(range(1, log_density.dim())))
    return SDEStep(next_latents=next_latents, log_prob=log_prob, mean=mean, std=std.flatten())


@dataclass
class Trajectory:
    """What sampling with the SDE recorded: latents at every σ (B, K + 1, …), log π of each step (B, K), the σ
    grid (K + 1,), and the text embeddings the policy was conditioned on (B, L, D)."""

    latents: torch.Tensor
    log_probs: torch.Tensor
    sigmas: torch.Tensor
    text: torch.Tensor

    @property
    def final(self) -> torch.Tensor:
        return self.latents[:, -1]


@torch.no_grad()
def sample_trajectories(
    policy: FlowPolicy,
    text_embeds: torch.Tensor,
    noise: torch.Tensor,
    *,
    steps: int,
    noise_level: float = 0.7,
    shift: float | None = None,
    generator: torch.Generator | None = None,
    transformer: nn.Module | None = None,
) -> Trajectory:
    """Sample ``noise`` (B, C, t, h, w) to latents with the SDE (no guidance: Flow-GRPO trains the conditional
    policy), keeping every step's latents and log-probability for the update."""
    device = policy.device
    latents = noise.to(device, torch.float32)
    text = text_embeds.to(device)
    sigmas = sampling_sigmas(steps, policy.sampling_shift if shift is None else shift)
    sigma_max = float(sigmas[1]) if steps > 1 else 1.0 - 1e-3
    states, log_probs = [latents], []
    for k in range(steps):
        sigma, sigma_next = float(sigmas[k]), float(sigmas[k + 1])
        batch_sigmas = torch.full((latents.shape[0],), sigma, device=device)
        velocity = policy.velocity(latents, batch_sigmas, text, transformer=transformer)
        if sigma_next <= 0:  # the last step to σ = 0 has no noise: the data point itself (Euler)
            latents = latents + (sigma_next - sigma) * velocity
            log_probs.append(torch.zeros(latents.shape[0], device=device))
        else:
            step = sde_step(
                latents,
                velocity,
                sigma,
                sigma_next,
                noise_level=noise_level,
                sigma_max=sigma_max,
                generator=generator,
            )
            latents = step.next_latents
            log_probs.append(step.log_prob)
        states.append(latents)
    return Trajectory(
        latents=torch.stack(states, dim=1), log_probs=torch.stack(log_probs, dim=1), sigmas=sigmas, text=text
    )


def trainable_steps(trajectory: Trajectory) -> list[int]:
    """The steps with a log-probability (every one but a final noise-free step to σ = 0)."""
    return [k for k in range(trajectory.log_probs.shape[1]) if float(trajectory.sigmas[k + 1]) > 0]


def step_log_prob(
    policy: FlowPolicy,
    trajectory: Trajectory,
    k: int,
    *,
    noise_level: float,
    transformer: nn.Module | None = None,
) -> SDEStep:
    """log π of the recorded step k under the policy as it is now (with gradients through ``transformer``)."""
    sigmas = trajectory.sigmas
    sigma_max = float(sigmas[1]) if len(sigmas) > 2 else 1.0 - 1e-3
    latents = trajectory.latents[:, k]
    batch_sigmas = torch.full((latents.shape[0],), float(sigmas[k]), device=latents.device)
    velocity = policy.velocity(latents, batch_sigmas, trajectory.text, transformer=transformer)
    return sde_step(
        latents,
        velocity,
        float(sigmas[k]),
        float(sigmas[k + 1]),
        noise_level=noise_level,
        sigma_max=sigma_max,
        next_latents=trajectory.latents[:, k + 1],
    )


@torch.no_grad()
def reference_step_mean(
    policy: FlowPolicy, trajectory: Trajectory, k: int, *, noise_level: float, lora_model: nn.Module
) -> torch.Tensor:
    """The mean of the recorded step k under the reference: the policy with its LoRA adapters switched off."""
    lora_model.disable_adapters()
    try:
        return step_log_prob(policy, trajectory, k, noise_level=noise_level, transformer=lora_model).mean
    finally:
        lora_model.enable_adapters()


def group_advantages(rewards: torch.Tensor | np.ndarray, groups: Sequence, *, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantages: each reward standardised within its group (the samples of one prompt),
    (r − mean_group) / (std_group + eps) with the population std; a group whose rewards are all equal gets 0."""
    values = torch.as_tensor(np.asarray(rewards, dtype=np.float64))
    keys = list(groups)
    if len(keys) != len(values):
        raise ValueError(f"{len(values)} rewards but {len(keys)} group keys")
    advantages = torch.zeros_like(values)
    for key in dict.fromkeys(keys):
        members = torch.tensor([i for i, g in enumerate(keys) if g == key])
        group = values[members]
        advantages[members] = (group - group.mean()) / (group.std(unbiased=False) + eps)
    return advantages.float()


@dataclass
class GRPOLossParts:
    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor
    ratio_mean: torch.Tensor


def grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_range: float = 1e-4,
    adv_clip_max: float = 5.0,
    kl_weight: float = 0.0,
    mean: torch.Tensor | None = None,
    reference_mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> GRPOLossParts:
    """The clipped surrogate for one step of a batch (all (B,)), plus ``kl_weight`` × the KL to the reference's
    step (its ``reference_mean``; same ``std``) when given."""
    advantages = advantages.to(log_prob.device).clamp(-adv_clip_max, adv_clip_max)
    ratio = torch.exp(log_prob - old_log_prob.to(log_prob.device))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    policy_loss = torch.maximum(unclipped, clipped).mean()
    kl = torch.zeros((), device=log_prob.device)
    if kl_weight > 0:
        if mean is None or reference_mean is None or std is None:
            raise ValueError("kl_weight > 0 needs the step's mean, the reference's mean and the std")
        squared = ((mean - reference_mean.detach()) ** 2).mean(dim=tuple(range(1, mean.dim())))
        kl = (squared / (2 * std.to(mean.device) ** 2)).mean()
    return GRPOLossParts(
        loss=policy_loss + kl_weight * kl,
        policy_loss=policy_loss.detach(),
        kl=kl.detach(),
        clip_fraction=((ratio - 1.0).abs() > clip_range).float().mean().detach(),
        ratio_mean=ratio.mean().detach(),
    )
