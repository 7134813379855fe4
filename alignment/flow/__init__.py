"""Flow alignment: SFT, Flow-DPO and Flow-RWR for diffusers flow-matching video transformers (Wan 2.1).

    from alignment.flow import FlowDPOConfig, train_flow, load_policy, sample_videos

    metrics = train_flow(FlowDPOConfig(output_dir=..., policy=..., snapshot=...))
    policy = load_policy(metrics["final"])                # base + the trained LoRA
    clips = sample_videos(policy, prompts, seeds=range(len(prompts)), steps=30, guidance_scale=5.0)

Modules: ``config`` (the trainers' config dataclasses, torch-free), ``model`` (the velocity-model adapter,
codecs, ``load_policy``), ``tiny`` (a tiny random Wan policy folder), ``cache`` (precomputed text
embeddings and latents), ``preference`` (pairs and rewards from a snapshot), ``train`` (the trainers),
``sample`` (Euler sampling with guidance), ``latent_reward`` and ``guidance`` (Flow-NRG). Names load lazily
(PEP 562), so ``alignment.flow.config`` imports without torch. The toy world's base policy and the flow studies
are research code, in the top-level ``studies`` package.
"""

from importlib import import_module

_EXPORTS = {
    "TRAINERS": "alignment.flow.config",
    "FlowDPOConfig": "alignment.flow.config",
    "FlowRWRConfig": "alignment.flow.config",
    "FlowTrainConfig": "alignment.flow.config",
    "SFTConfig": "alignment.flow.config",
    "FlowPolicy": "alignment.flow.model",
    "PixelCodec": "alignment.flow.model",
    "VideoCodec": "alignment.flow.model",
    "WanFlowPolicy": "alignment.flow.model",
    "WanVAECodec": "alignment.flow.model",
    "load_policy": "alignment.flow.model",
    "sample_latents": "alignment.flow.sample",
    "sample_videos": "alignment.flow.sample",
    "write_clips": "alignment.flow.sample",
    "train_flow": "alignment.flow.train",
    "LatentRewardConfig": "alignment.flow.config",
    "GenerationConfig": "alignment.flow.config",
    "LatentRewardModel": "alignment.flow.latent_reward",
    "load_latent_reward": "alignment.flow.latent_reward",
    "save_latent_reward": "alignment.flow.latent_reward",
    "train_latent_reward": "alignment.flow.latent_reward",
    "reward_guidance": "alignment.flow.guidance",
    "generate_videos": "alignment.flow.guidance",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alignment.flow' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
