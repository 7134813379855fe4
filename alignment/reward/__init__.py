"""VideoReward: a multi-dimensional (VQ, MQ, TA) reward model for generated videos."""

from alignment.reward.model import (
    RewardBatchCollator,
    RewardModel,
    RewardModelConfig,
    load_reward_model,
    save_reward_model,
)

__all__ = ["RewardBatchCollator", "RewardModel", "RewardModelConfig", "load_reward_model", "save_reward_model"]
