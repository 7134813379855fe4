"""Training checkpoints shared by every trainer: ``output_dir/checkpoints/step-00000040/``, each written under
a temporary name and renamed, so a run killed mid-write leaves only complete checkpoints to resume from."""

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
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def write_json_atomic(path: Path, data) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temp, path)


def write_checkpoint(output_dir: Path, *, state: dict, optimizer, scheduler, keep: int,
                     save_weights: Callable[[Path], None]) -> Path:
    """``save_weights(folder)`` writes the model part; the optimizer, scheduler and ``state`` (the step and
    whatever the trainer needs to go on) are added, the folder renamed into place, old ones pruned."""
    import torch

    folder = Path(output_dir) / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{state['step']:08d}"
    temp = folder / f".{final.name}.{uuid.uuid4().hex}.tmp"
    save_weights(temp)
    torch.save(optimizer.state_dict(), temp / "optimizer.pt")
    torch.save(scheduler.state_dict(), temp / "scheduler.pt")
    (temp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.rename(temp, final)
    for old in checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def restore_training_state(checkpoint: Path, *, optimizer, scheduler) -> dict:
    """Load a checkpoint's optimizer and scheduler state; return its saved ``state`` (step, epoch, …)."""
    import torch

    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
    return json.loads((checkpoint / STATE_FILE).read_text())
