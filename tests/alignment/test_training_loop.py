"""alignment.training: the one training loop, on a tiny linear-regression method (no video, no policy).

Resume after an interruption, the atomic final save, gradient accumulation, the eval/checkpoint cadence and
the progress file, each checked on the loop itself; the trainers' own tests check their methods.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from alignment.checkpoints import checkpoints
from alignment.progress import ProgressFile, progress_file_read
from alignment.training import Run, TrainingMethod, learning_rate_factor, run_training

N_TRAIN, N_VAL, FEATURES = 12, 4, 3


@dataclass
class TinyConfig:
    output_dir: str
    seed: int = 0
    epochs: int = 3
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_steps: int | None = None
    learning_rate: float = 0.1
    weight_decay: float = 0.0
    warmup_steps: int = 1
    lr_schedule: str = "cosine"
    max_grad_norm: float = 1.0
    eval_every_steps: int | None = None
    save_every_steps: int | None = None
    keep_checkpoints: int = 2
    num_workers: int = 0
    progress: bool = False
    mixed_precision: str = "no"
    noise: float = 0.5  # the target's noise, drawn from the step's generator


def regression_data(count: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, FEATURES, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    return [{"x": x[i], "y": y[i]} for i in range(count)]


class Stop(Exception):
    """An interruption: a killed worker, an out-of-memory error."""


class TinyMethod(TrainingMethod):
    """Least squares on a linear model; the target's noise comes from the step's generator, so a resumed run
    must draw it alike."""

    name = "tiny"
    log = logging.getLogger("alignment.tests.tiny")

    def __init__(self, config: TinyConfig, *, fail_final: bool = False):
        super().__init__(config)
        self.fail_final, self.loss_calls = fail_final, 0

    def setup(self, run: Run):
        self.val = regression_data(N_VAL, seed=1)
        return nn.Linear(FEATURES, 1), regression_data(N_TRAIN, seed=0), None

    def restore_weights(self, checkpoint: Path, run: Run) -> None:
        run.unwrapped.load_state_dict(torch.load(checkpoint / "weights.pt", weights_only=True))

    def start_message(self, run: Run) -> str:
        return f"tiny: {run.total_steps} steps"

    def loss(self, run: Run, batch, generator):
        self.loss_calls += 1
        target = batch["y"] + self.config.noise * torch.randn(batch["y"].shape, generator=generator)
        errors = run.model(batch["x"]).squeeze(-1) - target
        return errors.square().mean(), {"batch": float(batch["y"].shape[0])}

    def batch_items(self, batch) -> int:
        return batch["y"].shape[0]

    @torch.no_grad()
    def evaluate(self, run: Run) -> dict:
        x, y = torch.stack([item["x"] for item in self.val]), torch.stack([item["y"] for item in self.val])
        loss = float((run.model(x).squeeze(-1) - y).square().mean())
        self.log.info("evaluation at step %d: loss %.4f", run.state["step"], loss)
        return {"step": run.state["step"], "loss": loss}

    def save_weights(self, folder: Path, run: Run) -> None:
        torch.save(run.unwrapped.state_dict(), folder / "weights.pt")

    def save_final(self, folder: Path, run: Run) -> None:
        self.save_weights(folder, run)
        if self.fail_final:  # the disk filled up half-way through the artefact
            raise OSError("No space left on device")
        (folder / "info.json").write_text(json.dumps({"steps": run.state["step"]}))


def final_weights(config: TinyConfig) -> dict:
    return torch.load(Path(config.output_dir) / "final" / "weights.pt", weights_only=True)


def test_resume_after_an_interruption_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    straight = run_training(TinyMethod(TinyConfig(str(tmp_path / "a"), save_every_steps=2)))
    assert [entry["step"] for entry in straight["train_loss"]] == list(range(1, 10))

    config = TinyConfig(str(tmp_path / "b"), save_every_steps=2)

    def interrupt(step, total, loss):
        if step == 5:  # mid-epoch (3 steps an epoch): a resume must skip the epoch's first batch
            raise Stop

    with pytest.raises(Stop):
        run_training(TinyMethod(config), on_step=interrupt)
    run = Path(config.output_dir)
    assert [p.name for p in checkpoints(run)] == ["step-00000002", "step-00000004"]
    assert not (run / "final").exists() and not (run / "metrics.json").exists()

    resumed = run_training(TinyMethod(config))
    assert [entry["step"] for entry in resumed["train_loss"]] == list(range(1, 10))
    assert [entry["epoch"] for entry in resumed["train_loss"]] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [e["loss"] for e in resumed["train_loss"]] == pytest.approx(
        [e["loss"] for e in straight["train_loss"]], rel=1e-6
    )
    assert [e["lr"] for e in resumed["train_loss"]] == pytest.approx([e["lr"] for e in straight["train_loss"]])
    a, b = final_weights(TinyConfig(str(tmp_path / "a"))), final_weights(config)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    assert json.loads((run / "metrics.json").read_text())["train_loss"] == resumed["train_loss"]

    again = run_training(TinyMethod(config))  # a finished run resumed: nothing more to train, the same result
    assert again["train_loss"] == resumed["train_loss"]
    assert all(torch.equal(b[k], final_weights(config)[k]) for k in b)


def test_the_final_save_is_atomic(tmp_path):
    config = TinyConfig(str(tmp_path), max_steps=2)
    with pytest.raises(OSError, match="No space left"):
        run_training(TinyMethod(config, fail_final=True))
    assert not (tmp_path / "final").exists() and not (tmp_path / "metrics.json").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    assert [p.name for p in checkpoints(tmp_path)] == ["step-00000002"]  # the end's checkpoint, to resume from

    run_training(TinyMethod(config))  # resumes at the end and writes the artefact
    first = final_weights(config)
    assert json.loads((tmp_path / "final" / "info.json").read_text()) == {"steps": 2}

    config.max_steps = 4
    with pytest.raises(OSError):
        run_training(TinyMethod(config, fail_final=True))
    # the earlier artefact is whole and untouched: the new one would have replaced it only once complete
    assert json.loads((tmp_path / "final" / "info.json").read_text()) == {"steps": 2}
    assert all(torch.equal(first[k], final_weights(config)[k]) for k in first)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_gradient_accumulation_counts_optimizer_steps_and_matches_the_whole_batch(tmp_path):
    whole = TinyMethod(TinyConfig(str(tmp_path / "whole"), noise=0.0))
    metrics = run_training(whole)
    accumulated = TinyMethod(TinyConfig(str(tmp_path / "acc"), noise=0.0, gradient_accumulation_steps=2))
    accumulated_metrics = run_training(accumulated)

    steps = 3 * 3  # ceil(12 items / 4 a step) × 3 epochs
    assert len(accumulated_metrics["train_loss"]) == len(metrics["train_loss"]) == steps
    assert (whole.loss_calls, accumulated.loss_calls) == (steps, 2 * steps)  # 2 micro-batches of 2 a step
    assert [e["batch"] for e in accumulated_metrics["train_loss"]] == [2.0] * steps  # a micro-batch's mean
    factors = [
        learning_rate_factor(k, warmup_steps=1, total_steps=steps, schedule="cosine") for k in range(1, steps + 1)
    ]
    assert [e["lr"] for e in accumulated_metrics["train_loss"]] == pytest.approx([0.1 * f for f in factors])
    state = torch.load(checkpoints(tmp_path / "acc")[-1] / "optimizer.pt", weights_only=True)["state"]
    assert all(int(s["step"]) == steps for s in state.values())  # the optimizer stepped once a step
    a, b = final_weights(whole.config), final_weights(accumulated.config)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # the same order and the same mean gradient
    assert accumulated_metrics["train_samples_per_second"] > 0

    with pytest.raises(
        ValueError,
        match=r"batch_size 6 must be a multiple of processes \(1\) × "
        r"gradient_accumulation_steps \(4\)",
    ):
        run_training(TinyMethod(TinyConfig(str(tmp_path / "bad"), batch_size=6, gradient_accumulation_steps=4)))


def test_evaluation_and_checkpoint_cadence(tmp_path):
    metrics = run_training(
        TinyMethod(
            TinyConfig(str(tmp_path / "steps"), max_steps=5, eval_every_steps=2, save_every_steps=2, keep_checkpoints=2)
        )
    )
    assert [e["step"] for e in metrics["eval"]] == [2, 4, 5]  # every 2 steps, and at the end
    assert [p.name for p in checkpoints(tmp_path / "steps")] == ["step-00000004", "step-00000005"]
    assert not [p for p in (tmp_path / "steps" / "checkpoints").iterdir() if p.name.startswith(".")]

    class EachEpoch(TinyMethod):
        evaluate_each_epoch, checkpoint_at_end = True, False

    metrics = run_training(EachEpoch(TinyConfig(str(tmp_path / "epochs"), epochs=2, keep_checkpoints=5)))
    assert [e["step"] for e in metrics["eval"]] == [3, 6]
    assert [p.name for p in checkpoints(tmp_path / "epochs")] == ["step-00000003", "step-00000006"]
    state = json.loads((checkpoints(tmp_path / "epochs")[-1] / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"], state["batches_in_epoch"]) == (6, 2, 0)
    assert [e["step"] for e in state["metrics"]["eval"]] == [3, 6]


def test_progress_file_follows_every_step_and_keeps_the_events(tmp_path):
    progress = ProgressFile(tmp_path / "progress.json")
    handler = progress.log_handler()
    TinyMethod.log.addHandler(handler)
    TinyMethod.log.setLevel(logging.INFO)
    seen = []

    def on_step(step, total, loss):
        progress.on_step(step, total, loss)
        seen.append(progress_file_read(tmp_path / "progress.json")["step"])  # the file as a worker reads it

    try:
        metrics = run_training(
            TinyMethod(TinyConfig(str(tmp_path / "run"), max_steps=4, save_every_steps=2, eval_every_steps=2)),
            on_step=on_step,
        )
    finally:
        TinyMethod.log.removeHandler(handler)
    assert seen == [1, 2, 3, 4]
    state = progress_file_read(tmp_path / "progress.json")
    assert (state["step"], state["total"]) == (4, 4) and state["text"].startswith("step 4 of 4, loss ")
    assert state["train_loss"] == [[e["step"], round(e["loss"], 6)] for e in metrics["train_loss"]]
    messages = [event["message"] for event in state["events"]]
    assert messages[0] == "tiny: 4 steps"
    assert [message.split(": loss")[0] for message in messages[1:5]] == [
        "evaluation at step 2",
        "checkpoint step-00000002 saved (step 2)",
        "evaluation at step 4",
        "checkpoint step-00000004 saved (step 4)",
    ]
    assert set(messages[5:-1]) <= {"checkpoint step-00000004 saved (step 4)"}  # the end's checkpoint
    assert messages[-1].startswith("done: 4 steps in ") and messages[-1].endswith(str(tmp_path / "run" / "final"))
    assert all(event["name"] == "alignment.tests.tiny" for event in state["events"])
