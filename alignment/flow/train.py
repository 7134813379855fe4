"""SFT, Flow-DPO and Flow-RWR on a snapshot: the data, the loss, saving, and ``FlowMethod``, the part of the run
that ``alignment.training``'s one loop leaves to a method.

``output_dir/``
  ``train_config.json``
  ``cache/``                      text embeddings and latents (unless ``cache_dir`` points elsewhere)
  ``checkpoints/step-00000040/``  the trained policy (as in final/) + optimizer.pt, scheduler.pt,
                                  trainer_state.json
  ``final/``                      ``flow_policy.json`` (base folder, finetune kind, method),
                                  ``train_config.json`` and ``pytorch_lora_weights.safetensors`` (LoRA,
                                  loadable by ``WanPipeline.load_lora_weights(final)``) or ``transformer/``
                                  (full fine-tune); ``alignment.flow.load_policy(final)`` loads either
  ``metrics.json``                loss curve (+ DPO's implicit accuracy), evaluations, throughput

Every step draws σ and the noise from a generator seeded by (seed, step, micro-batch, process), so a
resumed run (re-running the same command resumes from the newest checkpoint) repeats the same draws.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from alignment.checkpoints import checkpoints  # noqa: F401  (the run's checkpoints; tests import it from here)
from alignment.config import save_config
from alignment.data import read_snapshot
from alignment.flow.cache import FlowCache, build_cache, sha256_text
from alignment.flow.config import FINETUNES, TRAINERS, FlowDPOConfig, FlowRWRConfig, FlowTrainConfig, SFTConfig  # noqa: F401
from alignment.flow.model import (
    TRAINED_POLICY_FILE,
    FlowPolicy,
    load_policy,
    pad_text_embeds,
)
from alignment.flow.preference import (
    LABEL_SOURCES,
    PreferencePair,
    RewardedVideo,
    consensus_video_rewards,
    preference_pairs,
    relabelled_pairs,
    reward_model_video_rewards,
    standardised_rewards,
)
from alignment.losses import (
    FLOW_DPO_BETA_SCHEDULES,
    flow_dpo_beta,
    flow_dpo_loss,
    flow_matching_error,
    flow_matching_loss,
    flow_rwr_loss,
)
from alignment.training import (
    OnStep,
    Run,
    TrainingMethod,
    check_lr_schedule,
    for_this_machine,
    run_training,
    step_generator,
)

log = logging.getLogger(__name__)
TRAIN_CONFIG_FILE = "train_config.json"


def check_config(config: FlowTrainConfig) -> None:
    if config.finetune not in FINETUNES:
        raise ValueError(f"finetune {config.finetune!r}: choose one of {', '.join(FINETUNES)}")
    if config.label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source {config.label_source!r}: choose one of {', '.join(LABEL_SOURCES)}")
    if config.label_source == "reward_model" and not config.reward_model:
        raise ValueError("label_source reward_model needs `reward_model`: a trained VideoReward folder")
    check_lr_schedule(config)
    if isinstance(config, FlowDPOConfig) and config.beta_schedule not in FLOW_DPO_BETA_SCHEDULES:
        raise ValueError(f"beta_schedule {config.beta_schedule!r}: choose one of {', '.join(FLOW_DPO_BETA_SCHEDULES)}")


# --------------------------------------------------------------------------------------------------
# Data: snapshot → items → cached tensors
# --------------------------------------------------------------------------------------------------


def training_items(config: FlowTrainConfig, pairs, roots: list[Path]) -> list:
    """PreferencePairs (Flow-DPO) or RewardedVideos (SFT: the winners; Flow-RWR: every video) of a split."""
    weights, source = config.dimension_weights, config.label_source
    progress = config.progress
    reward_model = cast(str, config.reward_model)  # set where source is reward_model (check_config)
    if config.method == "flow-rwr":
        if source == "reward_model":
            return reward_model_video_rewards(pairs, reward_model, roots=roots, weights=weights, progress=progress)
        return consensus_video_rewards(pairs, weights=weights)
    if source == "reward_model":
        decided = relabelled_pairs(
            pairs, reward_model, roots=roots, weights=weights, min_margin=config.min_margin, progress=progress
        )
    else:
        decided = preference_pairs(pairs, weights=weights, min_margin=config.min_margin)
    if config.method == "flow-dpo":
        return decided
    winners = {(p.prompt, p.winner): p.margin for p in decided}
    return [
        RewardedVideo(prompt=prompt, video=video, reward=margin) for (prompt, video), margin in sorted(winners.items())
    ]


class CachedVideos(Dataset):
    """RewardedVideos → {"text" (L_i, D), "latents" (C, t, h, w), "reward" ()} from the cache."""

    def __init__(self, items: list[RewardedVideo], cache: FlowCache):
        self.items, self.cache = items, cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        return {
            "text": self.cache.text.get(sha256_text(item.prompt)),
            "latents": self.cache.latents.get(self.cache.video_keys[item.video]),
            "reward": torch.tensor(item.reward, dtype=torch.float32),
        }


class CachedPairs(Dataset):
    """PreferencePairs → {"text", "latents_w", "latents_l"} from the cache."""

    def __init__(self, items: list[PreferencePair], cache: FlowCache):
        self.items, self.cache = items, cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        return {
            "text": self.cache.text.get(sha256_text(item.prompt)),
            "latents_w": self.cache.latents.get(self.cache.video_keys[item.winner]),
            "latents_l": self.cache.latents.get(self.cache.video_keys[item.loser]),
        }


@dataclass
class PadTextCollator:
    max_sequence_length: int

    def __call__(self, items: list[dict]) -> dict:
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0] if key != "text"}
        batch["text"] = pad_text_embeds([item["text"] for item in items], self.max_sequence_length)  # (B, L, D)
        return batch


# --------------------------------------------------------------------------------------------------
# One step's loss
# --------------------------------------------------------------------------------------------------


def sample_sigmas(batch_size: int, generator: torch.Generator, shift: float = 1.0) -> torch.Tensor:
    """σ ~ U(0, 1), shifted as diffusers' FlowMatch schedulers shift: shift·u / (1 + (shift − 1)·u)."""
    u = torch.rand(batch_size, generator=generator)
    return shift * u / (1.0 + (shift - 1.0) * u)


def noised(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_σ = (1 − σ)·x₀ + σ·ε and the velocity target ε − x₀; latents (B, C, t, h, w), sigmas (B,)."""
    s = sigmas.view(-1, *([1] * (latents.dim() - 1)))
    return (1.0 - s) * latents + s * noise, noise - latents


@torch.no_grad()
def reference_velocity(policy: FlowPolicy, latents, sigmas, text, *, reference=None, lora_model=None):
    """v_ref: a frozen copy (full fine-tune), or the same network with its LoRA adapters disabled."""
    if reference is not None:
        return policy.velocity(latents, sigmas, text, transformer=reference)
    lora_model.disable_adapters()
    try:
        return policy.velocity(latents, sigmas, text, transformer=lora_model)
    finally:
        lora_model.enable_adapters()


def step_loss(
    config: FlowTrainConfig,
    policy: FlowPolicy,
    model,
    batch: dict,
    generator: torch.Generator,
    *,
    reference=None,
    lora_model=None,
) -> tuple[torch.Tensor, dict]:
    """The method's loss on one micro-batch, and its statistics (floats)."""
    device = batch["text"].device
    text = batch["text"]  # (B, L, D)
    if config.method == "flow-dpo":
        latents_w, latents_l = batch["latents_w"], batch["latents_l"]  # (B, C, t, h, w) each
        sigmas = sample_sigmas(latents_w.shape[0], generator, config.sigma_shift).to(device)
        noise = torch.randn(latents_w.shape, generator=generator).to(device)  # shared by winner and loser
        x_w, target_w = noised(latents_w, noise, sigmas)
        x_l, target_l = noised(latents_l, noise, sigmas)
        latents, targets = torch.cat([x_w, x_l]), torch.cat([target_w, target_l])  # (2B, …)
        both_sigmas, both_text = torch.cat([sigmas, sigmas]), torch.cat([text, text])
        policy_error_w, policy_error_l = flow_matching_error(
            policy.velocity(latents, both_sigmas, both_text, transformer=model), targets
        ).chunk(2)
        reference_error_w, reference_error_l = flow_matching_error(
            reference_velocity(policy, latents, both_sigmas, both_text, reference=reference, lora_model=lora_model),
            targets,
        ).chunk(2)
        dpo = cast(FlowDPOConfig, config)
        beta = flow_dpo_beta(sigmas, dpo.beta, dpo.beta_schedule)
        loss, logits = flow_dpo_loss(policy_error_w, policy_error_l, reference_error_w, reference_error_l, beta)
        logits = logits.detach()
        return loss, {
            "accuracy": float((logits > 0).float().mean()),
            "logits": float(logits.mean()),
            "policy_error_w": float(policy_error_w.detach().mean()),
            "policy_error_l": float(policy_error_l.detach().mean()),
        }
    latents = batch["latents"]
    sigmas = sample_sigmas(latents.shape[0], generator, config.sigma_shift).to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    x, target = noised(latents, noise, sigmas)
    velocity = policy.velocity(x, sigmas, text, transformer=model)
    if config.method == "flow-rwr":
        return flow_rwr_loss(velocity, target, batch["reward"], cast(FlowRWRConfig, config).temperature), {}
    return flow_matching_loss(velocity, target), {}


# --------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------


def save_trained_policy(folder: Path, policy: FlowPolicy, model, config: FlowTrainConfig) -> Path:
    """A loadable trained-policy folder: LoRA weights (or the transformer), flow_policy.json, the config."""
    folder.mkdir(parents=True, exist_ok=True)
    if config.finetune == "lora":
        policy.save_lora(folder, transformer=model)
    else:
        model.save_pretrained(folder / "transformer")
    info = {"base": str(Path(config.policy).resolve()), "finetune": config.finetune, "method": config.method}
    (folder / TRAINED_POLICY_FILE).write_text(json.dumps(info, indent=2) + "\n")
    save_config(config, folder / TRAIN_CONFIG_FILE)
    return folder


def restore_weights(checkpoint: Path, policy: FlowPolicy, model, config: FlowTrainConfig) -> None:
    if config.finetune == "lora":
        policy.load_lora_into_adapter(checkpoint)
    else:
        saved = type(model).from_pretrained(checkpoint / "transformer", torch_dtype=next(model.parameters()).dtype)
        model.load_state_dict(saved.state_dict())


# --------------------------------------------------------------------------------------------------
# The method: what the shared loop (alignment.training) leaves to SFT, Flow-DPO and Flow-RWR
# --------------------------------------------------------------------------------------------------


class FlowMethod(TrainingMethod):
    """SFT / Flow-DPO / Flow-RWR (``config.method``) on the policy's cached text embeddings and latents.

    LoRA trains adapters on a (possibly half-precision) frozen base, and Flow-DPO's reference is that base with
    the adapters switched off; a full fine-tune keeps float32 master weights and a frozen copy as the reference."""

    log = log
    throughput_key = "train_videos_per_second"

    def __init__(self, config: FlowTrainConfig):
        super().__init__(config)
        self.name = config.method
        # Flow-DPO's reference: a frozen copy (full fine-tune), or the LoRA model with its adapters switched off
        self.reference: torch.nn.Module | None = None
        self.lora_model: torch.nn.Module | None = None

    def setup(self, run: Run):
        config = self.config
        train_items, val_items = self._cached_items(run)
        dataset_class = CachedPairs if config.method == "flow-dpo" else CachedVideos
        self.val_set = dataset_class(val_items, self.cache)
        self.collator = PadTextCollator(self.policy.max_sequence_length)
        model = self.policy.transformer
        if config.finetune == "lora":
            self.policy.add_lora(
                rank=config.lora_rank, alpha=config.lora_alpha, target_modules=config.lora_target_modules
            )
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()  # adapters train in float32 under a half-precision base
        else:
            self.reference = reference = copy.deepcopy(model).requires_grad_(False).eval()
            if self.half is not None:
                reference.to(self.half)
            model.requires_grad_(True)
        if torch.cuda.is_available() and config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        model.train()
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        return model, dataset_class(train_items, self.cache), self.collator

    def _cached_items(self, run: Run) -> tuple[list, list]:
        """Load the policy, make the training and validation items, and cache their prompts' embeddings and
        their videos' latents (the main process first); the policy's encoders are released afterwards."""
        config, accelerator = self.config, run.accelerator
        self.half = half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
        # LoRA trains adapters only: the frozen base can live in half precision. A full fine-tune keeps
        # float32 master weights and autocasts.
        self.policy = policy = load_policy(
            config.policy,
            device=accelerator.device,
            encoder_dtype=half or torch.float32,
            dtype=half if half is not None and config.finetune == "lora" else torch.float32,
        )
        snapshot = read_snapshot(config.snapshot)
        roots = [snapshot.root, *([Path(config.media_root)] if config.media_root else [])]
        with accelerator.main_process_first():
            train_items = training_items(config, snapshot.split(config.train_split), roots)
            val_items = training_items(config, snapshot.split(config.val_split), roots)
            if config.method == "flow-rwr":  # standardised by the training set's statistics, both splits
                train_items, val_items = (
                    standardised_rewards(train_items),
                    standardised_rewards(val_items, reference=train_items),
                )
            if config.max_eval_items is not None:
                val_items = val_items[: config.max_eval_items]
            if not train_items:
                raise ValueError(
                    f"{config.snapshot}: no training items in split {config.train_split!r} for "
                    f"{config.method} (every pair tied, undecided or within min_margin?)"
                )
            everything = train_items + val_items
            prompts = [item.prompt for item in everything]
            videos = (
                [v for item in everything for v in (item.winner, item.loser)]
                if config.method == "flow-dpo"
                else [item.video for item in everything]
            )
            self.cache = cache = build_cache(
                policy,
                prompts,
                videos,
                cache_dir=config.cache_dir or run.output_dir / "cache",
                roots=roots,
                num_frames=config.num_frames,
                height=config.height,
                width=config.width,
                batch_size=config.encode_batch_size,
                progress=config.progress and accelerator.is_main_process,
            )
        policy.release_encoders()
        accelerator.print(
            f"{config.method}: {len(set(prompts))} prompts and {len(set(videos))} videos cached "
            f"({cache.encoded_prompts} and {cache.encoded_videos} newly encoded) "
            f"under {cache.latents.folder.parent}"
        )
        return train_items, val_items

    def optimizer(self, model):
        return torch.optim.AdamW(self.trainable, lr=self.config.learning_rate, weight_decay=self.config.weight_decay)

    def clip_parameters(self, run: Run):
        return self.trainable

    def prepared(self, run: Run) -> None:
        self.lora_model = run.unwrapped if self.config.finetune == "lora" else None

    def initial_metrics(self, run: Run) -> dict:
        return {"method": self.config.method, "n_train": len(run.train_set), "n_val": len(self.val_set)}

    def restore_weights(self, checkpoint: Path, run: Run) -> None:
        restore_weights(checkpoint, self.policy, run.unwrapped, self.config)

    def start_message(self, run: Run) -> str:
        config, accelerator = self.config, run.accelerator
        finetune = "LoRA" if config.finetune == "lora" else "full fine-tune"
        return (
            f"{config.method} on {len(run.train_set)} training and {len(self.val_set)} validation items, "
            f"{run.total_steps} steps ({config.epochs} epochs, {config.batch_size} a step), "
            f"{accelerator.num_processes} process(es), {finetune}, mixed precision {accelerator.mixed_precision}"
        )

    def loss(self, run: Run, batch: dict, generator: torch.Generator):
        return step_loss(
            self.config, self.policy, run.model, batch, generator, reference=self.reference, lora_model=self.lora_model
        )

    def batch_items(self, batch: dict) -> int:
        return batch["text"].shape[0] * (2 if self.config.method == "flow-dpo" else 1)

    @torch.no_grad()
    def evaluate(self, run: Run) -> dict:
        """The method's loss on the validation items with fixed σ and noise, so evaluations compare."""
        config, accelerator, model, step = self.config, run.accelerator, run.model, run.state["step"]
        if not len(self.val_set):
            return {"step": step, "n_items": 0}
        model.eval()
        loader = accelerator.prepare(
            DataLoader(
                self.val_set, batch_size=run.micro_batch, collate_fn=self.collator, num_workers=config.num_workers
            )
        )
        totals: dict[str, float] = {}
        count = 0
        for index, batch in enumerate(
            tqdm(loader, desc="eval", leave=False, disable=not (config.progress and accelerator.is_main_process))
        ):
            generator = step_generator(config.seed, -1, index, accelerator.process_index)
            loss, stats = self.loss(run, batch, generator)
            for key, value in {"loss": float(loss), **stats}.items():
                totals[key] = totals.get(key, 0.0) + value
            count += 1
        model.train()
        result = {"step": step, "n_items": len(self.val_set), **{key: value / count for key, value in totals.items()}}
        if accelerator.is_main_process:
            self.log.info(
                "evaluation at step %d: %d items, loss %.4f%s",
                step,
                len(self.val_set),
                result["loss"],
                f", implicit accuracy {result['accuracy']:.3f}" if "accuracy" in result else "",
            )
        return result

    def save_weights(self, folder: Path, run: Run) -> None:
        save_trained_policy(folder, self.policy, run.unwrapped, self.config)

    def summary_fields(self, run: Run) -> dict:
        cache = self.cache
        return {
            "cache": {
                "encoded_prompts": cache.encoded_prompts,
                "encoded_videos": cache.encoded_videos,
                "text": str(cache.text.folder),
                "latents": str(cache.latents.folder),
            },
            "final": str(run.output_dir / self.final_dir_name),
        }

    def report(self, run: Run, elapsed: float) -> None:
        config, metrics, final_dir = self.config, run.metrics, run.output_dir / self.final_dir_name
        last_loss = metrics["train_loss"][-1]["loss"] if metrics["train_loss"] else float("nan")
        last_eval = metrics["eval"][-1]
        val = (f", val loss {last_eval['loss']:.4f}" if "loss" in last_eval else "") + (
            f", val implicit accuracy {last_eval['accuracy']:.3f}" if "accuracy" in last_eval else ""
        )
        kind = "LoRA" if config.finetune == "lora" else "transformer"
        items = "pairs" if config.method == "flow-dpo" else "videos"
        run.accelerator.print(
            f"{config.method}: {run.state['step']} steps on {len(run.train_set)} {items}, "
            f"last loss {last_loss:.4f}{val}; {kind} in {final_dir}"
        )
        self.log.info(
            "done: %d steps in %.0f s, last loss %.4f%s; %s in %s",
            run.state["step"],
            elapsed,
            last_loss,
            val,
            kind,
            final_dir,
        )


def train_flow(config: FlowTrainConfig, *, on_step: OnStep | None = None) -> dict:
    """Train (or resume) SFT / Flow-DPO / Flow-RWR as ``config``'s type says; return the final metrics
    (also written to ``output_dir/metrics.json``); the trained policy is in ``output_dir/final``.

    ``on_step(step, total_steps, loss)`` is called on the main process after every optimizer step."""
    check_config(config)
    return run_training(FlowMethod(for_this_machine(config)), on_step=on_step)
