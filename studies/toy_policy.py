"""The toy world's base policy: a tiny Wan pretrained with plain flow matching on toy clips with defects.

Every pretraining clip is a toy prompt rendered with defects of random strength (``DefectSpec.random``:
per dimension clean with probability ``p_clean``, else one of its three defects at a strength drawn from
U(0, 1)), so the policy learns the world *and* its defects: its samples vary in visual quality, motion
and text alignment from seed to seed — what preference alignment has to fix. All 144 prompts are seen,
as a foundation model has seen its domain; alignment studies hold prompts out of their *preference*
data. The prompt is replaced by the empty prompt ``p_uncond`` of the time, so classifier-free guidance
works at sampling.

First a small per-frame autoencoder (``alignment.flow.model.ConvCodec``) is fitted to the clips' frames
and every clip is encoded once; then the loop is plain flow matching
(``alignment.losses.flow_matching_loss``) on those latents over a full fine-tune of the random tiny
transformer; the text encoder stays random and frozen (its embeddings still tell the prompts apart). A
latent model, as the real ones are: with the pixel codec the same budget gave a patchwork of 8×8 blocks
whose oracle VQ and MQ sat near zero, so preferences had nothing to teach. The whole build takes about
six minutes on this 2-core machine. The result is an ordinary policy folder (``alignment.flow.model``) plus
``toy_policy.json`` (this config, the codec's final loss, the transformer's loss curve, the time taken)::

    folder = ensure_toy_base_policy("runs/toy-base")        # built once, reused afterwards
    python -m studies toy-policy --output-dir runs/toy-base [--quick]
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

TOY_POLICY_FILE = "toy_policy.json"


@dataclass
class ToyPolicyConfig:
    # the world
    frame_size: int = 32  # frame side in pixels
    frames: int = 9  # frames per clip
    fps: float = 8  # frame rate the policy folder records
    n_clips: int = 4096  # pretraining clips, rendered once, drawn from at random every step
    p_clean: float = 0.3  # per dimension: the chance that a pretraining clip has no defect there
    # the codec: conv (a small autoencoder fitted to the clips first; 8×8 latents per frame) | pixel
    # (PixelCodec folding pixel_patch² pixels into channels: exact, but a tiny transformer renders its
    # 8×8-pixel tokens as a patchwork of blocks)
    codec: Literal["conv", "pixel"] = "conv"  # conv: an autoencoder fitted to the clips first | pixel: exact
    codec_channels: int = 8  # latent channels of the conv codec
    codec_width: int = 32  # channels of the conv codec's hidden layers
    codec_steps: int = 600  # steps fitting the conv codec
    codec_batch_size: int = 128  # frames per step fitting the conv codec
    codec_learning_rate: float = 2e-3  # the conv codec's learning rate
    pixel_patch: int = 4  # pixels folded into channels by the pixel codec
    # the network. The codec's 8×8 latents (or PixelCodec patch 4's) and the transformer's 2×2 patch make
    # 144 tokens per clip; the attention width (num_heads × head_dim) must be at least a token's values
    # (4 × latent channels), or the tokens cannot carry the noise through and samples stay noise.
    num_layers: int = 2  # transformer blocks
    num_heads: int = 4  # attention heads
    head_dim: int = 32  # width of an attention head
    # pretraining
    steps: int = 1200  # flow-matching steps
    batch_size: int = 32  # clips per step
    learning_rate: float = 2e-3  # peak learning rate (linear warm-up, then cosine decay to 10 %)
    warmup_steps: int = 30  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW's
    max_grad_norm: float = 1.0  # gradient clipping
    p_uncond: float = 0.1  # share of steps on the empty prompt (classifier-free guidance)
    seed: int = 0  # seed of the clips, the codec and the pretraining

    @classmethod
    def quick(cls, **overrides) -> ToyPolicyConfig:
        """A policy in a minute or two on one CPU thread (tests): fewer clips and steps; its samples are rougher."""
        values: dict[str, Any]  # the fields' own types
        values = dict(n_clips=1024, codec_steps=150, steps=100)
        values.update(overrides)
        return cls(**values)


def render_pretraining_clips(config: ToyPolicyConfig, *, progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """``n_clips`` toy clips uint8 (N, T, H, W, 3) with random defects, and their prompts."""
    from tqdm.auto import tqdm

    from alignment.toyworld import DefectSpec, all_prompts, render_clip

    rng = np.random.default_rng(config.seed)
    prompts = all_prompts()
    chosen = rng.integers(len(prompts), size=config.n_clips)
    clips = np.empty((config.n_clips, config.frames, config.frame_size, config.frame_size, 3), np.uint8)
    for index in tqdm(range(config.n_clips), desc="render", disable=not progress, leave=False):
        clips[index] = render_clip(
            prompts[chosen[index]],
            DefectSpec.random(rng, p_clean=config.p_clean),
            seed=int(rng.integers(2**31)),
            size=config.frame_size,
            frames=config.frames,
        )
    return clips, [str(prompts[i]) for i in chosen]


def _learning_rate_factor(step: int, config: ToyPolicyConfig) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def pretrain_toy_policy(folder: str | Path, config: ToyPolicyConfig | None = None, *, progress: bool = True) -> Path:
    """Build a random tiny Wan policy and pretrain it on toy clips; written to a temporary name, then
    renamed to ``folder`` (which must not exist)."""
    import torch
    from tqdm.auto import tqdm

    from alignment.flow.model import ConvCodec, fit_conv_codec, load_policy, pixels_from_uint8_clips
    from alignment.flow.tiny import build_tiny_wan_policy
    from alignment.flow.train import noised, sample_sigmas
    from alignment.losses import flow_matching_loss

    config = config or ToyPolicyConfig()
    if config.codec not in ("conv", "pixel"):
        raise ValueError(f"codec {config.codec!r}: choose 'conv' or 'pixel'")
    latent_channels = config.codec_channels if config.codec == "conv" else 3 * config.pixel_patch**2
    token_values = latent_channels * 4  # the transformer's 2×2 patch
    if config.num_heads * config.head_dim < token_values:
        raise ValueError(
            f"num_heads × head_dim = {config.num_heads * config.head_dim} is below the {token_values} "
            f"values of a token ({config.codec} codec); widen the attention"
        )
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder}: already exists; pick a new folder for the toy policy")
    started = time.perf_counter()
    temp = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.tmp"
    try:
        clips, clip_prompts = render_pretraining_clips(config, progress=progress)
        codec_record = {"render_seconds": time.perf_counter() - started}
        conv_codec = None
        if config.codec == "conv":
            torch.manual_seed(config.seed)
            conv_codec = ConvCodec(config.codec_channels, config.codec_width)
            codec_losses = fit_conv_codec(
                conv_codec,
                clips,
                steps=config.codec_steps,
                batch_size=config.codec_batch_size,
                learning_rate=config.codec_learning_rate,
                seed=config.seed,
                progress=progress,
            )
            codec_record.update(
                codec_final_loss=float(np.mean(codec_losses[-20:])),
                codec_seconds=time.perf_counter() - started - codec_record["render_seconds"],
            )
        build_tiny_wan_policy(
            temp,
            num_frames=config.frames,
            height=config.frame_size,
            width=config.frame_size,
            fps=config.fps,
            codec=config.codec,
            conv_codec=conv_codec,
            pixel_patch=config.pixel_patch,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            head_dim=config.head_dim,
            seed=config.seed,
        )
        policy = load_policy(temp)
        all_latents = torch.cat(
            [
                policy.encode_videos(pixels_from_uint8_clips(clips[start : start + 256]))
                for start in range(0, len(clips), 256)
            ]
        )  # every clip's latents, encoded once
        distinct = sorted(set(clip_prompts))
        text_table = policy.pad_text(policy.encode_prompts(distinct))  # (P, L, D)
        empty_text = policy.pad_text(policy.encode_prompts([""]))  # (1, L, D)
        prompt_index = torch.tensor([distinct.index(p) for p in clip_prompts])
        policy.release_encoders()

        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        model = policy.transformer.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate_factor(step, config))
        losses = []
        bar = tqdm(range(config.steps), desc="pretrain toy policy", disable=not progress)
        for _ in bar:
            batch = torch.randint(len(clips), (config.batch_size,), generator=generator)
            latents = all_latents[batch]  # (B, C, t, h, w)
            text = text_table[prompt_index[batch]]  # (B, L, D)
            unconditional = torch.rand(config.batch_size, generator=generator) < config.p_uncond
            text = torch.where(unconditional[:, None, None], empty_text, text)
            sigmas = sample_sigmas(config.batch_size, generator)
            noise = torch.randn(latents.shape, generator=generator)
            x, target = noised(latents, noise, sigmas)
            loss = flow_matching_loss(policy.velocity(x, sigmas, text, transformer=model), target)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        bar.close()

        model.eval().save_pretrained(temp / "transformer")
        seconds = time.perf_counter() - started
        record = {
            "config": asdict(config),
            "seconds": seconds,
            **codec_record,
            "final_loss": float(np.mean(losses[-20:])),
            "loss_every_10_steps": [float(np.mean(losses[i : i + 10])) for i in range(0, len(losses), 10)],
        }
        (temp / TOY_POLICY_FILE).write_text(json.dumps(record, indent=2) + "\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.rename(temp, folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return folder


def ensure_toy_base_policy(
    folder: str | Path, *, quick: bool = False, progress: bool = True, config: ToyPolicyConfig | None = None
) -> Path:
    """The toy base policy in ``folder``: pretrained there on the first call, reused afterwards.

    ``config`` (default ``ToyPolicyConfig.quick()`` with ``quick``, else ``ToyPolicyConfig()``) is what the
    policy is built with. A folder that exists without ``toy_policy.json`` is refused rather than overwritten;
    a reused folder built with another config (the other ``quick`` setting) is refused too, so a study never
    silently mixes the two."""
    folder = Path(folder)
    if config is None:
        config = ToyPolicyConfig.quick() if quick else ToyPolicyConfig()
    record_path = folder / TOY_POLICY_FILE
    if record_path.is_file():
        built = json.loads(record_path.read_text())["config"]
        if built != asdict(config):
            kind = "quick" if config == ToyPolicyConfig.quick() else "full" if config == ToyPolicyConfig() else "asked"
            raise ValueError(
                f"{folder}: holds a toy policy built with a different config than the {kind} one "
                f"(steps {built['steps']}, clips {built['n_clips']}); pick another folder or delete it"
            )
        return folder
    if folder.exists():
        raise FileExistsError(
            f"{folder}: exists but holds no {TOY_POLICY_FILE}; it is not a toy base policy folder — pick another folder"
        )
    return pretrain_toy_policy(folder, config, progress=progress)
