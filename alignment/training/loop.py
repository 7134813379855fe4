"""The training loop every trainer runs (``run_training``) and the hooks a method fills in (``TrainingMethod``).

See the package docstring for what is shared and what is left to a method.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from alignment.checkpoints import (
    checkpoints,
    restore_training_state,
    write_checkpoint,
    write_folder_atomic,
    write_json_atomic,
)
from alignment.config import machine_defaults, save_config

log = logging.getLogger(__name__)
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"
LR_SCHEDULES = ("constant", "cosine")

OnStep = Callable[[int, int, float], None]


def learning_rate_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The multiplier of the base learning rate at ``step`` (0-based): a linear warmup, then constant
    or a cosine decay to 0 at ``total_steps`` — which makes the last epoch's small steps settle the
    model that is saved and evaluated, instead of leaving it wherever the last full-size step threw it."""
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    if schedule == "constant":
        return warmup
    progress = min(1.0, max(0, step - warmup_steps) / max(1, total_steps - warmup_steps))
    return warmup * 0.5 * (1.0 + math.cos(math.pi * progress))


def check_lr_schedule(config) -> None:
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule {config.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")


def micro_batch_size(batch_size: int, gradient_accumulation_steps: int, num_processes: int) -> int:
    """Items per process and forward pass: ``batch_size`` (items per optimizer step, over all processes) split
    over the processes and the accumulated micro-batches, which must divide it."""
    per_step = batch_size // (num_processes * gradient_accumulation_steps)
    if per_step < 1 or per_step * num_processes * gradient_accumulation_steps != batch_size:
        raise ValueError(
            f"batch_size {batch_size} must be a multiple of processes ({num_processes}) × "
            f"gradient_accumulation_steps ({gradient_accumulation_steps})"
        )
    return per_step


def step_generator(seed: int, step: int, micro: int, process: int) -> torch.Generator:
    """The generator of one micro-batch's random draws (σ, noise): the same on a resumed run. Evaluations
    pass ``step`` −1 and the batch's index, so every evaluation draws alike."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1009 + micro) * 131 + process)


def for_this_machine(config):
    """``config`` with ``mixed_precision: auto`` and ``gradient_checkpointing: None`` decided for this machine."""
    on_gpu = torch.cuda.is_available()
    return machine_defaults(config, cuda=on_gpu, bf16=on_gpu and torch.cuda.is_bf16_supported())


@dataclass
class Run:
    """What the loop knows of a run, handed to every hook. ``model``, ``optimizer`` and ``scheduler`` are the
    ``accelerator.prepare``d ones (``unwrapped``: the model itself); ``state`` (``step``, ``epoch``,
    ``batches_in_epoch``) and ``metrics`` are what a checkpoint saves and a resumed run restores."""

    config: Any
    accelerator: Any
    output_dir: Path
    micro_batch: int
    model: Any = None
    optimizer: Any = None
    scheduler: Any = None
    train_set: Any = None
    total_steps: int = 0
    state: dict = field(default_factory=lambda: {"step": 0, "epoch": 0, "batches_in_epoch": 0})
    metrics: dict = field(default_factory=dict)
    resumed_from: Path | None = None

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)


class TrainingMethod:
    """The part of a training run that varies: subclass it, set ``config`` (a trainer config dataclass with
    ``output_dir``, ``seed``, ``epochs``, ``batch_size``, ``gradient_accumulation_steps``, ``max_steps``,
    ``learning_rate``, ``weight_decay``, ``warmup_steps``, ``lr_schedule``, ``max_grad_norm``,
    ``save_every_steps``, ``keep_checkpoints``, ``num_workers``, ``progress``, ``mixed_precision`` and optionally
    ``eval_every_steps``) and fill in the hooks that raise ``NotImplementedError``; the others have defaults.
    Hooks run on every process unless they say otherwise."""

    name: str = "train"  # the progress bar's label
    log: logging.Logger = log  # the logger of the run's events (start, evaluations, checkpoints, end)
    final_dir_name = "final"  # output_dir/<this>: the run's artefact, written atomically at the end
    throughput_key = "train_samples_per_second"  # metrics key of the items a second (batch_items)
    evaluate_each_epoch = False  # also evaluate, then checkpoint, at the end of every epoch
    checkpoint_at_end = True  # checkpoint after the last evaluation (False where each epoch's end just did)
    checkpoint_log_epoch = False  # the checkpoint log line names the epoch too

    def __init__(self, config):
        self.config = config

    # ---- set-up ---------------------------------------------------------------------------------------

    def mixed_precision(self, on_gpu: bool) -> str:
        """The accelerator's mixed precision: ``config.mixed_precision``, float32 on a CPU."""
        return self.config.mixed_precision if on_gpu else "no"

    def on_start(self, run: Run) -> None:
        """Main process, once ``output_dir/train_config.json`` is written."""

    def setup(self, run: Run) -> tuple[torch.nn.Module, Dataset, Callable | None]:
        """Data and model: ``(model, train_set, collate_fn)``; the model in train mode, on the accelerator's device.
        Keep what the other hooks need (validation data, a frozen reference, …) on ``self``."""
        raise NotImplementedError

    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """AdamW over the parameters that require a gradient."""
        trainable = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=self.config.learning_rate, weight_decay=self.config.weight_decay)

    def clip_parameters(self, run: Run) -> Iterable[torch.Tensor]:
        """The parameters whose gradient norm ``max_grad_norm`` clips."""
        return run.model.parameters()

    def prepared(self, run: Run) -> None:
        """After ``accelerator.prepare`` of the model, optimizer and scheduler (before a resume)."""

    def initial_metrics(self, run: Run) -> dict:
        """The fields ``metrics`` starts with, before ``train_loss`` and ``eval``."""
        return {}

    def restore_weights(self, checkpoint: Path, run: Run) -> None:
        """Load the weights ``save_weights`` wrote into ``checkpoint`` into ``run.unwrapped``."""
        raise NotImplementedError

    def start_message(self, run: Run) -> str:
        """The run's first event (logged on the main process; the loop adds where it resumes from)."""
        return f"{self.name}: {run.total_steps} steps"

    # ---- a step ----------------------------------------------------------------------------------------

    def loss(self, run: Run, batch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch's loss (inside ``accelerator.accumulate``) and statistics to add up over the step's
        micro-batches. ``generator`` is seeded by (seed, step, micro-batch, process): the same draws on resume."""
        raise NotImplementedError

    def batch_items(self, batch) -> int:
        """Items (videos, pairs) in one process's micro-batch, for the throughput."""
        raise NotImplementedError

    def step_metrics(self, totals: dict[str, float], count: int) -> dict[str, float | None]:
        """A step's ``train_loss`` fields (``loss`` first) from the micro-batches' summed ``loss`` (already the
        mean over the processes) and statistics: by default the means over the ``count`` micro-batches."""
        return {key: value / count for key, value in totals.items()}

    # ---- evaluation and saving --------------------------------------------------------------------------

    def evaluate(self, run: Run) -> dict:
        """One evaluation (appended to ``metrics["eval"]``; must hold ``step``). Logs its own event."""
        raise NotImplementedError

    def after_epoch_evaluation(self, run: Run) -> None:
        """With ``evaluate_each_epoch``: after the epoch's evaluation, before its checkpoint."""

    def save_weights(self, folder: Path, run: Run) -> None:
        """The model part of a checkpoint (main process); the loop adds the optimizer, scheduler and state."""
        raise NotImplementedError

    def finish(self, run: Run) -> None:
        """After the last evaluation and checkpoint, before the final save (every process)."""

    def summary_fields(self, run: Run) -> dict:
        """Fields added to ``metrics`` after the throughput."""
        return {}

    def save_final(self, folder: Path, run: Run) -> None:
        """The run's artefact, into a fresh (temporary) ``folder`` (main process). By default: as a checkpoint's."""
        self.save_weights(folder, run)

    def after_final_save(self, run: Run) -> None:
        """Main process, after ``final_dir_name`` and ``metrics.json`` are written."""

    def report(self, run: Run, elapsed: float) -> None:
        """The run's summary (main process): by default one ``done`` event."""
        self.log.info(
            "done: %d steps in %.0f s; %s in %s",
            run.state["step"],
            elapsed,
            self.final_dir_name,
            run.output_dir / self.final_dir_name,
        )


def run_training(method: TrainingMethod, *, on_step: OnStep | None = None) -> dict:
    """Train (or resume from the newest checkpoint in ``output_dir``) as ``method`` says; write
    ``output_dir/train_config.json``, checkpoints, the final artefact (atomically) and ``metrics.json``;
    return the metrics. ``on_step(step, total_steps, loss)`` runs on the main process after every optimizer step."""
    run, collator = _start(method)
    _resume(method, run)
    seen, elapsed = _train(method, run, collator, on_step)
    return _finish(method, run, seen, elapsed)


def _start(method: TrainingMethod) -> tuple[Run, Callable | None]:
    """The accelerator, the seed, ``train_config.json``; the method's data and model, the optimizer and the
    learning-rate schedule, prepared."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    config = method.config
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=method.mixed_precision(torch.cuda.is_available()),
    )
    set_seed(config.seed)
    run = Run(
        config=config,
        accelerator=accelerator,
        output_dir=Path(config.output_dir),
        micro_batch=micro_batch_size(config.batch_size, config.gradient_accumulation_steps, accelerator.num_processes),
    )
    if accelerator.is_main_process:
        run.output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run.output_dir / TRAIN_CONFIG_FILE)
        method.on_start(run)

    model, run.train_set, collator = method.setup(run)
    optimizer = method.optimizer(model)
    run.total_steps = total_steps = math.ceil(len(run.train_set) / config.batch_size) * config.epochs
    if config.max_steps is not None:
        run.total_steps = total_steps = min(total_steps, config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: learning_rate_factor(
            step, warmup_steps=config.warmup_steps, total_steps=total_steps, schedule=config.lr_schedule
        ),
    )
    run.model, run.optimizer, run.scheduler = accelerator.prepare(model, optimizer, scheduler)
    method.prepared(run)
    run.metrics = {**method.initial_metrics(run), "train_loss": [], "eval": []}
    return run, collator


def _resume(method: TrainingMethod, run: Run) -> None:
    """Go on from the newest complete checkpoint, if any; log the run's start."""
    existing = checkpoints(run.output_dir)
    if existing:
        run.resumed_from = existing[-1]
        method.restore_weights(run.resumed_from, run)
        run.state = restore_training_state(run.resumed_from, optimizer=run.optimizer, scheduler=run.scheduler)
        run.metrics = run.state.pop("metrics")
        run.accelerator.print(
            f"resuming from {run.resumed_from} (step {run.state['step']}, epoch {run.state['epoch']})"
        )
    # The run's events are logged at INFO, one line each (a worker shows them): start, evaluations, checkpoints, end.
    if run.accelerator.is_main_process:
        method.log.info(
            "%s%s",
            method.start_message(run),
            f"; resuming from {run.resumed_from.name} (step {run.state['step']})" if run.resumed_from else "",
        )


def _finish(method: TrainingMethod, run: Run, seen: int, elapsed: float) -> dict:
    """A last evaluation (unless one is at the last step) and checkpoint; the artefact, atomically, and
    ``metrics.json``; the summary."""
    state, metrics, accelerator = run.state, run.metrics, run.accelerator
    if not metrics["eval"] or metrics["eval"][-1]["step"] != state["step"]:
        metrics["eval"].append(method.evaluate(run))
    if method.checkpoint_at_end:
        _checkpoint(method, run)
    accelerator.wait_for_everyone()
    method.finish(run)
    metrics[method.throughput_key] = seen / elapsed if elapsed > 0 and seen else None
    metrics.update(method.summary_fields(run))
    if accelerator.is_main_process:
        write_folder_atomic(run.output_dir / method.final_dir_name, lambda folder: method.save_final(folder, run))
        write_json_atomic(run.output_dir / METRICS_FILE, metrics)
        method.after_final_save(run)
        method.report(run, elapsed)
    return metrics


def _train(method: TrainingMethod, run: Run, collator, on_step: OnStep | None) -> tuple[int, float]:
    """The epochs and steps from ``run.state`` on: (items seen by all processes, seconds)."""
    config, accelerator, state, metrics = run.config, run.accelerator, run.state, run.metrics
    model, optimizer, scheduler, train_set = run.model, run.optimizer, run.scheduler, run.train_set
    model.train()
    progress = tqdm(
        total=run.total_steps,
        initial=state["step"],
        desc=method.name,
        disable=not (config.progress and accelerator.is_main_process),
    )
    start_time, seen, done = time.perf_counter(), 0, state["step"] >= run.total_steps
    while state["epoch"] < config.epochs and not done:
        sampler_generator = torch.Generator().manual_seed(config.seed + state["epoch"])  # same order when resumed
        loader = accelerator.prepare(
            DataLoader(
                train_set,
                batch_size=run.micro_batch,
                collate_fn=collator,
                sampler=RandomSampler(train_set, generator=sampler_generator),
                num_workers=config.num_workers,
            )
        )
        micro_batches_done = state["batches_in_epoch"] * config.gradient_accumulation_steps
        if micro_batches_done:
            loader = accelerator.skip_first_batches(loader, micro_batches_done)
        totals: dict[str, float] = {}
        count = 0
        for batch in loader:
            generator = step_generator(config.seed, state["step"], count, accelerator.process_index)
            with accelerator.accumulate(model):
                loss, stats = method.loss(run, batch, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(method.clip_parameters(run), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            for key, value in {"loss": accelerator.gather(loss.detach()).mean().item(), **stats}.items():
                totals[key] = totals.get(key, 0.0) + value
            count += 1
            seen += method.batch_items(batch) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            _step_done(method, run, method.step_metrics(totals, count), progress, on_step)
            totals, count = {}, 0
            if state["step"] >= run.total_steps:
                done = True
                break
        if not done or state["batches_in_epoch"] * config.batch_size >= len(train_set):
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
        if method.evaluate_each_epoch:
            metrics["eval"].append(method.evaluate(run))
            method.after_epoch_evaluation(run)
            _checkpoint(method, run)
    progress.close()
    return seen, time.perf_counter() - start_time


def _step_done(method: TrainingMethod, run: Run, means: dict, progress, on_step: OnStep | None) -> None:
    """After an optimizer step: count it, record it (``means``: the method's ``step_metrics``), report it, and
    evaluate and checkpoint when the cadence says so."""
    config, state = run.config, run.state
    state["step"] += 1
    state["batches_in_epoch"] += 1
    run.metrics["train_loss"].append(
        {"step": state["step"], "epoch": state["epoch"], **means, "lr": run.scheduler.get_last_lr()[0]}
    )
    progress.set_postfix(loss=f"{means['loss']:.4f}")
    progress.update(1)
    if on_step is not None and run.accelerator.is_main_process:
        on_step(state["step"], run.total_steps, means["loss"])
    eval_every_steps = getattr(config, "eval_every_steps", None)  # the reward trainer has none: it evaluates epochs
    if eval_every_steps and state["step"] % eval_every_steps == 0:
        run.metrics["eval"].append(method.evaluate(run))
    if config.save_every_steps and state["step"] % config.save_every_steps == 0:
        _checkpoint(method, run)


def _checkpoint(method: TrainingMethod, run: Run) -> None:
    """``output_dir/checkpoints/step-N/``: the method's weights, the optimizer, scheduler, state and metrics."""
    run.accelerator.wait_for_everyone()
    if run.accelerator.is_main_process:
        saved = write_checkpoint(
            run.output_dir,
            state={**run.state, "metrics": run.metrics},
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            keep=run.config.keep_checkpoints,
            save_weights=lambda folder: method.save_weights(folder, run),
        )
        if method.checkpoint_log_epoch:
            method.log.info(
                "checkpoint %s saved (step %d, epoch %d)", saved.name, run.state["step"], run.state["epoch"]
            )
        else:
            method.log.info("checkpoint %s saved (step %d)", saved.name, run.state["step"])
