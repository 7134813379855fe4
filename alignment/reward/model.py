"""VideoReward: a backbone read at three reward tokens, one linear head per dimension (VQ, MQ, TA).

``RewardModel(**inputs)`` returns raw rewards ``(N, 3)``; ``normalize`` maps them with the mean/std
measured on the validation split, so rewards of different dimensions add up (Overall = VQ + MQ + TA).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from alignment.config import config_from_dict, config_to_dict
from alignment.labels import DIMENSION_NAMES
from alignment.reward.config import RewardModelConfig

MODEL_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "reward_config.json"
NORMALIZATION_FILE = "normalization.json"


def build_backbone(config: RewardModelConfig) -> nn.Module:
    if config.backbone == "qwen2vl":
        from alignment.reward.qwen2vl import DEFAULT_TEMPLATE, Qwen2VLRewardBackbone

        if not config.backbone_path:
            raise ValueError("model.backbone_path: the local Qwen2-VL folder is required for backbone 'qwen2vl'")
        return Qwen2VLRewardBackbone(
            config.backbone_path,
            lora_rank=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            train_vision_tower=config.train_vision_tower,
            dtype=config.dtype,
            gradient_checkpointing=config.gradient_checkpointing,
            fps=config.fps,
            max_frames=config.max_frames,
            max_pixels=config.max_pixels,
            min_pixels=config.min_pixels,
            template=config.template or DEFAULT_TEMPLATE,
            max_prompt_tokens=config.max_prompt_tokens,
        )
    if config.backbone == "small":
        from alignment.reward.small import SmallVideoBackbone

        return SmallVideoBackbone(
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            frame_size=config.frame_size,
            num_frames=config.num_frames,
            tubelet=(config.tubelet[0], config.tubelet[1], config.tubelet[2]),
            vocab_size=config.vocab_size,
            max_prompt_tokens=min(config.max_prompt_tokens, 64),
            fps=config.fps,
            frame_cnn_channels=config.frame_cnn_channels,
            ta_time_basis=config.ta_time_basis,
        )
    raise ValueError(f"model.backbone {config.backbone!r}: choose 'qwen2vl' or 'small'")


class RewardModel(nn.Module):
    def __init__(self, config: RewardModelConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config)
        hidden = self.backbone.hidden_size
        # No bias: pairwise losses see only r_A − r_B, where a constant cancels (the normalisation sets the offset).
        self.head = nn.Linear(hidden, 1 if config.shared_head else len(DIMENSION_NAMES), bias=False)
        self.register_buffer("reward_mean", torch.zeros(len(DIMENSION_NAMES)))
        self.register_buffer("reward_std", torch.ones(len(DIMENSION_NAMES)))

    @property
    def frame_spec(self):
        return self.backbone.frame_spec

    def processor(self):
        return self.backbone.processor()

    def forward(self, **inputs) -> torch.Tensor:
        """Raw rewards ``(N, 3)`` for VQ, MQ, TA."""
        hidden = self.backbone(**inputs).float()  # (N, 3, H)
        if self.config.shared_head:
            return self.head(hidden).squeeze(-1)
        return torch.einsum("ndh,dh->nd", hidden, self.head.weight)

    def normalize(self, rewards: torch.Tensor) -> torch.Tensor:
        return (rewards - self.reward_mean) / self.reward_std

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.reward_mean.copy_(mean)
        self.reward_std.copy_(std.clamp_min(1e-6))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must hold: every trainable parameter, plus the normalisation buffers."""
        trainable = {name for name, parameter in self.named_parameters() if parameter.requires_grad}
        return {
            name: tensor.detach().contiguous()
            for name, tensor in self.state_dict().items()
            if name in trainable or name in ("reward_mean", "reward_std")
        }

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
        own = self.state_dict()
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            raise ValueError(
                f"{source}: {len(unexpected)} tensors do not belong to this model, e.g. {unexpected[:3]}; "
                "was it trained with another model config?"
            )
        missing = sorted(name for name in self.trainable_state_dict() if name not in state)
        if missing:
            raise ValueError(f"{source}: lacks {len(missing)} trainable tensors, e.g. {missing[:3]}")
        self.load_state_dict(state, strict=False)


def save_reward_model(model: RewardModel, folder: str | Path) -> Path:
    """Write ``model.safetensors`` (trainable tensors + normalisation), ``reward_config.json`` and
    ``normalization.json`` into ``folder`` (created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(model.trainable_state_dict(), folder / MODEL_FILE)
    (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config_to_dict(model.config), indent=2) + "\n")
    normalization = {
        dim: {"mean": float(model.reward_mean[i]), "std": float(model.reward_std[i])}
        for i, dim in enumerate(DIMENSION_NAMES)
    }
    (folder / NORMALIZATION_FILE).write_text(json.dumps(normalization, indent=2) + "\n")
    return folder


def load_reward_model(folder: str | Path, *, map_location: str = "cpu") -> RewardModel:
    """A reward model saved by ``save_reward_model`` (a training run's ``model/`` or a checkpoint)."""
    folder = Path(folder)
    for name in (MODEL_FILE, MODEL_CONFIG_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing; not a reward model folder")
    config = config_from_dict(
        RewardModelConfig, json.loads((folder / MODEL_CONFIG_FILE).read_text()), where=str(folder / MODEL_CONFIG_FILE)
    )
    model = RewardModel(config)
    model.load_trainable_state_dict(
        load_file(folder / MODEL_FILE, device=map_location), source=str(folder / MODEL_FILE)
    )
    return model.eval()


class RewardBatchCollator:
    """DataLoader ``collate_fn`` for pair items: A videos then B videos in one model batch of 2B.

    Runs the backbone's processor (resize, normalise, patchify, tokenise) inside the workers.
    """

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, items: list[dict]) -> dict:
        prompts = [item["prompt"] for item in items]
        videos = [item["video_a"] for item in items] + [item["video_b"] for item in items]
        return {
            "pair_id": [item["pair_id"] for item in items],
            "inputs": self.processor(videos, prompts + prompts),
            "labels": torch.stack([item["labels"] for item in items]),  # (B, 3) int8
        }
