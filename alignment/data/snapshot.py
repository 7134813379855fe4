"""Snapshots (DESIGN §5): the files the web app exports and training reads.

``snapshots/<id>/`` holds ``pairs.parquet`` (one row per pair), optionally ``judgments.parquet``,
``videoalign.csv`` (the same pairs for the public VideoAlign trainer), any bundled videos, and
``manifest.json`` with the sha256 of every other file. A snapshot is written to a hidden temporary
folder next to its final name and renamed when complete, so readers never see a partial one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from alignment.data.records import CSV_LABELS, PairRecord
from alignment.losses import LABEL_MISSING

SCHEMA_VERSION = 1
PAIRS_FILE = "pairs.parquet"
JUDGMENTS_FILE = "judgments.parquet"
VIDEOALIGN_FILE = "videoalign.csv"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val", "test")

PAIRS_SCHEMA = pa.schema(
    [
        ("pair_id", pa.int64()),
        ("prompt", pa.string()),
        ("video_a", pa.string()),
        ("video_b", pa.string()),
        ("generator_a", pa.string()),
        ("generator_b", pa.string()),
        ("fps_a", pa.float64()),
        ("num_frames_a", pa.int32()),
        ("fps_b", pa.float64()),
        ("num_frames_b", pa.int32()),
        ("vq", pa.int8()),
        ("mq", pa.int8()),
        ("ta", pa.int8()),
        ("n_judgments", pa.int32()),
        ("agreement_vq", pa.float32()),
        ("agreement_mq", pa.float32()),
        ("agreement_ta", pa.float32()),
        ("split", pa.string()),
    ]
)


class SnapshotError(RuntimeError):
    """A snapshot folder is missing a file, fails its checksum, or is malformed."""


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def split_for_prompt(prompt: str, *, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """Deterministic train/val/test split by prompt text: the same prompt always lands in the same split."""
    bucket = int.from_bytes(hashlib.sha256(prompt.strip().encode("utf-8")).digest()[:8], "big") / 2**64
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + val_fraction:
        return "val"
    return "train"


@dataclass
class Snapshot:
    root: Path
    manifest: dict
    pairs: list[PairRecord]

    def split(self, name: str | None) -> list[PairRecord]:
        """The pairs of one split (``None`` or ``"all"``: every pair)."""
        if name in (None, "all"):
            return list(self.pairs)
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS} or 'all'")
        return [pair for pair in self.pairs if pair.split == name]


def _label_to_csv(label: int) -> str:
    return {value: key for key, value in CSV_LABELS.items()}.get(label, "")


def write_videoalign_csv(pairs: Iterable[PairRecord], path: str | Path) -> None:
    """The pairs in VideoAlign's training CSV (labels A / B / same; an unjudged dimension is empty)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path_A", "path_B", "prompt", "VQ", "MQ", "TA", "fps_A", "num_frames_A", "fps_B", "num_frames_B"])
        for pair in pairs:
            writer.writerow(
                [pair.video_a, pair.video_b, pair.prompt, _label_to_csv(pair.vq), _label_to_csv(pair.mq),
                 _label_to_csv(pair.ta), pair.fps_a if pair.fps_a is not None else "",
                 pair.num_frames_a if pair.num_frames_a is not None else "",
                 pair.fps_b if pair.fps_b is not None else "", pair.num_frames_b if pair.num_frames_b is not None else ""]
            )


def _pairs_table(pairs: list[PairRecord]) -> pa.Table:
    columns = {name: [] for name in PAIRS_SCHEMA.names}
    for pair in pairs:
        row = pair.as_row()
        for name in PAIRS_SCHEMA.names:
            value = row[name]
            if name in ("vq", "mq", "ta") and value == LABEL_MISSING:
                value = None
            columns[name].append(value)
    return pa.Table.from_pydict(columns, schema=PAIRS_SCHEMA)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_snapshot(
    pairs_rows: Iterable[Mapping | PairRecord],
    out_dir: str | Path,
    *,
    judgments_rows: Iterable[Mapping] | None = None,
    videos: Mapping[str, str | Path] | None = None,
    filters: Mapping | None = None,
    agreement: Mapping | None = None,
) -> Path:
    """Write a complete snapshot to ``out_dir`` atomically and return its path.

    ``pairs_rows``: mappings with the columns of ``PAIRS_SCHEMA`` (labels int 1/0/−1 or None);
    a row without ``split`` is split by prompt with ``split_for_prompt``. ``videos`` maps a path
    inside the snapshot (e.g. ``videos/12.mp4``, what the rows' ``video_a``/``video_b`` say) to a
    source file to copy in. ``out_dir`` must not exist yet: snapshots are immutable.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir}: a snapshot already exists there; snapshots are immutable, pick a new id")
    pairs = []
    for row in pairs_rows:
        pair = PairRecord.from_row(row)
        if not isinstance(row, PairRecord) and "split" not in row:
            pair.split = split_for_prompt(pair.prompt)
        if pair.split not in SPLITS:
            raise ValueError(f"pair {pair.pair_id}: split {pair.split!r} is not one of {SPLITS}")
        pairs.append(pair)
    ids = [pair.pair_id for pair in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError("pair_id values repeat; every pair must appear once")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex}"
    temp_dir.mkdir()
    try:
        pq.write_table(_pairs_table(pairs), temp_dir / PAIRS_FILE)
        written = [PAIRS_FILE]
        n_judgments = None
        if judgments_rows is not None:
            judgments = list(judgments_rows)
            n_judgments = len(judgments)
            pq.write_table(pa.Table.from_pylist(judgments), temp_dir / JUDGMENTS_FILE)
            written.append(JUDGMENTS_FILE)
        write_videoalign_csv(pairs, temp_dir / VIDEOALIGN_FILE)
        written.append(VIDEOALIGN_FILE)
        for inner_path, source in (videos or {}).items():
            target = temp_dir / inner_path
            if Path(inner_path).is_absolute() or ".." in Path(inner_path).parts:
                raise ValueError(f"{inner_path}: bundled video paths must be relative and stay inside the snapshot")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            written.append(Path(inner_path).as_posix())
        files = {}
        for name in written:
            _fsync_file(temp_dir / name)
            files[name] = {"sha256": sha256_file(temp_dir / name), "bytes": (temp_dir / name).stat().st_size}
        counts = {"pairs": len(pairs), **{split: sum(p.split == split for p in pairs) for split in SPLITS}}
        if n_judgments is not None:
            counts["judgments"] = n_judgments
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "filters": dict(filters or {}),
            "counts": counts,
            "agreement": dict(agreement or {}),
            "files": files,
        }
        with open(temp_dir / MANIFEST_FILE, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temp_dir, out_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return out_dir


def read_snapshot(folder: str | Path, *, verify: bool = True) -> Snapshot:
    """Read a snapshot folder; with ``verify`` check every file listed in the manifest against its sha256."""
    root = Path(folder)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise SnapshotError(f"{manifest_path}: missing; {root} is not a complete snapshot")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SnapshotError(f"{manifest_path}: not valid JSON ({error})") from error
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise SnapshotError(
            f"{manifest_path}: schema_version {manifest.get('schema_version')!r}, this reader knows {SCHEMA_VERSION}"
        )
    files = manifest.get("files", {})
    if PAIRS_FILE not in files:
        raise SnapshotError(f"{manifest_path}: does not list {PAIRS_FILE}")
    if verify:
        for name, entry in files.items():
            path = root / name
            if not path.is_file():
                raise SnapshotError(f"{path}: listed in the manifest but missing")
            actual = sha256_file(path)
            if actual != entry["sha256"]:
                raise SnapshotError(
                    f"{path}: sha256 {actual[:12]}… does not match the manifest's {entry['sha256'][:12]}…; "
                    "the snapshot is corrupt or was modified — export a new one"
                )
    try:
        table = pq.read_table(root / PAIRS_FILE)
    except (OSError, pa.ArrowInvalid) as error:
        raise SnapshotError(f"{root / PAIRS_FILE}: cannot read ({error})") from error
    missing = {"pair_id", "prompt", "video_a", "video_b", "vq", "mq", "ta", "split"} - set(table.column_names)
    if missing:
        raise SnapshotError(f"{root / PAIRS_FILE}: missing columns {sorted(missing)}")
    pairs = [PairRecord.from_row(row) for row in table.to_pylist()]
    return Snapshot(root=root, manifest=manifest, pairs=pairs)
