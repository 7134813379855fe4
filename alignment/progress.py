"""Progress of a run in a small JSON file, for whoever launched it in another process.

A Celery worker never trains in its own process: it starts ``python -m alignment <command> … --progress-file F``
as a child (``accelerate launch`` for several GPUs) and reads ``F`` to show the job's progress, heartbeat and
loss curve. The trainer calls ``on_step`` on its main process after every optimizer step; a sampling run calls
``report`` with what it is doing. The run's events — the ``alignment`` loggers' records at INFO and above:
its start, each evaluation and checkpoint, its end — are kept in the same file (``log_handler``), so the
worker can log them as they happen, one line each, and not one line per step.

The file always holds ``step``, ``total``, ``loss``, ``text``, ``time``, ``train_loss`` (every step's loss so
far, ``[step, loss]``) and ``events`` (``{"time", "level", "name", "message"}``); it is replaced atomically,
so a reader never sees half of it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path


class ProgressFile:
    """The writer's side: one per run, in the process that trains (rank 0 under ``accelerate launch``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        self.state: dict = {
            "step": 0,
            "total": 0,
            "loss": None,
            "text": "",
            "time": time.time(),
            "train_loss": [],
            "events": [],
        }

    def on_step(self, step: int, total: int, loss: float) -> None:
        """After an optimizer step: the step, the total and the step's loss (added to the curve)."""
        self.state["train_loss"].append([step, round(float(loss), 6)])
        self.state.update(step=step, total=total, loss=float(loss), text=f"step {step} of {total}, loss {loss:.4f}")
        self._write()

    def report(self, done: int, total: int, text: str = "") -> None:
        """Progress of a run that is not a sequence of optimizer steps (sampling videos)."""
        self.state.update(step=done, total=total, text=text)
        self._write()

    def event(self, message: str, *, level: str = "INFO", name: str = "alignment") -> None:
        self.state["events"].append({"time": time.time(), "level": level, "name": name, "message": message})
        self._write()

    def log_handler(self, level: int = logging.INFO) -> logging.Handler:
        """A logging handler that adds every record (of this process only) as an event."""
        return _EventHandler(self, level)

    def _write(self) -> None:
        if os.getpid() != self.pid:  # a forked DataLoader worker's copy: the run's process owns the file
            return
        self.state["time"] = time.time()
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(self.state))
        os.replace(temp, self.path)


class _EventHandler(logging.Handler):
    def __init__(self, progress: ProgressFile, level: int):
        super().__init__(level)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if os.getpid() == self.progress.pid:
                self.progress.event(record.getMessage(), level=record.levelname, name=record.name)
        except Exception:  # a progress file that cannot be written must not stop the run
            self.handleError(record)


def progress_file_writer(path: str | Path) -> Callable[[int, int, float], None]:
    """An ``on_step(step, total, loss)`` that replaces ``path`` atomically with the latest step and every
    loss so far (a reader never sees half a file)."""
    return ProgressFile(path).on_step


def progress_file_read(path: str | Path) -> dict | None:
    """The latest progress, or None before the run wrote any."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
