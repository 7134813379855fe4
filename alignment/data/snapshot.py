"""Snapshots (docs/architecture.md §5): the files the web app exports and training reads.

``snapshots/<id>/`` holds ``pairs.parquet`` (one row per pair), optionally ``judgments.parquet``, any bundled
videos, ``manifest.json`` with the sha256 of every other file and — when the videos are bundled — the same pairs
for KwaiVGI/VideoAlign's trainer: ``videoalign.csv`` (the train split only), ``videoalign-val.csv`` and
``videoalign-test.csv``, with paths relative to the snapshot folder (VideoAlign opens
``file://{data_dir}/{path}``, so ``--data_dir`` is the snapshot folder) and ``fps``/``num_frames`` always
filled. Without bundled videos the paths are absolute or ``s3://`` URIs VideoAlign cannot open: those CSVs are
not written and ``manifest["videoalign"]["reason"]`` says why. A snapshot is written by ``SnapshotWriter``
into a hidden temporary folder next to its final name and renamed when complete, so readers never see
a partial one; a writer that was killed leaves only its hidden folder, which ``sweep_partial_snapshots``
removes once its process is gone.

This module needs pyarrow, not torch: the web app's export imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from alignment.data.records import PairRecord
from alignment.labels import (
    DIMENSIONS,
    LABEL_A_BETTER,
    LABEL_B_BETTER,
    LABEL_MISSING,
    LABEL_TIE,
    SCORE_KEYS,
    VIDEOALIGN_COLUMNS,
)

SCHEMA_VERSION = 1
PAIRS_FILE = "pairs.parquet"
JUDGMENTS_FILE = "judgments.parquet"
VIDEOALIGN_FILE = "videoalign.csv"
VIDEOALIGN_FILES = {"train": VIDEOALIGN_FILE, "val": "videoalign-val.csv", "test": "videoalign-test.csv"}
"""VideoAlign's trainer reads one CSV and trains on every row: each split has its own file, the train split the
plain name, so a held-out pair never reaches VideoAlign's training."""
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val", "test")
PARTIAL_MARK = ".partial-"
OWNER_FILE = ".owner.json"

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
        ("vq", pa.int8()),  # 1 = A better, 0 = tie, -1 = B better, null = not judged
        ("mq", pa.int8()),
        ("ta", pa.int8()),
        ("overall", pa.int8()),  # RewardBench's Overall label; null in exports of our own judgments
        ("n_judgments", pa.int32()),
        ("agreement_vq", pa.float32()),  # share of the pair's judgments that back its label
        ("agreement_mq", pa.float32()),
        ("agreement_ta", pa.float32()),
        ("split", pa.string()),
    ]
)

JUDGMENTS_SCHEMA = pa.schema(
    [
        ("judgment_id", pa.int64()),
        ("pair_id", pa.int64()),
        ("annotator_id", pa.int64()),
        ("vq", pa.int8()),
        ("mq", pa.int8()),
        ("ta", pa.int8()),
        ("left_is_a", pa.bool_()),  # A was shown on the left (position bias can be measured)
        ("duration_ms", pa.int32()),
        ("watched_ms", pa.int32()),
        ("flag", pa.string()),
        ("comment", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""The judgments the web app exports; a snapshot written by other code (the toy world) may hold other columns."""


class SnapshotError(RuntimeError):
    """A snapshot folder is missing a file, fails its checksum, or is malformed."""


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def split_for_prompt(prompt: str, *, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """Deterministic train/val/test split by prompt text: the same prompt always lands in the same split.

    The bucket is the first 8 bytes of the sha256 of the prompt's UTF-8 text, read as an unsigned
    integer over 2⁶⁴ — the web app computes the same value in SQL from ``Prompt.text_sha256``.
    """
    return split_for_sha256(
        hashlib.sha256(prompt.encode("utf-8")).hexdigest(), val_fraction=val_fraction, test_fraction=test_fraction
    )


def split_for_sha256(hex_digest: str, *, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    bucket = int(hex_digest[:16], 16) / 2**64
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


def _videoalign_batch(pairs: pa.RecordBatch) -> pa.RecordBatch:
    """Pairs (``PAIRS_SCHEMA``) → the VideoAlign CSV's columns, labels as ``A`` / ``B`` / ``same`` / empty (null)."""

    def label_text(column: pa.Array) -> pa.Array:
        return pc.if_else(
            pc.equal(column, LABEL_A_BETTER),
            "A",
            pc.if_else(pc.equal(column, LABEL_B_BETTER), "B", pc.if_else(pc.equal(column, LABEL_TIE), "same", None)),
        )

    names = dict(zip(pairs.schema.names, pairs.columns))
    columns = [
        names["video_a"],
        names["video_b"],
        names["prompt"],
        label_text(names["vq"]),
        label_text(names["mq"]),
        label_text(names["ta"]),
        names["fps_a"],
        names["num_frames_a"],
        names["fps_b"],
        names["num_frames_b"],
    ]
    return pa.RecordBatch.from_arrays(columns, names=list(VIDEOALIGN_COLUMNS))


def videoalign_path_problem(path: str | None, root: Path) -> str | None:
    """Why VideoAlign's loader could not open ``path`` from ``--data_dir root`` (None: it can): it must be
    relative, stay inside ``root`` and name a file there."""
    if not path:
        return "no path"
    if "://" in path or path.startswith("file:"):
        return f"{path} is a URI"
    if Path(path).is_absolute():
        return f"{path} is absolute"
    if ".." in Path(path).parts:
        return f"{path} leaves the snapshot folder"
    if not (root / path).is_file():
        return f"{path} is not in the snapshot (videos not bundled)"
    return None


def probe_fps_and_frames(path: str | Path) -> tuple[float, int]:
    """A video file's frame rate and frame count, read by PyAV from the container (decoding only where the
    container does not say). Raises ``ValueError`` naming the file when it has no readable video stream."""
    import av

    from alignment.data.video import VideoDecodeError, opened_video

    try:
        with opened_video(path) as (container, stream):
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            frames = stream.frames or sum(1 for _ in container.decode(stream))
    except (VideoDecodeError, av.error.FFmpegError) as error:
        raise ValueError(f"{path}: not a readable video ({error})") from error
    if not rate or not frames:
        raise ValueError(f"{path}: the container gives no frame rate or no frames")
    return float(rate), int(frames)


def write_videoalign_files(root: Path, *, batch_rows: int = 65_536) -> dict:
    """Write VideoAlign's CSVs (``VIDEOALIGN_FILES``, one per split) from ``root/pairs.parquet``, every path
    relative to ``root`` and ``fps``/``num_frames`` filled (read from the video where the pair lacks them).
    Returns what the manifest records: ``{"files": [...], "data_dir": ".", "splits": {...}}`` or, when a path
    cannot be opened the way VideoAlign joins it (``file://{data_dir}/{path}``) or a video cannot be read,
    ``{"files": [], "reason": ...}`` with nothing written."""
    handles = {split: open(root / name, "wb") for split, name in VIDEOALIGN_FILES.items()}
    try:
        for handle in handles.values():
            handle.write((",".join(VIDEOALIGN_COLUMNS) + "\n").encode())  # pyarrow would quote each header name
        reason = _write_videoalign_rows(root, handles, batch_rows)
    finally:
        for handle in handles.values():
            handle.close()
    if reason is not None:
        for name in VIDEOALIGN_FILES.values():
            (root / name).unlink(missing_ok=True)
        return {"files": [], "reason": reason}
    return {"files": list(VIDEOALIGN_FILES.values()), "data_dir": ".", "splits": dict(VIDEOALIGN_FILES)}


def _write_videoalign_rows(root: Path, handles: dict, batch_rows: int) -> str | None:
    """Stream ``root/pairs.parquet`` into the split's open CSV ``handles``; the reason it cannot, or None."""
    probed: dict[str, tuple[float, int]] = {}
    checked: set[str] = set()  # a video shared by many pairs is looked at once
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    for batch in pq.ParquetFile(root / PAIRS_FILE).iter_batches(batch_size=batch_rows):
        columns = dict(zip(batch.schema.names, batch.columns))
        pair_ids = columns["pair_id"].to_pylist()
        filled = {}
        for side in ("a", "b"):
            paths = columns[f"video_{side}"].to_pylist()
            fps, frames = columns[f"fps_{side}"].to_pylist(), columns[f"num_frames_{side}"].to_pylist()
            for i, path in enumerate(paths):
                if path not in checked:
                    problem = videoalign_path_problem(path, root)
                    if problem is not None:
                        return f"pair {pair_ids[i]}: {problem}; export with the videos bundled to get VideoAlign's CSVs"
                    checked.add(path)
                if not fps[i] or not frames[i] or fps[i] <= 0 or frames[i] <= 0:
                    if path not in probed:
                        try:
                            probed[path] = probe_fps_and_frames(root / path)
                        except ValueError as error:
                            return f"pair {pair_ids[i]}: {error}"
                    fps[i], frames[i] = probed[path]
            filled[f"fps_{side}"] = pa.array(fps, columns[f"fps_{side}"].type)
            filled[f"num_frames_{side}"] = pa.array(frames, columns[f"num_frames_{side}"].type)
        batch = pa.RecordBatch.from_arrays(
            [filled.get(name, column) for name, column in columns.items()], names=batch.schema.names
        )
        for split, handle in handles.items():
            part = batch.filter(pc.equal(batch.column("split"), split))
            if part.num_rows:
                pacsv.write_csv(_videoalign_batch(part), handle, write_options=options)
    return None


def csv_record_batches(
    chunks: Iterable[bytes], schema: pa.Schema, *, block_bytes: int = 4 << 20
) -> Iterator[pa.RecordBatch]:
    """Stream a headered CSV (e.g. PostgreSQL's ``COPY … TO STDOUT (FORMAT csv, HEADER)``) as record batches
    of ``schema`` without holding it whole. An unquoted empty field is null, a quoted one an empty string;
    ``t``/``f`` are booleans."""
    reader = pacsv.open_csv(
        _ChunkReader(chunks),
        read_options=pacsv.ReadOptions(block_size=block_bytes),
        convert_options=pacsv.ConvertOptions(
            column_types=schema,
            include_columns=schema.names,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t", "true"],
            false_values=["f", "false"],
            timestamp_parsers=[pacsv.ISO8601],
        ),
    )
    for batch in reader:
        yield batch.cast(schema) if batch.schema != schema else batch


class _ChunkReader:
    """A file-like ``read(n)`` over an iterator of byte chunks (COPY yields one per row: they are joined
    into blocks here, so pyarrow's reader calls into Python once per block, not once per row)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._pending = b""
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        parts, have = [self._pending], len(self._pending)
        while size < 0 or have < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if size < 0:
            self._pending = b""
            return data
        self._pending = data[size:]
        return data[:size]

    def close(self) -> None:
        self.closed = True


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_partial_snapshots(parent: str | Path, *, other_host_after_s: float = 24 * 3600) -> list[Path]:
    """Remove the hidden folders of snapshot writers that died (killed, machine lost) under ``parent``.

    A folder whose writer ran on this host is removed once that process is gone; one written from
    another host (a shared volume) once it is older than ``other_host_after_s``. Returns what was removed.
    """
    parent = Path(parent)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for folder in parent.iterdir():
        if not (folder.is_dir() and folder.name.startswith(".") and PARTIAL_MARK in folder.name):
            continue
        try:
            owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            owner = {}
        if owner.get("host") == socket.gethostname():
            dead = not _process_alive(int(owner.get("pid", 0)))
        else:
            dead = time.time() - folder.stat().st_mtime > other_host_after_s
        if dead:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class SnapshotWriter:
    """Write one snapshot a batch at a time (bounded memory), then ``commit`` it: checksums, manifest,
    fsync, rename. Leaving the ``with`` block without committing, or with an exception, removes the
    temporary folder; a killed process leaves it hidden for ``sweep_partial_snapshots``.

        with SnapshotWriter(root / "2026-11-25-0001") as writer:
            for batch in pair_batches:          # record batches of PAIRS_SCHEMA
                writer.add_pairs(batch)
            writer.add_judgments(judgment_batches)
            path = writer.commit(filters={...})
    """

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists():
            raise FileExistsError(
                f"{self.out_dir}: a snapshot already exists there; snapshots are immutable, pick a new id"
            )
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.temp_dir = self.out_dir.parent / f".{self.out_dir.name}{PARTIAL_MARK}{uuid.uuid4().hex}"
        self.temp_dir.mkdir()
        try:
            (self.temp_dir / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
            self._pairs_writer = pq.ParquetWriter(self.temp_dir / PAIRS_FILE, PAIRS_SCHEMA)
        except BaseException:
            # Nobody would own the half-made folder (the owner file may be missing): remove it now
            # instead of leaving it to the sweeper's 24-hour rule.
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            raise
        self._n_pairs = 0
        self._ascending, self._last_pair_id = True, None  # see _check_pairs
        self._split_counts = dict.fromkeys(SPLITS, 0)
        self._n_judgments: int | None = None
        self._bundled: list[str] = []
        self._committed = False
        self.manifest: dict | None = None  # set by ``commit``

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._committed:
            self.abort()

    def add_pairs(self, pairs: pa.RecordBatch | pa.Table) -> int:
        """Append pairs (``PAIRS_SCHEMA``; a missing optional column is null). Returns how many."""
        pairs = _conform(pairs, PAIRS_SCHEMA)
        for batch in pairs.to_batches():
            self._check_pairs(batch)
            self._pairs_writer.write_batch(batch)
        return pairs.num_rows

    def _check_pairs(self, batch: pa.RecordBatch) -> None:
        names = dict(zip(batch.schema.names, batch.columns))
        for required in ("pair_id", "prompt", "video_a", "video_b", "split"):
            if names[required].null_count:
                raise ValueError(
                    f"pairs: {required} is empty in {names[required].null_count} rows; every pair needs one"
                )
        allowed = pa.array([LABEL_A_BETTER, LABEL_TIE, LABEL_B_BETTER], pa.int8())
        for dimension in SCORE_KEYS:
            column = names[dimension]
            bad = pc.filter(
                names["pair_id"], pc.invert(pc.or_(pc.is_null(column), pc.is_in(column, value_set=allowed)))
            )
            if len(bad):
                raise ValueError(f"pair {bad[0].as_py()}: {dimension} is not 1 (A), 0 (tie) or -1 (B)")
        counts = pc.value_counts(names["split"]).to_pylist()
        for entry in counts:
            if entry["values"] not in SPLITS:
                raise ValueError(f"pairs: split {entry['values']!r} is not one of {SPLITS}")
            self._split_counts[entry["values"]] += entry["counts"]
        self._n_pairs += batch.num_rows
        # Pairs that arrive in ascending pair_id order (the export's ORDER BY) are unique as they stream, in constant
        # memory; any other order is checked at commit.
        ids = names["pair_id"]
        if self._ascending and len(ids):
            first = ids[0].as_py()
            rising = len(ids) < 2 or pc.all(pc.greater(ids[1:], ids[:-1])).as_py()
            if not rising or (self._last_pair_id is not None and first <= self._last_pair_id):
                self._ascending = False
            self._last_pair_id = ids[-1].as_py()

    def add_judgments(self, judgments: Iterable[pa.RecordBatch] | pa.Table, schema: pa.Schema | None = None) -> int:
        """Write ``judgments.parquet`` from a table or a stream of record batches (call once). Returns the row count."""
        if self._n_judgments is not None:
            raise RuntimeError("add_judgments was already called for this snapshot")
        batches = judgments.to_batches() if isinstance(judgments, pa.Table) else judgments
        schema = schema or (judgments.schema if isinstance(judgments, pa.Table) else JUDGMENTS_SCHEMA)
        count = 0
        with pq.ParquetWriter(self.temp_dir / JUDGMENTS_FILE, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
                count += batch.num_rows
        self._n_judgments = count
        return count

    def add_video(self, inner_path: str, source: str | Path) -> None:
        """Copy a video into the snapshot at ``inner_path`` (relative, e.g. ``videos/12.mp4``)."""
        if Path(inner_path).is_absolute() or ".." in Path(inner_path).parts:
            raise ValueError(f"{inner_path}: bundled video paths must be relative and stay inside the snapshot")
        target = self.temp_dir / inner_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        self._bundled.append(Path(inner_path).as_posix())

    def commit(
        self, *, filters: Mapping | None = None, agreement: Mapping | None = None, extra: Mapping | None = None
    ) -> Path:
        """Finish the files, write the manifest and make the snapshot visible under its final name."""
        self._pairs_writer.close()
        if not self._ascending:  # written out of order: count the distinct ids (memory grows with the pairs)
            pair_ids = pq.read_table(self.temp_dir / PAIRS_FILE, columns=["pair_id"]).column("pair_id")
            if pc.count_distinct(pair_ids).as_py() != self._n_pairs:
                raise ValueError("pair_id values repeat; every pair must appear once")
        videoalign = write_videoalign_files(self.temp_dir)
        written = [PAIRS_FILE, *videoalign["files"]] + ([JUDGMENTS_FILE] if self._n_judgments is not None else [])
        files = {}
        for name in written + self._bundled:
            path = self.temp_dir / name
            _fsync_file(path)
            files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        counts = {"pairs": self._n_pairs, **self._split_counts}
        if self._n_judgments is not None:
            counts["judgments"] = self._n_judgments
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "filters": dict(filters or {}),
            "counts": counts,
            "agreement": dict(agreement or {}),
            "videoalign": videoalign,
            "files": files,
            **dict(extra or {}),
        }
        with open(self.temp_dir / MANIFEST_FILE, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        (self.temp_dir / OWNER_FILE).unlink()
        os.rename(self.temp_dir, self.out_dir)
        self._committed = True
        self.manifest = manifest
        return self.out_dir

    def abort(self) -> None:
        try:
            self._pairs_writer.close()
        except Exception:  # already closed, or failed mid-write: the folder goes anyway
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _conform(data: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    """``data`` as a table of exactly ``schema``: columns reordered and cast; missing nullable ones as nulls."""
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def write_snapshot(
    pairs_rows: Iterable[Mapping | PairRecord],
    out_dir: str | Path,
    *,
    judgments_rows: Iterable[Mapping] | None = None,
    videos: Mapping[str, str | Path] | None = None,
    filters: Mapping | None = None,
    agreement: Mapping | None = None,
) -> Path:
    """Write a complete snapshot from rows held in memory; return its path.

    ``pairs_rows``: mappings with the columns of ``PAIRS_SCHEMA`` (labels int 1/0/−1 or None) or
    ``PairRecord``s; a row without ``split`` is split by prompt with ``split_for_prompt``. ``videos`` maps
    a path inside the snapshot (e.g. ``videos/12.mp4``, what the rows' ``video_a``/``video_b`` say) to a
    source file to copy in. ``out_dir`` must not exist yet: snapshots are immutable.
    """
    rows = []
    for row in pairs_rows:
        pair = PairRecord.from_row(row)
        if not isinstance(row, PairRecord) and "split" not in row:
            pair.split = split_for_prompt(pair.prompt)
        values = pair.as_row()
        for label_key in SCORE_KEYS:
            if values[label_key] == LABEL_MISSING:
                values[label_key] = None
        rows.append({name: values.get(name) for name in PAIRS_SCHEMA.names})
    with SnapshotWriter(out_dir) as writer:
        writer.add_pairs(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA))
        if judgments_rows is not None:
            writer.add_judgments(pa.Table.from_pylist(list(judgments_rows)))
        for inner_path, source in (videos or {}).items():
            writer.add_video(inner_path, source)
        return writer.commit(filters=filters, agreement=agreement)


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
    missing = {"pair_id", "prompt", "video_a", "video_b", *DIMENSIONS, "split"} - set(table.column_names)
    if missing:
        raise SnapshotError(f"{root / PAIRS_FILE}: missing columns {sorted(missing)}")
    pairs = [PairRecord.from_row(row) for row in table.to_pylist()]
    return Snapshot(root=root, manifest=manifest, pairs=pairs)
