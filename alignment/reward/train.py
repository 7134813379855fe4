"""Training VideoReward on a snapshot: an explicit accelerate loop, readable top to bottom.

``output_dir/``
  ``checkpoints/step-00000040/``  model.safetensors, reward_config.json, train_config.json,
                                  optimizer.pt, scheduler.pt, trainer_state.json
  ``model/``                      the final model (model.safetensors + configs + normalization.json)
  ``best/``                       with ``keep_best``: the best epoch on the validation pairs so far (best_by),
                                  which becomes ``model/`` at the end
  ``metrics.json``                loss curve, per-epoch evaluation, normalisation, throughput

Re-running the same command resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm

from alignment.checkpoints import checkpoints, restore_training_state, write_checkpoint, write_json_atomic
from alignment.config import machine_defaults, save_config
from alignment.data import PairRecord, PairVideoDataset, read_snapshot, read_videoalign_csv
from alignment.data.records import DIMENSIONS
from alignment.losses import reward_loss
from alignment.reward.config import RewardTrainConfig
from alignment.reward.model import MODEL_FILE, RewardBatchCollator, RewardModel, save_reward_model

log = logging.getLogger(__name__)
TRAIN_CONFIG_FILE = "train_config.json"
BEST_DIR = "best"  # keep_best: the model of the best epoch so far
BEST_BY = ("accuracy", "loss")  # keep_best: what makes an epoch the best


def load_pairs(config: RewardTrainConfig) -> tuple[list[PairRecord], list[PairRecord], list[Path]]:
    """(train pairs, val pairs, roots to resolve relative video paths)."""
    roots = [Path(config.media_root)] if config.media_root else []
    if config.snapshot:
        snapshot = read_snapshot(config.snapshot)
        return snapshot.split(config.train_split), snapshot.split(config.val_split), [snapshot.root, *roots]
    if config.train_csv:
        train = read_videoalign_csv(config.train_csv, video_root=config.media_root)
        val = read_videoalign_csv(config.val_csv, video_root=config.media_root) if config.val_csv else []
        return train, val, roots
    raise ValueError("set `snapshot` (a snapshot folder) or `train_csv` (a VideoAlign CSV) in the config")


def _micro_batch_size(config: RewardTrainConfig, num_processes: int) -> int:
    per_step = config.batch_size // (num_processes * config.gradient_accumulation_steps)
    if per_step < 1 or per_step * num_processes * config.gradient_accumulation_steps != config.batch_size:
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of processes ({num_processes}) × "
                         f"gradient_accumulation_steps ({config.gradient_accumulation_steps})")
    return per_step


def pair_loss(model, batch, *, kind: str, theta: float) -> torch.Tensor:
    rewards = model(**batch["inputs"])  # (2B, 3): the A videos, then the B videos
    rewards_a, rewards_b = rewards.chunk(2)
    delta = rewards_a - rewards_b  # (B, 3)
    return reward_loss(delta.flatten(), batch["labels"].long().flatten(), kind=kind, theta=theta)


LR_SCHEDULES = ("constant", "cosine")


def learning_rate_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The multiplier of the base learning rate at ``step`` (0-based): a linear warmup, then constant
    or a cosine decay to 0 at ``total_steps`` — which makes the last epoch's small steps settle the
    model that is saved and evaluated, instead of leaving it wherever the last full-size step threw it."""
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    if schedule == "constant":
        return warmup
    progress = min(1.0, max(0, step - warmup_steps) / max(1, total_steps - warmup_steps))
    return warmup * 0.5 * (1.0 + math.cos(math.pi * progress))


def save_checkpoint(output_dir: Path, model: RewardModel, optimizer, scheduler, config: RewardTrainConfig,
                    state: dict) -> Path:
    def save_weights(folder: Path) -> None:
        save_reward_model(model, folder)
        save_config(config, folder / TRAIN_CONFIG_FILE)

    return write_checkpoint(output_dir, state=state, optimizer=optimizer, scheduler=scheduler,
                            keep=config.keep_checkpoints, save_weights=save_weights)


@torch.no_grad()
def score_pairs(model: RewardModel, loader, accelerator, *, progress: bool = False) -> tuple[torch.Tensor, ...]:
    """Rewards of both videos of every pair: ``(rewards_a (N, 3), rewards_b (N, 3), labels (N, 3))``."""
    model.eval()
    all_a, all_b, all_labels = [], [], []
    for batch in tqdm(loader, desc="eval", disable=not (progress and accelerator.is_main_process), leave=False):
        rewards_a, rewards_b = model(**batch["inputs"]).float().chunk(2)
        rewards_a, rewards_b, labels = accelerator.gather_for_metrics((rewards_a, rewards_b, batch["labels"]))
        all_a.append(rewards_a.cpu())
        all_b.append(rewards_b.cpu())
        all_labels.append(labels.cpu())
    model.train()
    if not all_a:
        empty = torch.zeros(0, len(DIMENSIONS))
        return empty, empty, empty.to(torch.int8)
    return torch.cat(all_a), torch.cat(all_b), torch.cat(all_labels)


def evaluate_rewards(rewards_a, rewards_b, labels, *, loss_kind: str, theta: float) -> dict:
    """Per-dimension accuracies with/without ties and the validation loss."""
    from alignment.metrics import accuracy_table

    delta = rewards_a - rewards_b
    result = {"n_pairs": int(labels.shape[0])}
    if labels.shape[0]:
        result["loss"] = float(reward_loss(delta.flatten(), labels.long().flatten(), kind=loss_kind, theta=theta))
        result.update(accuracy_table({d: labels[:, i] for i, d in enumerate(DIMENSIONS)},
                                     {d: delta[:, i] for i, d in enumerate(DIMENSIONS)}))
    return result


def mean_accuracy_without_ties(evaluation: dict) -> float:
    """The mean over VQ, MQ, TA of an evaluation's accuracy without ties (dimensions with no decided pair left out)."""
    values = [evaluation[d]["accuracy_without_ties"] for d in DIMENSIONS if d in evaluation]
    values = [value for value in values if not math.isnan(value)]
    return sum(values) / len(values) if values else float("nan")


def better_epoch(candidate: dict, best: dict, best_by: str) -> bool:
    """Whether an epoch's validation result (``loss``, ``accuracy``) beats the best so far. By ``accuracy``: the
    higher mean accuracy without ties, equal ones by the lower loss (validation loss grows as the model grows
    sure of itself while its ranking still improves, so on small data it picks an early, underfit epoch);
    by ``loss``: the lower loss."""
    if best_by == "loss" or math.isnan(candidate["accuracy"]):
        return candidate["loss"] < best["loss"]
    best_accuracy = best.get("accuracy", math.nan)
    if math.isnan(best_accuracy):  # a best kept before best_by existed, or with no decided pair
        return True
    if candidate["accuracy"] != best_accuracy:
        return candidate["accuracy"] > best_accuracy
    return candidate["loss"] < best["loss"]


def _evaluation_summary(result: dict) -> str:
    """One line of an evaluation: the loss and each dimension's accuracy without ties."""
    if not result.get("n_pairs"):
        return "no validation pairs"
    accuracies = ", ".join(f"{d} {result[d]['accuracy_without_ties']:.3f}" for d in DIMENSIONS if d in result)
    return f"{result['n_pairs']} pairs, loss {result['loss']:.4f}, accuracy without ties {accuracies}"


def normalization_from(rewards_a: torch.Tensor, rewards_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per dimension over the validation videos (both sides of every pair)."""
    rewards = torch.cat([rewards_a, rewards_b])
    if rewards.shape[0] < 2:
        return torch.zeros(len(DIMENSIONS)), torch.ones(len(DIMENSIONS))
    return rewards.mean(0), rewards.std(0)


def prune_frame_cache(config: RewardTrainConfig) -> None:
    """Keep the frame cache within ``frame_cache_max_gb``, the least recently used videos going first."""
    if not config.frame_cache_dir or config.frame_cache_max_gb is None:
        return
    from alignment.data.frame_cache import FrameCache

    deleted, freed = FrameCache(config.frame_cache_dir).prune(round(config.frame_cache_max_gb * 1e9))
    if deleted:
        log.info("frame cache %s: %d least recently used videos deleted (%.1f MB) to stay within %g GB",
                 config.frame_cache_dir, deleted, freed / 1e6, config.frame_cache_max_gb)


def train_reward_model(config: RewardTrainConfig, *, on_step: Callable[[int, int, float], None] | None = None) -> dict:
    """Train (or resume) and return the final metrics (also written to ``metrics.json``).

    ``on_step(step, total_steps, loss)`` is called on the main process after every optimizer step (a
    Celery job reports its progress through it)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule {config.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
    if config.best_by not in BEST_BY:
        raise ValueError(f"best_by {config.best_by!r}: choose one of {', '.join(BEST_BY)}")
    if config.frame_cache_max_gb is not None and config.frame_cache_max_gb <= 0:
        raise ValueError(f"frame_cache_max_gb {config.frame_cache_max_gb}: give a size above 0, or leave it empty "
                         "for no limit (or frame_cache_dir empty for no cache)")
    config = machine_defaults(config, cuda=torch.cuda.is_available(),
                              bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation_steps,
                              mixed_precision=config.mixed_precision)
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / TRAIN_CONFIG_FILE)
        prune_frame_cache(config)

    train_pairs, val_pairs, roots = load_pairs(config)
    if not train_pairs:
        raise ValueError(f"no training pairs in split {config.train_split!r}")
    if config.max_eval_pairs is not None:
        val_pairs = val_pairs[: config.max_eval_pairs]
    model = RewardModel(config.model)
    collator = RewardBatchCollator(model.processor())
    micro_batch = _micro_batch_size(config, accelerator.num_processes)
    loading = dict(roots=roots, decode_threads=config.decode_threads, cache_videos=config.cache_videos,
                   frame_cache=config.frame_cache_dir)
    train_set = PairVideoDataset(train_pairs, model.frame_spec, **loading)
    val_loader = DataLoader(PairVideoDataset(val_pairs, model.frame_spec, **loading),
                            batch_size=micro_batch, num_workers=config.num_workers, collate_fn=collator)

    head_names = {"head.weight", "backbone.reward_token_embeddings", "backbone.reward_queries"}
    head_params = [p for n, p in model.named_parameters() if p.requires_grad and n in head_names]
    body_params = [p for n, p in model.named_parameters() if p.requires_grad and n not in head_names]
    optimizer = torch.optim.AdamW(
        [{"params": body_params, "lr": config.learning_rate},
         {"params": head_params, "lr": config.head_learning_rate or config.learning_rate}],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(
        step, warmup_steps=config.warmup_steps, total_steps=total_steps, schedule=config.lr_schedule))
    model, optimizer, scheduler, val_loader = accelerator.prepare(model, optimizer, scheduler, val_loader)

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0}
    metrics = {"train_loss": [], "eval": []}
    existing = checkpoints(output_dir)
    if existing:
        newest = existing[-1]
        from safetensors.torch import load_file

        accelerator.unwrap_model(model).load_trainable_state_dict(load_file(newest / "model.safetensors"),
                                                                  source=str(newest))
        state = restore_training_state(newest, optimizer=optimizer, scheduler=scheduler)
        metrics = state.pop("metrics")
        accelerator.print(f"resuming from {newest} (step {state['step']}, epoch {state['epoch']})")
    # The run's events are logged at INFO, one line each (a worker shows them): start, evaluations, checkpoints, end.
    if accelerator.is_main_process:
        log.info("training on %d training and %d validation pairs, %d steps (%d epochs, %d pairs a step), "
                 "%d process(es), mixed precision %s%s", len(train_pairs), len(val_pairs), total_steps, config.epochs,
                 config.batch_size, accelerator.num_processes, config.mixed_precision,
                 f"; resuming from {existing[-1].name} (step {state['step']})" if existing else "")

    def checkpoint_now():
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            saved = save_checkpoint(output_dir, accelerator.unwrap_model(model), optimizer, scheduler, config,
                                    {**state, "metrics": metrics})
            log.info("checkpoint %s saved (step %d, epoch %d)", saved.name, state["step"], state["epoch"])

    def best_so_far(metrics: dict) -> None:
        """After an epoch's evaluation: keep this model in ``best/`` when it is the best yet by ``best_by``."""
        latest = metrics["eval"][-1]
        if latest.get("loss") is None or latest["loss"] != latest["loss"]:  # no validation pairs: nothing to choose by
            return
        candidate = {"epoch": latest["epoch"], "step": latest["step"], "loss": latest["loss"],
                     "accuracy": mean_accuracy_without_ties(latest)}
        if metrics.get("best") is None or better_epoch(candidate, metrics["best"], config.best_by):
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_reward_model(accelerator.unwrap_model(model), output_dir / BEST_DIR)
            metrics["best"] = candidate

    def run_eval():
        rewards_a, rewards_b, labels = score_pairs(model, val_loader, accelerator, progress=config.progress)
        result = evaluate_rewards(rewards_a, rewards_b, labels, loss_kind=config.loss, theta=config.theta)
        mean, std = normalization_from(rewards_a, rewards_b)
        accelerator.unwrap_model(model).set_normalization(mean.to(accelerator.device), std.to(accelerator.device))
        if accelerator.is_main_process:
            log.info("evaluation at step %d (epoch %d): %s", state["step"], state["epoch"], _evaluation_summary(result))
        return {"epoch": state["epoch"], "step": state["step"], **result}

    model.train()
    progress = tqdm(total=total_steps, initial=state["step"], desc="reward-train",
                    disable=not (config.progress and accelerator.is_main_process))
    start_time, samples_seen, done = time.perf_counter(), 0, state["step"] >= total_steps
    while state["epoch"] < config.epochs and not done:
        generator = torch.Generator().manual_seed(config.seed + state["epoch"])  # same order when resumed
        loader = DataLoader(train_set, batch_size=micro_batch, sampler=RandomSampler(train_set, generator=generator),
                            num_workers=config.num_workers, collate_fn=collator, persistent_workers=False)
        loader = accelerator.prepare(loader)
        micro_batches_done = state["batches_in_epoch"] * config.gradient_accumulation_steps
        if micro_batches_done:
            loader = accelerator.skip_first_batches(loader, micro_batches_done)
        running, count = 0.0, 0
        for batch in loader:
            with accelerator.accumulate(model):
                loss = pair_loss(model, batch, kind=config.loss, theta=config.theta)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running += accelerator.gather(loss.detach()).mean().item()
            count += 1
            samples_seen += batch["labels"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            state["batches_in_epoch"] += 1
            metrics["train_loss"].append({"step": state["step"], "epoch": state["epoch"], "loss": running / count,
                                          "lr": scheduler.get_last_lr()[0]})
            progress.set_postfix(loss=f"{running / count:.4f}")
            progress.update(1)
            if on_step is not None and accelerator.is_main_process:
                on_step(state["step"], total_steps, running / count)
            running, count = 0.0, 0
            if config.save_every_steps and state["step"] % config.save_every_steps == 0:
                checkpoint_now()
            if state["step"] >= total_steps:
                done = True
                break
        if not done or state["batches_in_epoch"] * config.batch_size >= len(train_set):
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
        metrics["eval"].append(run_eval())
        if config.keep_best:
            best_so_far(metrics)
        checkpoint_now()
    progress.close()
    elapsed = time.perf_counter() - start_time

    if not metrics["eval"] or metrics["eval"][-1]["step"] != state["step"]:
        metrics["eval"].append(run_eval())
    final = accelerator.unwrap_model(model)
    accelerator.wait_for_everyone()
    best = metrics.get("best") if config.keep_best else None
    if best is not None:  # the chosen epoch's model and normalisation
        from safetensors.torch import load_file

        best_file = output_dir / BEST_DIR / MODEL_FILE
        final.load_trainable_state_dict(load_file(best_file, device=str(accelerator.device)), source=str(best_file))
    metrics["normalization"] = {d: {"mean": float(final.reward_mean[i]), "std": float(final.reward_std[i])}
                                for i, d in enumerate(DIMENSIONS)}
    metrics["train_samples_per_second"] = samples_seen / elapsed if elapsed > 0 and samples_seen else None
    if accelerator.is_main_process:
        save_reward_model(final, output_dir / "model")
        save_config(config, output_dir / "model" / TRAIN_CONFIG_FILE)
        write_json_atomic(output_dir / "metrics.json", metrics)
        prune_frame_cache(config)
        last = next(e for e in metrics["eval"] if e["step"] == best["step"]) if best else metrics["eval"][-1]
        chosen = (f" (epoch {best['epoch']}, the " + ("best validation accuracy" if config.best_by == "accuracy"
                                                       else "lowest validation loss") + ")") if best else ""
        summary = ", ".join(f"{d} {last[d]['accuracy_with_ties']:.3f}/{last[d]['accuracy_without_ties']:.3f}"
                            for d in DIMENSIONS if d in last)
        accelerator.print(f"reward-train: {state['step']} steps, val acc w/ ties / w/o ties: {summary or 'no val pairs'}"
                          f"{chosen}"
                          f"; model in {output_dir / 'model'}")
        log.info("done: %d steps in %.0f s%s; model in %s", state["step"], elapsed, chosen,
                 output_dir / "model")
    return metrics
