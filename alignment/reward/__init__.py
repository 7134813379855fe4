"""VideoReward: a multi-dimensional (VQ, MQ, TA) reward model for generated videos.

The names below load lazily (PEP 562), so ``alignment.reward.config`` imports without torch.
"""

from importlib import import_module

_EXPORTS = {
    "RewardBatchCollator": "alignment.reward.model",
    "RewardModel": "alignment.reward.model",
    "RewardModelConfig": "alignment.reward.config",
    "RewardTrainConfig": "alignment.reward.config",
    "load_reward_model": "alignment.reward.model",
    "save_reward_model": "alignment.reward.model",
    "VideoAlignRewardModel": "alignment.reward.videoalign",
    "load_videoalign_model": "alignment.reward.videoalign",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alignment.reward' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
