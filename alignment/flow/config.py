"""The flow trainers' config dataclasses, torch-free: the admin builds its job forms from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from alignment.labels import DIMENSION_NAMES

DEFAULT_SCALE = 100.0  # Flow-NRG's w (the paper's 100)
DEFAULT_MAX_RATIO = 10.0  # Flow-NRG's cap on σ/(1 − σ) near pure noise

DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
FINETUNES = ("lora", "full")


@dataclass
class FlowTrainConfig:
    """What every flow trainer shares; ``SFTConfig``, ``FlowDPOConfig`` and ``FlowRWRConfig`` add their own."""

    method: ClassVar[str]
    output_dir: str
    policy: str  # a diffusers-format policy folder (alignment.flow.model)
    snapshot: str  # a snapshot folder (docs/architecture.md §5)
    media_root: str | None = None  # where relative video paths live, after the snapshot folder
    train_split: str = "train"
    val_split: str = "val"
    cache_dir: str | None = None  # text/latent cache, shared between runs; default output_dir/cache
    num_frames: int | None = None  # clip size to train on; default the policy's (vidpref_policy.json)
    height: int | None = None
    width: int | None = None
    label_source: Literal["consensus", "reward_model"] = (
        "consensus"  # consensus | reward_model (relabel pairs / score videos)
    )
    reward_model: str | None = None  # a VideoReward folder, for label_source reward_model
    dimension_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # VQ, MQ, TA
    min_margin: float = 0.0  # drop pairs whose weighted label / reward gap is within this
    finetune: Literal["lora", "full"] = (
        "lora"  # lora | full (LoRA: the reference is the network with adapters disabled; full: a frozen copy)
    )
    lora_rank: int = 64
    lora_alpha: float | None = None  # None: the rank (scale 1)
    lora_target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS
    learning_rate: float = 1e-4  # for LoRA; about 1e-5 for a full fine-tune
    weight_decay: float = 0.0
    batch_size: int = 8  # videos (SFT, RWR) or pairs (DPO) per optimizer step, over all processes
    gradient_accumulation_steps: int = 1
    epochs: int = 1
    max_steps: int | None = None
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"  # constant | cosine
    max_grad_norm: float = 1.0
    sigma_shift: float = 1.0  # σ = shift·u / (1 + (shift − 1)·u), u ~ U(0, 1); > 1 favours noisier σ
    seed: int = 42
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = (
        "auto"  # auto (bf16 on a GPU that supports it, else no) | no | bf16 | fp16 (a CPU always trains in float32)
    )
    gradient_checkpointing: bool | None = None  # None (auto): on a GPU; a CPU never checkpoints
    save_every_steps: int | None = None  # also saved at the end
    keep_checkpoints: int = 2
    eval_every_steps: int | None = None  # also evaluated at the end
    max_eval_items: int | None = 64
    encode_batch_size: int = 1  # videos per codec call while caching
    num_workers: int = 0
    progress: bool = True


@dataclass
class SFTConfig(FlowTrainConfig):
    """Supervised fine-tuning: plain flow matching on the chosen (winning) videos."""

    method: ClassVar[str] = "sft"


@dataclass
class FlowDPOConfig(FlowTrainConfig):
    """Flow-DPO on (winner, loser) pairs sharing σ and noise."""

    method: ClassVar[str] = "flow-dpo"
    beta: float = 500.0  # the paper's constant β
    beta_schedule: Literal["constant", "time"] = "constant"  # constant | time (β_t = β(1 − σ)²)


@dataclass
class FlowRWRConfig(FlowTrainConfig):
    """Flow-RWR: flow matching weighted by exp(r / τ), rewards standardised over the training set."""

    method: ClassVar[str] = "flow-rwr"
    temperature: float = 1.0


TRAINERS: dict[str, type[FlowTrainConfig]] = {"sft": SFTConfig, "flow-dpo": FlowDPOConfig, "flow-rwr": FlowRWRConfig}


@dataclass
class FlowGRPOConfig:
    """Flow-GRPO: the policy's LoRA trained online from a reward model's scores of its own samples."""

    method: ClassVar[str] = "flow-grpo"
    output_dir: str
    policy: str  # a diffusers-format policy folder (alignment.flow.model)
    reward_model: str  # a VideoReward folder (or a VideoAlign checkpoint) that scores the samples
    reward_base_model: str | None = None  # a VideoAlign checkpoint's local Qwen2-VL
    dimension_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # VQ, MQ, TA: reward = Σ w·normalised score
    # the prompts
    snapshot: str | None = None  # prompts of its train_split (val_split for evaluation) ...
    prompt_file: str | None = None  # ... or a text file, one prompt a line (evaluated on its first max_eval_items)
    train_split: str = "train"
    val_split: str = "val"
    num_frames: int | None = None  # clip size; default the policy's (vidpref_policy.json)
    height: int | None = None
    width: int | None = None
    # sampling during training
    group_size: int = 4  # G: samples per prompt, whose rewards are standardised together
    sample_steps: int = 10  # SDE steps while training ("denoising reduction"); sample the result with more
    noise_level: float = 0.7  # a: the SDE's std is a·√(σ / (1 − σ))
    train_steps_per_sample: int | None = None  # sampled steps trained per batch (a random subset); None: all
    # the objective
    clip_range: float = 1e-4  # ε of the clipped ratio
    adv_clip_max: float = 5.0  # advantages clipped to ±this
    kl_weight: float = 0.04  # β of the KL to the reference (the LoRA switched off); 0 drops it
    # LoRA and the optimiser
    finetune: Literal["lora"] = "lora"  # Flow-GRPO trains LoRA adapters (the reference is the base)
    lora_rank: int = 32
    lora_alpha: float | None = None  # None: the rank (scale 1)
    lora_target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 4  # prompts per optimizer step, over all processes (× group_size videos)
    gradient_accumulation_steps: int = 1
    epochs: int = 1  # passes over the prompts
    max_steps: int | None = None
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"  # constant | cosine
    max_grad_norm: float = 1.0
    seed: int = 42
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU that supports it
    gradient_checkpointing: bool | None = None  # None (auto): on a GPU; a CPU never checkpoints
    save_every_steps: int | None = None  # also saved at the end
    keep_checkpoints: int = 2
    eval_every_steps: int | None = None  # also evaluated at the end
    max_eval_items: int | None = 16  # validation prompts sampled at each evaluation
    eval_sample_steps: int = 20  # ODE steps of the evaluation's samples (the full schedule)
    score_batch_size: int = 8  # videos per reward-model call
    num_workers: int = 0
    progress: bool = True


def check_grpo_config(config: FlowGRPOConfig) -> None:
    if config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule {config.lr_schedule!r}: choose one of constant, cosine")
    if bool(config.snapshot) == bool(config.prompt_file):
        raise ValueError("set exactly one of `snapshot` (its prompts) or `prompt_file` (one prompt a line)")
    if config.group_size < 2:
        raise ValueError(f"group_size {config.group_size}: needs ≥ 2 samples per prompt to compare them")
    if config.sample_steps < 2:
        raise ValueError(f"sample_steps {config.sample_steps}: needs ≥ 2 (the last step to σ = 0 has no noise)")
    if config.noise_level <= 0:
        raise ValueError(f"noise_level {config.noise_level}: must be > 0")
    if not any(config.dimension_weights):
        raise ValueError("dimension_weights are all 0: nothing to reward")


def parse_weights(text: str) -> tuple[float, float, float]:
    """Flow-NRG's per-dimension weights: ``"vq=1,mq=1,ta=2"`` → (1.0, 1.0, 2.0); unnamed dimensions weigh 0."""
    values = dict.fromkeys(DIMENSION_NAMES, 0.0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().upper()
        if not sep or name not in values:
            raise ValueError(
                f"weights {text!r}: write NAME=VALUE pairs with names from "
                f"{', '.join(d.lower() for d in DIMENSION_NAMES)}, e.g. vq=1,mq=1,ta=2"
            )
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"weights {text!r}: {value.strip()!r} is not a number") from None
    return values[DIMENSION_NAMES[0]], values[DIMENSION_NAMES[1]], values[DIMENSION_NAMES[2]]


@dataclass
class GenerationConfig:
    """New pairs for labelling: two candidates per prompt from ``source``, scored by the reward model and
    queued in ``queue_order``. With a latent reward model, side A samples with Flow-NRG guidance."""

    SOURCES: ClassVar[tuple[str, ...]] = ("policy_vs_base", "two_seeds", "guided_vs_unguided")

    pairs: int = 64  # pairs to generate and queue
    source: Literal["policy_vs_base", "two_seeds", "guided_vs_unguided"] = (
        "policy_vs_base"  # policy_vs_base | two_seeds | guided_vs_unguided (policy vs base; two seeds; Flow-NRG or not)
    )
    steps: int = 20  # sampling steps
    guidance_scale: float = 5.0  # classifier-free guidance; 1 turns it off
    weights: str = "vq=1,mq=1,ta=1"  # Flow-NRG's weight of each dimension (with a latent reward model)
    guidance_strength: float = DEFAULT_SCALE  # Flow-NRG's w (the paper's 100), with a latent reward model
    guidance_sigma_min: float = 0.0  # Flow-NRG leaves the last steps, at σ ≤ this, unguided; 0 guides every step
    guidance_max_ratio: float = DEFAULT_MAX_RATIO  # Flow-NRG caps σ/(1 − σ) at this near pure noise
    queue_order: Literal["random", "uncertainty"] = (
        "random"  # random | uncertainty (least certain first, 1/(1+|Δr|)); docs/ml/reward.md §5 has the measurements
    )
    prompt_file: str | None = (
        None  # CSV with a prompt column, or one a line; empty: VIDPREF_PROMPT_SET, else the database's
    )

    def __post_init__(self):
        if self.source not in self.SOURCES:
            raise ValueError(f"source {self.source!r}: choose one of {', '.join(self.SOURCES)}")
        self.dimension_weights()

    def dimension_weights(self) -> tuple[float, float, float]:
        """``weights`` as (VQ, MQ, TA)."""
        return parse_weights(self.weights)

    def weights_label(self) -> str:
        """The weights written canonically, as generator names show them: ``vq=1,mq=1,ta=2``."""
        return ",".join(f"{d.lower()}={w:g}" for d, w in zip(DIMENSION_NAMES, self.dimension_weights()))


@dataclass
class LatentRewardConfig:
    """Flow-NRG's latent reward model: the first ``num_layers`` blocks of the policy's transformer and a
    linear head per dimension (VQ, MQ, TA), trained with Bradley–Terry with ties on snapshot pairs whose
    two videos are noised alike (same σ and noise)."""

    method: ClassVar[str] = "latent-reward"
    output_dir: str
    policy: str  # the diffusers-format policy folder whose transformer, text encoder and codec it reuses
    snapshot: str  # a snapshot folder (docs/architecture.md §5)
    media_root: str | None = None  # where relative video paths live, after the snapshot folder
    train_split: str = "train"
    val_split: str = "val"
    cache_dir: str | None = None  # text/latent cache, shared with the flow trainers; default output_dir/cache
    num_frames: int | None = None  # clip size; default the policy's (vidpref_policy.json)
    height: int | None = None
    width: int | None = None
    num_layers: int = 2  # K: transformer blocks copied from the policy (1 to all of them)
    readout: Literal["frames", "mean"] = (
        "frames"  # frames (per-frame attention pools that keep position, read over time) | mean
    )
    noisy: bool = True  # train on noised latents (σ ~ U(0,1)); False: clean latents, the ablation
    sigma_shift: float = 1.0  # σ = shift·u / (1 + (shift − 1)·u), u ~ U(0, 1); > 1 favours noisier σ
    theta: float = 5.0  # Rao–Kupper tie parameter θ
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 8  # pairs per optimizer step, over all processes
    gradient_accumulation_steps: int = 1
    epochs: int = 1
    max_steps: int | None = None
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"  # constant | cosine
    max_grad_norm: float = 1.0
    seed: int = 42
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = (
        "auto"  # auto (bf16 on a GPU that supports it, else no) | no | bf16 | fp16 (a CPU always trains in float32)
    )
    save_every_steps: int | None = None  # also saved at the end
    keep_checkpoints: int = 2
    eval_every_steps: int | None = None  # also evaluated at the end
    max_eval_items: int | None = 256
    encode_batch_size: int = 1  # videos per codec call while caching
    num_workers: int = 0
    progress: bool = True
