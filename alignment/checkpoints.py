"""Training checkpoints shared by every trainer: ``output_dir/checkpoints/step-00000040/``, each written under
a temporary name and renamed, so a run killed mid-write leaves only complete checkpoints to resume from.
``write_folder_atomic`` does the same for a run's final artefact (``final/``, ``model/``)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.json"


def checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def write_json_atomic(path: Path, data) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temp, path)


def write_folder_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(folder)`` fills a new hidden temporary folder beside ``path``, which then replaces ``path``: nobody
    ever sees a half-written ``path``, and a ``write`` that raises leaves ``path`` as it was and no temporary folder
    behind (a killed process may leave a hidden ``.NAME.*.tmp``, which nothing reads)."""
    path = Path(path)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        temp.mkdir(parents=True)
        write(temp)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.rename(temp, path)
    return path


def write_checkpoint(
    output_dir: Path, *, state: dict, optimizer, scheduler, keep: int, save_weights: Callable[[Path], object]
) -> Path:
    """``save_weights(folder)`` writes the model part; the optimizer, scheduler and ``state`` (the step and
    whatever the trainer needs to go on) are added, the folder renamed into place, old ones pruned."""
    import torch

    def write(folder: Path) -> None:
        save_weights(folder)
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
        (folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    final = write_folder_atomic(Path(output_dir) / "checkpoints" / f"{CHECKPOINT_PREFIX}{state['step']:08d}", write)
    for old in checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def restore_training_state(checkpoint: Path, *, optimizer, scheduler) -> dict:
    """Load a checkpoint's optimizer and scheduler state; return its saved ``state`` (step, epoch, …)."""
    import torch

    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
    return json.loads((checkpoint / STATE_FILE).read_text())
