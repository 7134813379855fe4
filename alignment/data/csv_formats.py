"""Readers of the public CSV formats: VideoAlign training CSV and VideoGen-RewardBench."""

from __future__ import annotations

import csv
from pathlib import Path

from alignment.data.records import PairRecord
from alignment.labels import LABEL_MISSING, VIDEOALIGN_COLUMNS, VIDEOALIGN_LABELS

REWARDBENCH_COLUMNS = (
    "path_A",
    "path_B",
    "A_model",
    "B_model",
    "prompt",
    "VQ",
    "MQ",
    "TA",
    "Overall",
    "fps_A",
    "num_frames_A",
    "fps_B",
    "num_frames_B",
)


def _parse_label(value: str, *, where: str) -> int:
    text = value.strip()
    if not text:  # an unjudged dimension (our own exports write it empty)
        return LABEL_MISSING
    for name, label in VIDEOALIGN_LABELS.items():
        if text.lower() == name.lower():
            return label
    raise ValueError(f"{where}: label {value!r} is not one of A, B, same (or empty for unjudged)")


def _optional_float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _optional_int(value: str | None) -> int | None:
    return int(float(value)) if value not in (None, "") else None


def _resolve(path: str, video_root: Path) -> str:
    candidate = Path(path)
    return str(candidate if candidate.is_absolute() else (video_root / candidate).resolve())


def _read(
    path: str | Path,
    columns: tuple[str, ...],
    video_root: str | Path | None,
    with_models: bool,
    bad_rows: list[str] | None = None,
) -> list[PairRecord]:
    path = Path(path)
    root = Path(video_root) if video_root is not None else path.parent
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(columns) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}; expected {','.join(columns)}")
        records = []
        for line_number, row in enumerate(reader, start=2):
            where = f"{path}:{line_number}"
            try:
                record = PairRecord(
                    pair_id=line_number - 2,
                    prompt=row["prompt"],
                    video_a=_resolve(row["path_A"], root),
                    video_b=_resolve(row["path_B"], root),
                    vq=_parse_label(row["VQ"], where=where),
                    mq=_parse_label(row["MQ"], where=where),
                    ta=_parse_label(row["TA"], where=where),
                    overall=_parse_label(row["Overall"], where=where) if with_models else LABEL_MISSING,
                    split="test" if with_models else "train",
                    generator_a=row.get("A_model") if with_models else None,
                    generator_b=row.get("B_model") if with_models else None,
                    fps_a=_optional_float(row.get("fps_A")),
                    num_frames_a=_optional_int(row.get("num_frames_A")),
                    fps_b=_optional_float(row.get("fps_B")),
                    num_frames_b=_optional_int(row.get("num_frames_B")),
                )
            except (ValueError, TypeError) as error:
                if bad_rows is None:
                    raise
                bad_rows.append(str(error) if str(error).startswith(where) else f"{where}: {error}")
                continue
            records.append(record)
    return records


def read_videoalign_csv(
    path: str | Path, *, video_root: str | Path | None = None, bad_rows: list[str] | None = None
) -> list[PairRecord]:
    """Pairs from a VideoAlign training CSV; relative video paths are taken from ``video_root``
    (default: the CSV's folder) and returned absolute. Every row lands in the ``train`` split.
    A malformed row raises ``ValueError`` naming its line — or, with ``bad_rows`` given, is described
    there and skipped."""
    return _read(path, VIDEOALIGN_COLUMNS, video_root, with_models=False, bad_rows=bad_rows)


def read_rewardbench_csv(
    path: str | Path, *, video_root: str | Path | None = None, bad_rows: list[str] | None = None
) -> list[PairRecord]:
    """Pairs from a VideoGen-RewardBench CSV (with generator names and the Overall label), split ``test``."""
    return _read(path, REWARDBENCH_COLUMNS, video_root, with_models=True, bad_rows=bad_rows)
