"""Training VideoReward on a snapshot: the loss, the evaluation, keeping the best epoch, and ``RewardMethod``,
the part of the run that ``alignment.training``'s one loop leaves to a method.

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
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from alignment.checkpoints import checkpoints  # noqa: F401  (the run's checkpoints; tests import it from here)
from alignment.config import save_config
from alignment.data import PairRecord, PairVideoDataset, read_snapshot, read_videoalign_csv
from alignment.labels import DIMENSION_NAMES
from alignment.losses import reward_loss
from alignment.reward.config import RewardTrainConfig
from alignment.reward.model import MODEL_FILE, RewardBatchCollator, RewardModel, save_reward_model
from alignment.training import (  # noqa: F401  (LR_SCHEDULES and learning_rate_factor: imported from here too)
    LR_SCHEDULES,
    OnStep,
    Run,
    TrainingMethod,
    check_lr_schedule,
    for_this_machine,
    learning_rate_factor,
    run_training,
)

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


def pair_loss(model, batch, *, kind: str, theta: float) -> torch.Tensor:
    rewards = model(**batch["inputs"])  # (2B, 3): the A videos, then the B videos
    rewards_a, rewards_b = rewards.chunk(2)
    delta = rewards_a - rewards_b  # (B, 3)
    return reward_loss(delta.flatten(), batch["labels"].long().flatten(), kind=kind, theta=theta)


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
        empty = torch.zeros(0, len(DIMENSION_NAMES))
        return empty, empty, empty.to(torch.int8)
    return torch.cat(all_a), torch.cat(all_b), torch.cat(all_labels)


def evaluate_rewards(rewards_a, rewards_b, labels, *, loss_kind: str, theta: float) -> dict:
    """Per-dimension accuracies with/without ties and the validation loss."""
    from alignment.metrics import accuracy_table

    delta = rewards_a - rewards_b
    result: dict = {"n_pairs": int(labels.shape[0])}
    if labels.shape[0]:
        result["loss"] = float(reward_loss(delta.flatten(), labels.long().flatten(), kind=loss_kind, theta=theta))
        result.update(
            accuracy_table(
                {d: labels[:, i] for i, d in enumerate(DIMENSION_NAMES)},
                {d: delta[:, i] for i, d in enumerate(DIMENSION_NAMES)},
            )
        )
    return result


def mean_accuracy_without_ties(evaluation: dict) -> float:
    """The mean over VQ, MQ, TA of an evaluation's accuracy without ties (dimensions with no decided pair left out)."""
    values = [evaluation[d]["accuracy_without_ties"] for d in DIMENSION_NAMES if d in evaluation]
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
    accuracies = ", ".join(f"{d} {result[d]['accuracy_without_ties']:.3f}" for d in DIMENSION_NAMES if d in result)
    return f"{result['n_pairs']} pairs, loss {result['loss']:.4f}, accuracy without ties {accuracies}"


def normalization_from(rewards_a: torch.Tensor, rewards_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per dimension over the validation videos (both sides of every pair)."""
    rewards = torch.cat([rewards_a, rewards_b])
    if rewards.shape[0] < 2:
        return torch.zeros(len(DIMENSION_NAMES)), torch.ones(len(DIMENSION_NAMES))
    return rewards.mean(0), rewards.std(0)


def prune_frame_cache(config: RewardTrainConfig) -> None:
    """Keep the frame cache within ``frame_cache_max_gb``, the least recently used videos going first."""
    if not config.frame_cache_dir or config.frame_cache_max_gb is None:
        return
    from alignment.data.frame_cache import FrameCache

    deleted, freed = FrameCache(config.frame_cache_dir).prune(round(config.frame_cache_max_gb * 1e9))
    if deleted:
        log.info(
            "frame cache %s: %d least recently used videos deleted (%.1f MB) to stay within %g GB",
            config.frame_cache_dir,
            deleted,
            freed / 1e6,
            config.frame_cache_max_gb,
        )


def build_model(config: RewardTrainConfig) -> RewardModel:
    """A new VideoReward from ``config.model``, or with ``init_from`` a VideoAlign checkpoint to fine-tune in its
    own format (what it was trained on is what trains)."""
    if not config.init_from:
        return RewardModel(config.model)
    from alignment.reward.videoalign import VideoAlignRewardModel

    model = VideoAlignRewardModel(config.init_from, base_model=config.init_from_base_model, dtype=config.model.dtype)
    trainable = model.set_trainable()
    log.info("fine-tuning VideoAlign checkpoint %s: %d trainable parameters", model.checkpoint, trainable)
    return model


def save_model(model: RewardModel, folder: Path, *, step: int) -> None:
    """A checkpoint, ``best/`` or ``model/``: VidPref's format, or VideoAlign's for a model fine-tuned from one."""
    if hasattr(model, "save_videoalign"):
        model.save_videoalign(folder, step=step)
    else:
        save_reward_model(model, folder)


def saved_state(model: RewardModel, folder: Path) -> dict[str, torch.Tensor]:
    """The trainable tensors and normalisation that ``save_model`` wrote into ``folder``."""
    if hasattr(model, "read_saved_state"):
        return model.read_saved_state(folder)
    from safetensors.torch import load_file

    return load_file(folder / MODEL_FILE)


def check_config(config: RewardTrainConfig) -> None:
    check_lr_schedule(config)
    if config.best_by not in BEST_BY:
        raise ValueError(f"best_by {config.best_by!r}: choose one of {', '.join(BEST_BY)}")
    if config.frame_cache_max_gb is not None and config.frame_cache_max_gb <= 0:
        raise ValueError(
            f"frame_cache_max_gb {config.frame_cache_max_gb}: give a size above 0, or leave it empty "
            "for no limit (or frame_cache_dir empty for no cache)"
        )


class RewardMethod(TrainingMethod):
    """VideoReward on video pairs: Bradley–Terry (with ties) on r_A − r_B per dimension; evaluated, checkpointed
    and (``keep_best``) kept at the end of every epoch; the final model goes to ``model/``."""

    name = "reward-train"
    log = log
    final_dir_name = "model"
    evaluate_each_epoch = True
    checkpoint_at_end = False  # the last epoch's end has just checkpointed
    checkpoint_log_epoch = True

    def mixed_precision(self, on_gpu: bool) -> str:
        return self.config.mixed_precision  # as configured, on a CPU too

    def on_start(self, run: Run) -> None:
        prune_frame_cache(self.config)

    def setup(self, run: Run):
        config = self.config
        train_pairs, val_pairs, roots = load_pairs(config)
        if not train_pairs:
            raise ValueError(f"no training pairs in split {config.train_split!r}")
        if config.max_eval_pairs is not None:
            val_pairs = val_pairs[: config.max_eval_pairs]
        self.n_val = len(val_pairs)
        model = build_model(config)
        collator = RewardBatchCollator(model.processor())
        loading = dict(
            roots=roots,
            decode_threads=config.decode_threads,
            cache_videos=config.cache_videos,
            frame_cache=config.frame_cache_dir,
            reader=getattr(model, "read_video", None),  # a VideoAlign checkpoint samples frames its own way
        )
        self.val_loader = DataLoader(
            PairVideoDataset(val_pairs, model.frame_spec, **loading),
            batch_size=run.micro_batch,
            num_workers=config.num_workers,
            collate_fn=collator,
        )
        return model, PairVideoDataset(train_pairs, model.frame_spec, **loading), collator

    def optimizer(self, model):
        """The heads and reward-token embeddings at ``head_learning_rate``, the rest at ``learning_rate``."""
        config = self.config
        head_names = {"head.weight", "backbone.reward_token_embeddings", "backbone.reward_queries", "rm_head.weight"}
        head_params = [p for n, p in model.named_parameters() if p.requires_grad and n in head_names]
        body_params = [p for n, p in model.named_parameters() if p.requires_grad and n not in head_names]
        return torch.optim.AdamW(
            [
                {"params": body_params, "lr": config.learning_rate},
                {"params": head_params, "lr": config.head_learning_rate or config.learning_rate},
            ],
            weight_decay=config.weight_decay,
        )

    def prepared(self, run: Run) -> None:
        self.val_loader = run.accelerator.prepare(self.val_loader)

    def restore_weights(self, checkpoint: Path, run: Run) -> None:
        run.unwrapped.load_trainable_state_dict(saved_state(run.unwrapped, checkpoint), source=str(checkpoint))

    def start_message(self, run: Run) -> str:
        config = self.config
        return (
            f"training on {len(run.train_set)} training and {self.n_val} validation pairs, {run.total_steps} "
            f"steps ({config.epochs} epochs, {config.batch_size} pairs a step), "
            f"{run.accelerator.num_processes} process(es), mixed precision {config.mixed_precision}"
        )

    def loss(self, run: Run, batch, generator: torch.Generator):
        return pair_loss(run.model, batch, kind=self.config.loss, theta=self.config.theta), {}

    def batch_items(self, batch) -> int:
        return batch["labels"].shape[0]

    def evaluate(self, run: Run) -> dict:
        """Accuracies and loss on the validation pairs; sets the model's normalisation from their rewards."""
        config, accelerator, state = self.config, run.accelerator, run.state
        rewards_a, rewards_b, labels = score_pairs(run.model, self.val_loader, accelerator, progress=config.progress)
        result = evaluate_rewards(rewards_a, rewards_b, labels, loss_kind=config.loss, theta=config.theta)
        mean, std = normalization_from(rewards_a, rewards_b)
        run.unwrapped.set_normalization(mean.to(accelerator.device), std.to(accelerator.device))
        if accelerator.is_main_process:
            self.log.info(
                "evaluation at step %d (epoch %d): %s", state["step"], state["epoch"], _evaluation_summary(result)
            )
        return {"epoch": state["epoch"], "step": state["step"], **result}

    def after_epoch_evaluation(self, run: Run) -> None:
        """With ``keep_best``: keep this epoch's model in ``best/`` when it is the best yet by ``best_by``."""
        if not self.config.keep_best:
            return
        metrics = run.metrics
        latest = metrics["eval"][-1]
        if latest.get("loss") is None or latest["loss"] != latest["loss"]:  # no validation pairs: nothing to choose by
            return
        candidate = {
            "epoch": latest["epoch"],
            "step": latest["step"],
            "loss": latest["loss"],
            "accuracy": mean_accuracy_without_ties(latest),
        }
        if metrics.get("best") is None or better_epoch(candidate, metrics["best"], self.config.best_by):
            run.accelerator.wait_for_everyone()
            if run.accelerator.is_main_process:
                save_model(run.unwrapped, run.output_dir / BEST_DIR, step=run.state["step"])
            metrics["best"] = candidate

    def save_weights(self, folder: Path, run: Run) -> None:
        save_model(run.unwrapped, folder, step=run.state["step"])
        save_config(self.config, folder / TRAIN_CONFIG_FILE)

    def finish(self, run: Run) -> None:
        """The chosen epoch's model and normalisation (``keep_best``), and the normalisation in the metrics."""
        final, metrics = run.unwrapped, run.metrics
        best = self.best(run)
        if best is not None:
            best_dir = run.output_dir / BEST_DIR
            state = {name: tensor.to(run.accelerator.device) for name, tensor in saved_state(final, best_dir).items()}
            final.load_trainable_state_dict(state, source=str(best_dir))
        metrics["normalization"] = {
            d: {"mean": float(final.reward_mean[i]), "std": float(final.reward_std[i])}
            for i, d in enumerate(DIMENSION_NAMES)
        }

    def best(self, run: Run) -> dict | None:
        return run.metrics.get("best") if self.config.keep_best else None

    def after_final_save(self, run: Run) -> None:
        prune_frame_cache(self.config)

    def report(self, run: Run, elapsed: float) -> None:
        config, metrics, best = self.config, run.metrics, self.best(run)
        model_dir = run.output_dir / self.final_dir_name
        last = next(e for e in metrics["eval"] if e["step"] == best["step"]) if best else metrics["eval"][-1]
        chosen = (
            (
                f" (epoch {best['epoch']}, the "
                + ("best validation accuracy" if config.best_by == "accuracy" else "lowest validation loss")
                + ")"
            )
            if best
            else ""
        )
        summary = ", ".join(
            f"{d} {last[d]['accuracy_with_ties']:.3f}/{last[d]['accuracy_without_ties']:.3f}"
            for d in DIMENSION_NAMES
            if d in last
        )
        run.accelerator.print(
            f"reward-train: {run.state['step']} steps, val acc w/ ties / w/o ties: "
            f"{summary or 'no val pairs'}{chosen}; model in {model_dir}"
        )
        self.log.info("done: %d steps in %.0f s%s; model in %s", run.state["step"], elapsed, chosen, model_dir)


def train_reward_model(config: RewardTrainConfig, *, on_step: OnStep | None = None) -> dict:
    """Train (or resume) and return the final metrics (also written to ``metrics.json``).

    ``on_step(step, total_steps, loss)`` is called on the main process after every optimizer step (a
    Celery job reports its progress through it)."""
    check_config(config)
    return run_training(RewardMethod(for_this_machine(config)), on_step=on_step)
