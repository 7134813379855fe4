"""VideoReward: a multi-dimensional (VQ, MQ, TA) reward model for generated videos.

The names below load lazily (PEP 562), so ``alignment.reward.config`` imports without torch.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alignment.reward.model import RewardModel

_EXPORTS = {
    "RewardBatchCollator": "alignment.reward.model",
    "RewardModel": "alignment.reward.model",
    "RewardModelConfig": "alignment.reward.config",
    "RewardTrainConfig": "alignment.reward.config",
    "save_reward_model": "alignment.reward.model",
    "VideoAlignRewardModel": "alignment.reward.videoalign",
    "load_videoalign_model": "alignment.reward.videoalign",
}

__all__ = sorted([*_EXPORTS, "load_reward_model"])


def load_reward_model(
    folder: str | Path, *, map_location: str = "cpu", base_model: str | Path | None = None
) -> RewardModel:
    """A reward model folder, its format detected from its files: VidPref's (``save_reward_model``: a training
    run's ``model/`` or a checkpoint) or a VideoAlign checkpoint (``model_config.json`` + ``checkpoint-<step>/``,
    e.g. KwaiVGI's released VideoReward), loaded on the local base Qwen2-VL ``base_model`` (on CUDA in bf16 when
    available, as VideoAlign infers; see ``alignment.reward.videoalign``)."""
    from alignment.reward import model as vidpref
    from alignment.reward import videoalign

    if not (Path(folder) / vidpref.MODEL_FILE).is_file() and videoalign.is_videoalign_folder(folder):
        return videoalign.load_videoalign_model(folder, base_model=base_model)
    if base_model is not None:
        raise ValueError(f"{folder}: base_model is for VideoAlign checkpoints; this folder is not one")
    return vidpref.load_reward_model(folder, map_location=map_location)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alignment.reward' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
