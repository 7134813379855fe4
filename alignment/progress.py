"""Progress of a training run in a small JSON file, for whoever launched it in another process.

A Celery worker that runs a trainer under ``accelerate launch`` (all GPUs of its machine) reads this
file to show the job's progress and loss curve; the trainer calls the writer on its main process after
every optimizer step.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path


def progress_file_writer(path: str | Path) -> Callable[[int, int, float], None]:
    """An ``on_step(step, total, loss)`` that replaces ``path`` atomically with the latest step and every
    loss so far (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    curve: list[list[float]] = []

    def on_step(step: int, total: int, loss: float) -> None:
        curve.append([step, round(float(loss), 6)])
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({"step": step, "total": total, "loss": float(loss), "time": time.time(),
                                    "train_loss": curve}))
        os.replace(temp, path)

    return on_step


def progress_file_read(path: str | Path) -> dict | None:
    """The latest progress, or None before the first step."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
