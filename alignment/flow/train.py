"""SFT, Flow-DPO and Flow-RWR on a snapshot: one explicit accelerate loop, readable top to bottom.

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
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from alignment.config import machine_defaults, save_config
from alignment.flow.config import FINETUNES, TRAINERS, FlowDPOConfig, FlowRWRConfig, FlowTrainConfig, SFTConfig  # noqa: F401
from alignment.data import read_snapshot
from alignment.flow.cache import FlowCache, build_cache, sha256_text
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
)
from alignment.losses import (
    FLOW_DPO_BETA_SCHEDULES,
    flow_dpo_beta,
    flow_dpo_loss,
    flow_matching_error,
    flow_matching_loss,
    flow_rwr_loss,
)
from alignment.checkpoints import checkpoints, restore_training_state, write_checkpoint, write_json_atomic
from alignment.reward.train import LR_SCHEDULES, learning_rate_factor

log = logging.getLogger(__name__)
TRAIN_CONFIG_FILE = "train_config.json"


def check_config(config: FlowTrainConfig) -> None:
    if config.finetune not in FINETUNES:
        raise ValueError(f"finetune {config.finetune!r}: choose one of {', '.join(FINETUNES)}")
    if config.label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source {config.label_source!r}: choose one of {', '.join(LABEL_SOURCES)}")
    if config.label_source == "reward_model" and not config.reward_model:
        raise ValueError("label_source reward_model needs `reward_model`: a trained VideoReward folder")
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule {config.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
    if isinstance(config, FlowDPOConfig) and config.beta_schedule not in FLOW_DPO_BETA_SCHEDULES:
        raise ValueError(f"beta_schedule {config.beta_schedule!r}: choose one of {', '.join(FLOW_DPO_BETA_SCHEDULES)}")


# --------------------------------------------------------------------------------------------------
# Data: snapshot → items → cached tensors
# --------------------------------------------------------------------------------------------------


def training_items(config: FlowTrainConfig, pairs, roots: list[Path]) -> list:
    """PreferencePairs (Flow-DPO) or RewardedVideos (SFT: the winners; Flow-RWR: every video) of a split."""
    weights, source = config.dimension_weights, config.label_source
    progress = config.progress
    if config.method == "flow-rwr":
        if source == "reward_model":
            return reward_model_video_rewards(pairs, config.reward_model, roots=roots, weights=weights,
                                              progress=progress)
        return consensus_video_rewards(pairs, weights=weights)
    if source == "reward_model":
        decided = relabelled_pairs(pairs, config.reward_model, roots=roots, weights=weights,
                                   min_margin=config.min_margin, progress=progress)
    else:
        decided = preference_pairs(pairs, weights=weights, min_margin=config.min_margin)
    if config.method == "flow-dpo":
        return decided
    winners = {(p.prompt, p.winner): p.margin for p in decided}
    return [RewardedVideo(prompt=prompt, video=video, reward=margin) for (prompt, video), margin in sorted(winners.items())]


class CachedVideos(Dataset):
    """RewardedVideos → {"text" (L_i, D), "latents" (C, t, h, w), "reward" ()} from the cache."""

    def __init__(self, items: list[RewardedVideo], cache: FlowCache):
        self.items, self.cache = items, cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        return {"text": self.cache.text.get(sha256_text(item.prompt)),
                "latents": self.cache.latents.get(self.cache.video_keys[item.video]),
                "reward": torch.tensor(item.reward, dtype=torch.float32)}


class CachedPairs(Dataset):
    """PreferencePairs → {"text", "latents_w", "latents_l"} from the cache."""

    def __init__(self, items: list[PreferencePair], cache: FlowCache):
        self.items, self.cache = items, cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        return {"text": self.cache.text.get(sha256_text(item.prompt)),
                "latents_w": self.cache.latents.get(self.cache.video_keys[item.winner]),
                "latents_l": self.cache.latents.get(self.cache.video_keys[item.loser])}


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


def step_loss(config: FlowTrainConfig, policy: FlowPolicy, model, batch: dict, generator: torch.Generator, *,
              reference=None, lora_model=None) -> tuple[torch.Tensor, dict]:
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
            policy.velocity(latents, both_sigmas, both_text, transformer=model), targets).chunk(2)
        reference_error_w, reference_error_l = flow_matching_error(reference_velocity(
            policy, latents, both_sigmas, both_text, reference=reference, lora_model=lora_model), targets).chunk(2)
        beta = flow_dpo_beta(sigmas, config.beta, config.beta_schedule)
        loss, logits = flow_dpo_loss(policy_error_w, policy_error_l, reference_error_w, reference_error_l, beta)
        logits = logits.detach()
        return loss, {"accuracy": float((logits > 0).float().mean()), "logits": float(logits.mean()),
                      "policy_error_w": float(policy_error_w.detach().mean()),
                      "policy_error_l": float(policy_error_l.detach().mean())}
    latents = batch["latents"]
    sigmas = sample_sigmas(latents.shape[0], generator, config.sigma_shift).to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    x, target = noised(latents, noise, sigmas)
    velocity = policy.velocity(x, sigmas, text, transformer=model)
    if config.method == "flow-rwr":
        return flow_rwr_loss(velocity, target, batch["reward"], config.temperature), {}
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


def save_checkpoint(output_dir: Path, policy: FlowPolicy, model, optimizer, scheduler, config: FlowTrainConfig,
                    state: dict) -> Path:
    return write_checkpoint(output_dir, state=state, optimizer=optimizer, scheduler=scheduler,
                            keep=config.keep_checkpoints,
                            save_weights=lambda folder: save_trained_policy(folder, policy, model, config))


def restore_weights(checkpoint: Path, policy: FlowPolicy, model, config: FlowTrainConfig) -> None:
    if config.finetune == "lora":
        policy.load_lora_into_adapter(checkpoint)
    else:
        saved = type(model).from_pretrained(checkpoint / "transformer", torch_dtype=next(model.parameters()).dtype)
        model.load_state_dict(saved.state_dict())


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def _micro_batch_size(config: FlowTrainConfig, num_processes: int) -> int:
    per_step = config.batch_size // (num_processes * config.gradient_accumulation_steps)
    if per_step < 1 or per_step * num_processes * config.gradient_accumulation_steps != config.batch_size:
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of processes ({num_processes}) × "
                         f"gradient_accumulation_steps ({config.gradient_accumulation_steps})")
    return per_step


def _step_generator(seed: int, step: int, micro: int, process: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1009 + micro) * 131 + process)


def train_flow(config: FlowTrainConfig, *, on_step: Callable[[int, int, float], None] | None = None) -> dict:
    """Train (or resume) SFT / Flow-DPO / Flow-RWR as ``config``'s type says; return the final metrics
    (also written to ``output_dir/metrics.json``); the trained policy is in ``output_dir/final``.

    ``on_step(step, total_steps, loss)`` is called on the main process after every optimizer step."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    check_config(config)
    on_gpu = torch.cuda.is_available()
    config = machine_defaults(config, cuda=on_gpu, bf16=on_gpu and torch.cuda.is_bf16_supported())
    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation_steps,
                              mixed_precision=config.mixed_precision if on_gpu else "no")
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / TRAIN_CONFIG_FILE)

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
    # LoRA trains adapters only: the frozen base can live in half precision. A full fine-tune keeps
    # float32 master weights and autocasts.
    policy = load_policy(config.policy, device=accelerator.device,
                         dtype=half if half is not None and config.finetune == "lora" else torch.float32,
                         encoder_dtype=half or torch.float32)
    snapshot = read_snapshot(config.snapshot)
    roots = [snapshot.root, *([Path(config.media_root)] if config.media_root else [])]
    with accelerator.main_process_first():
        train_items = training_items(config, snapshot.split(config.train_split), roots)
        val_items = training_items(config, snapshot.split(config.val_split), roots)
        if config.max_eval_items is not None:
            val_items = val_items[: config.max_eval_items]
        if not train_items:
            raise ValueError(f"{config.snapshot}: no training items in split {config.train_split!r} for "
                             f"{config.method} (every pair tied, undecided or within min_margin?)")
        everything = train_items + val_items
        prompts = [item.prompt for item in everything]
        videos = ([v for item in everything for v in (item.winner, item.loser)] if config.method == "flow-dpo"
                  else [item.video for item in everything])
        cache = build_cache(policy, prompts, videos, cache_dir=config.cache_dir or output_dir / "cache", roots=roots,
                            num_frames=config.num_frames, height=config.height, width=config.width,
                            batch_size=config.encode_batch_size, progress=config.progress and accelerator.is_main_process)
    policy.release_encoders()
    accelerator.print(f"{config.method}: {len(set(prompts))} prompts and {len(set(videos))} videos cached "
                      f"({cache.encoded_prompts} and {cache.encoded_videos} newly encoded) under {cache.latents.folder.parent}")
    dataset_class = CachedPairs if config.method == "flow-dpo" else CachedVideos
    train_set, val_set = dataset_class(train_items, cache), dataset_class(val_items, cache)
    collator = PadTextCollator(policy.max_sequence_length)
    micro_batch = _micro_batch_size(config, accelerator.num_processes)

    model = policy.transformer
    reference = None
    if config.finetune == "lora":
        policy.add_lora(rank=config.lora_rank, alpha=config.lora_alpha, target_modules=config.lora_target_modules)
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()  # adapters train in float32 under a half-precision base
    else:
        reference = copy.deepcopy(model).requires_grad_(False).eval()
        if half is not None:
            reference.to(half)
        model.requires_grad_(True)
    if on_gpu and config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(
        step, warmup_steps=config.warmup_steps, total_steps=total_steps, schedule=config.lr_schedule))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    lora_model = unwrapped if config.finetune == "lora" else None

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0}
    metrics = {"method": config.method, "n_train": len(train_set), "n_val": len(val_set), "train_loss": [], "eval": []}
    existing = checkpoints(output_dir)
    if existing:
        newest = existing[-1]
        restore_weights(newest, policy, unwrapped, config)
        state = restore_training_state(newest, optimizer=optimizer, scheduler=scheduler)
        metrics = state.pop("metrics")
        accelerator.print(f"resuming from {newest} (step {state['step']}, epoch {state['epoch']})")
    # The run's events are logged at INFO, one line each (a worker shows them): start, evaluations, checkpoints, end.
    if accelerator.is_main_process:
        log.info("%s on %d training and %d validation items, %d steps (%d epochs, %d a step), %d process(es), "
                 "%s, mixed precision %s%s", config.method, len(train_set), len(val_set), total_steps, config.epochs,
                 config.batch_size, accelerator.num_processes, "LoRA" if config.finetune == "lora" else "full fine-tune",
                 accelerator.mixed_precision,
                 f"; resuming from {existing[-1].name} (step {state['step']})" if existing else "")

    def checkpoint_now():
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            saved = save_checkpoint(output_dir, policy, accelerator.unwrap_model(model), optimizer, scheduler, config,
                                    {**state, "metrics": metrics})
            log.info("checkpoint %s saved (step %d)", saved.name, state["step"])

    @torch.no_grad()
    def run_eval() -> dict:
        """The method's loss on the validation items with fixed σ and noise, so evaluations compare."""
        if not len(val_set):
            return {"step": state["step"], "n_items": 0}
        model.eval()
        loader = accelerator.prepare(DataLoader(val_set, batch_size=micro_batch, collate_fn=collator,
                                                num_workers=config.num_workers))
        totals: dict[str, float] = {}
        count = 0
        for index, batch in enumerate(tqdm(loader, desc="eval", leave=False,
                                           disable=not (config.progress and accelerator.is_main_process))):
            generator = _step_generator(config.seed, -1, index, accelerator.process_index)
            loss, stats = step_loss(config, policy, model, batch, generator, reference=reference, lora_model=lora_model)
            for key, value in {"loss": float(loss), **stats}.items():
                totals[key] = totals.get(key, 0.0) + value
            count += 1
        model.train()
        result = {"step": state["step"], "n_items": len(val_set), **{key: value / count for key, value in totals.items()}}
        if accelerator.is_main_process:
            log.info("evaluation at step %d: %d items, loss %.4f%s", state["step"], len(val_set), result["loss"],
                     f", implicit accuracy {result['accuracy']:.3f}" if "accuracy" in result else "")
        return result

    progress = tqdm(total=total_steps, initial=state["step"], desc=config.method,
                    disable=not (config.progress and accelerator.is_main_process))
    start_time, videos_seen, done = time.perf_counter(), 0, state["step"] >= total_steps
    videos_per_item = 2 if config.method == "flow-dpo" else 1
    while state["epoch"] < config.epochs and not done:
        sampler_generator = torch.Generator().manual_seed(config.seed + state["epoch"])  # same order when resumed
        loader = DataLoader(train_set, batch_size=micro_batch, sampler=RandomSampler(train_set, generator=sampler_generator),
                            num_workers=config.num_workers, collate_fn=collator)
        loader = accelerator.prepare(loader)
        micro_batches_done = state["batches_in_epoch"] * config.gradient_accumulation_steps
        if micro_batches_done:
            loader = accelerator.skip_first_batches(loader, micro_batches_done)
        totals, count = {}, 0
        for batch in loader:
            generator = _step_generator(config.seed, state["step"], count, accelerator.process_index)
            with accelerator.accumulate(model):
                loss, stats = step_loss(config, policy, model, batch, generator, reference=reference,
                                        lora_model=lora_model)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            for key, value in {"loss": accelerator.gather(loss.detach()).mean().item(), **stats}.items():
                totals[key] = totals.get(key, 0.0) + value
            count += 1
            videos_seen += batch["text"].shape[0] * videos_per_item * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            state["batches_in_epoch"] += 1
            means = {key: value / count for key, value in totals.items()}
            metrics["train_loss"].append({"step": state["step"], "epoch": state["epoch"], **means,
                                          "lr": scheduler.get_last_lr()[0]})
            progress.set_postfix(loss=f"{means['loss']:.4f}")
            progress.update(1)
            if on_step is not None and accelerator.is_main_process:
                on_step(state["step"], total_steps, means["loss"])
            totals, count = {}, 0
            if config.eval_every_steps and state["step"] % config.eval_every_steps == 0:
                metrics["eval"].append(run_eval())
            if config.save_every_steps and state["step"] % config.save_every_steps == 0:
                checkpoint_now()
            if state["step"] >= total_steps:
                done = True
                break
        if not done or state["batches_in_epoch"] * config.batch_size >= len(train_set):
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
    progress.close()
    elapsed = time.perf_counter() - start_time

    if not metrics["eval"] or metrics["eval"][-1]["step"] != state["step"]:
        metrics["eval"].append(run_eval())
    checkpoint_now()
    metrics["train_videos_per_second"] = videos_seen / elapsed if elapsed > 0 and videos_seen else None
    metrics["cache"] = {"encoded_prompts": cache.encoded_prompts, "encoded_videos": cache.encoded_videos,
                        "text": str(cache.text.folder), "latents": str(cache.latents.folder)}
    final_dir = output_dir / "final"
    metrics["final"] = str(final_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        temp = output_dir / f".final.{uuid.uuid4().hex}.tmp"
        save_trained_policy(temp, policy, accelerator.unwrap_model(model), config)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.rename(temp, final_dir)
        write_json_atomic(output_dir / "metrics.json", metrics)
        last_loss = metrics["train_loss"][-1]["loss"] if metrics["train_loss"] else float("nan")
        last_eval = metrics["eval"][-1]
        val = (f", val loss {last_eval['loss']:.4f}" if "loss" in last_eval else "") + (
            f", val implicit accuracy {last_eval['accuracy']:.3f}" if "accuracy" in last_eval else "")
        kind = "LoRA" if config.finetune == "lora" else "transformer"
        accelerator.print(f"{config.method}: {state['step']} steps on {len(train_set)} "
                          f"{'pairs' if config.method == 'flow-dpo' else 'videos'}, last loss {last_loss:.4f}{val}; "
                          f"{kind} in {final_dir}")
        log.info("done: %d steps in %.0f s, last loss %.4f%s; %s in %s", state["step"], elapsed,
                 last_loss, val, kind, final_dir)
    return metrics
