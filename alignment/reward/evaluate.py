"""Evaluating and scoring a trained reward model: pairs (snapshot, CSVs) and single videos."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from alignment.data import PairRecord, read_rewardbench_csv, read_snapshot, read_videoalign_csv
from alignment.data.video import FrameSpec, read_video_frames, resolve_video_path
from alignment.labels import DIMENSION_NAMES
from alignment.losses import LABEL_MISSING
from alignment.metrics import accuracy_table
from alignment.reward.model import RewardModel


class VideoPromptDataset(Dataset):
    """Single (video, prompt) items → ``{"video", "prompt"}`` with uint8 frames."""

    def __init__(
        self,
        items: Sequence[tuple[str, str]],
        spec: FrameSpec,
        roots: Sequence[str | Path] = (),
        reader: Callable[[Path], torch.Tensor] | None = None,
    ):
        self.items, self.spec, self.roots = list(items), spec, [Path(r) for r in roots]
        self.reader = reader  # a model's own frame sampling (VideoAlign checkpoints); None: read_video_frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        uri, prompt = self.items[index]
        path = resolve_video_path(uri, self.roots)
        if self.reader is not None:
            return {"video": self.reader(path), "prompt": prompt}
        frames, _ = read_video_frames(path, self.spec)
        return {"video": frames, "prompt": prompt}


@dataclass
class _VideoCollator:
    processor: Callable[[list, list[str]], dict]

    def __call__(self, items: list[dict]) -> dict:
        return self.processor([item["video"] for item in items], [item["prompt"] for item in items])


@torch.no_grad()
def score_videos(
    model: RewardModel,
    items: Sequence[tuple[str, str]],
    *,
    roots: Sequence[str | Path] = (),
    batch_size: int = 8,
    num_workers: int = 0,
    normalize: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """Rewards ``(N, 3)`` (VQ, MQ, TA) of N (video, prompt) items, normalised with the model's val statistics."""
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(
        VideoPromptDataset(items, model.frame_spec, roots, getattr(model, "read_video", None)),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_VideoCollator(model.processor()),
    )
    rewards = []
    for inputs in tqdm(loader, desc="score", disable=not progress, leave=False):
        inputs = {key: value.to(device) for key, value in inputs.items()}
        batch_rewards = model(**inputs).float()
        rewards.append(model.normalize(batch_rewards) if normalize else batch_rewards)
    return torch.cat(rewards).cpu() if rewards else torch.zeros(0, len(DIMENSION_NAMES))


def load_eval_pairs(
    *,
    snapshot: str | None = None,
    split: str = "test",
    rewardbench_csv: str | None = None,
    videoalign_csv: str | None = None,
    video_root: str | None = None,
) -> tuple[list[PairRecord], list[Path]]:
    """Pairs and the roots to find their videos, from exactly one source."""
    if sum(x is not None for x in (snapshot, rewardbench_csv, videoalign_csv)) != 1:
        raise ValueError("give exactly one of --snapshot, --rewardbench-csv, --videoalign-csv")
    roots = [Path(video_root)] if video_root else []
    if snapshot:
        loaded = read_snapshot(snapshot)
        return loaded.split(split), [loaded.root, *roots]
    if rewardbench_csv:
        return read_rewardbench_csv(rewardbench_csv, video_root=video_root), roots
    return read_videoalign_csv(videoalign_csv, video_root=video_root), roots


def evaluate_pairs(
    model: RewardModel,
    pairs: Sequence[PairRecord],
    *,
    roots: Sequence[str | Path] = (),
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
) -> dict:
    """Accuracy table per dimension and overall. Each distinct (video, prompt) is scored once.

    Overall: the RewardBench ``Overall`` label against the sum of normalised VQ + MQ + TA when the
    pairs carry it; otherwise every (pair, dimension) judgment pooled.
    """
    keys = sorted({(pair.video_a, pair.prompt) for pair in pairs} | {(pair.video_b, pair.prompt) for pair in pairs})
    rewards = score_videos(model, keys, roots=roots, batch_size=batch_size, num_workers=num_workers, progress=progress)
    row_of = {key: index for index, key in enumerate(keys)}
    rewards_a = rewards[[row_of[(p.video_a, p.prompt)] for p in pairs]]
    rewards_b = rewards[[row_of[(p.video_b, p.prompt)] for p in pairs]]
    margins = rewards_a - rewards_b  # (N, 3)
    labels = torch.tensor([p.labels for p in pairs], dtype=torch.long).reshape(-1, 3)
    table = accuracy_table(
        {d: labels[:, i] for i, d in enumerate(DIMENSION_NAMES)},
        {d: margins[:, i] for i, d in enumerate(DIMENSION_NAMES)},
    )
    overall_labels = torch.tensor([p.overall for p in pairs], dtype=torch.long)
    if (overall_labels != LABEL_MISSING).any():
        table["Overall"] = accuracy_table({"Overall": overall_labels}, {"Overall": margins.sum(1)})["Overall"]
    else:
        table["Pooled"] = accuracy_table({"Pooled": labels.flatten()}, {"Pooled": margins.flatten()})["Pooled"]
    return table


def format_table(table: dict) -> str:
    lines = [f"{'dimension':<10} {'acc w/ ties':>12} {'acc w/o ties':>13} {'epsilon':>9} {'pairs':>7} {'ties':>6}"]
    for name, row in table.items():
        lines.append(
            f"{name:<10} {100 * row['accuracy_with_ties']:>12.2f} {100 * row['accuracy_without_ties']:>13.2f} "
            f"{row['epsilon']:>9.4f} {row['n_pairs']:>7d} {row['n_ties']:>6d}"
        )
    return "\n".join(lines)
