"""The reward model's and its training's config dataclasses, torch-free: the admin builds its job forms from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class RewardModelConfig:
    backbone: Literal["qwen2vl", "small"] = "qwen2vl"  # qwen2vl (a local Qwen2-VL folder) or small (CPU / toy world)
    backbone_path: str | None = None  # the Qwen2-VL folder
    shared_head: bool = False  # ablation: one head for all three tokens
    # Qwen2-VL
    lora_rank: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    train_vision_tower: bool = True
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # the Qwen2-VL weights' dtype
    gradient_checkpointing: bool = False
    max_prompt_tokens: int = 256
    template: str | None = None  # None: the built-in template of alignment.reward.qwen2vl
    # frames (both backbones)
    fps: float | None = 2.0
    max_frames: int = 32
    max_pixels: int = 448 * 448
    min_pixels: int = 56 * 56
    # small backbone
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    frame_size: int = 32
    num_frames: int = 8
    tubelet: tuple[int, int, int] = (2, 8, 8)
    vocab_size: int = 4096
    frame_cnn_channels: int = 0  # > 0: TA also reads each frame through a small CNN with global max pooling
    ta_time_basis: int = 0  # > 0: TA reads time through this many smooth functions instead of per-step weights


@dataclass
class RewardTrainConfig:
    output_dir: str
    snapshot: str | None = None  # a snapshot folder (docs/architecture.md §5) ...
    train_csv: str | None = None  # ... or VideoAlign CSVs
    val_csv: str | None = None
    media_root: str | None = None  # where relative video paths live, after the snapshot folder
    train_split: str = "train"
    val_split: str = "val"
    model: RewardModelConfig = field(default_factory=RewardModelConfig)
    # fine-tune a VideoAlign checkpoint (e.g. KwaiVGI's released VideoReward) in its own format: its prompt, reward
    # tokens, frame sampling and trained tensors; the model settings are then unused but for model.dtype
    init_from: str | None = None  # a VideoAlign checkpoint folder (model_config.json + checkpoint-<step>/)
    init_from_base_model: str | None = None  # the local Qwen2-VL it was trained on; None: the one it names, if local
    loss: Literal["bt_ties", "bt", "regression"] = "bt_ties"  # bt_ties (Bradley–Terry with ties) | bt | regression
    theta: float = 5.0
    learning_rate: float = 2e-6
    head_learning_rate: float | None = None  # heads and reward-token embeddings; None: learning_rate
    weight_decay: float = 0.0
    batch_size: int = 32  # pairs per optimizer step, over all processes
    gradient_accumulation_steps: int = 1
    epochs: int = 2
    max_steps: int | None = None  # stop early (smoke runs)
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = (
        "constant"  # constant | cosine (after the warmup, down to 0 at the last step)
    )
    max_grad_norm: float = 1.0
    num_workers: int = 2
    decode_threads: int = 1
    cache_videos: int = 0  # decoded videos kept per loader worker (LRU); useful for small recurring clips
    frame_cache_dir: str | None = None  # decoded frames kept on disk for every worker, epoch and later run
    frame_cache_max_gb: float | None = None  # pruned to this size (least recently used first) before and after a run
    seed: int = 42
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = (
        "no"  # no | bf16 | fp16 | auto (bf16 on a GPU that supports it, else no)
    )
    save_every_steps: int | None = None  # also saved at the end of every epoch
    keep_checkpoints: int = 2
    max_eval_pairs: int | None = None
    keep_best: bool = False  # the final model is the best epoch on the validation pairs (best_by), not the last one
    best_by: Literal["accuracy", "loss"] = (
        "accuracy"  # accuracy: mean val accuracy without ties over VQ, MQ, TA (equal: lower loss) | loss
    )
    progress: bool = True
