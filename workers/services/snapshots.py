"""Dataset snapshots (DESIGN §5): the judged pairs, exported as files training can read without Django.

``snapshot_create`` runs inside one REPEATABLE READ transaction, so pairs and judgments come from the
same instant however long the export takes. The consensus of every pair that passes the filters goes
into a temporary table in one SQL statement; pairs, judgments and their columns then stream out of
PostgreSQL with ``COPY … TO STDOUT`` straight into pyarrow's CSV reader and the Parquet writer, a few
megabytes at a time — no Python object per row, and memory that does not grow with the data.
Files are written by ``alignment.data.snapshot.SnapshotWriter``: hidden until complete, then renamed.

Export jobs (``export``, ``default`` queue): ``snapshot_job_create`` records and queues one (the web side),
``snapshot_work`` runs it (the worker side).
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import psycopg
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone

from alignment.data.csv_formats import read_rewardbench_csv
from alignment.data.snapshot import (
    JUDGMENTS_SCHEMA,
    PAIRS_SCHEMA,
    SnapshotWriter,
    csv_record_batches,
    read_snapshot,
    sweep_partial_snapshots,
    write_snapshot,
)
from alignment.labels import DIMENSIONS
from annotate.consensus import (
    PARALLEL_SCANS,
    ConsensusFilters,
    consensus_sql,
    counted_judgments_sql,
    transaction_table,
)
from annotate.models import Judgment
from workers.models import DatasetSnapshot, Job
from workers.services.jobs import job_create
from workers.services.webhooks import webhook_emit

Progress = Callable[[int, int, str], None]

_TWO_64 = "18446744073709551616"


class SnapshotEmpty(ValueError):
    """No judged pair passes the filters: there is nothing to export."""


def _split_sql(val_fraction: float, test_fraction: float) -> str:
    """``alignment.data.snapshot.split_for_prompt`` in SQL: the same bucket from the same sha256, the same split."""
    signed = "('x' || encode(substr(sha256(convert_to(pr.text, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint"
    bucket = f"(({signed})::numeric + CASE WHEN {signed} < 0 THEN {_TWO_64} ELSE 0 END) / {_TWO_64}"
    return (
        f"CASE WHEN {bucket} < {float(test_fraction)!r} THEN 'test' "
        f"WHEN {bucket} < {float(test_fraction) + float(val_fraction)!r} THEN 'val' ELSE 'train' END"
    )


def _video_uri_prefix() -> str:
    """Where the videos' storage names live, as a prefix for the snapshot's URIs."""
    bucket = getattr(default_storage, "bucket_name", None)
    if bucket:  # django-storages' S3Storage
        location = getattr(default_storage, "location", "").strip("/")
        return f"s3://{bucket}/{location + '/' if location else ''}"
    return str(Path(settings.MEDIA_ROOT).resolve()) + "/"


def _bound(sql: str, params: dict) -> str:
    """``sql`` with ``params`` as literals: COPY takes no server-side parameters."""
    return psycopg.ClientCursor(connection.connection).mogrify(sql, params)


@contextmanager
def _snapshot_transaction():
    """One transaction at REPEATABLE READ (a consistent view for the whole export), unless the caller
    already holds a transaction, whose view is then used (in a savepoint)."""
    if connection.in_atomic_block:
        with transaction.atomic():
            yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def _copy_out(cursor, query: str) -> Iterator[bytes]:
    with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER)") as copy:
        yield from copy


def _new_name() -> str:
    return f"{timezone.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def snapshot_create(
    *,
    filters: ConsensusFilters | None = None,
    name: str | None = None,
    root: str | Path | None = None,
    bundle_videos: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    job: Job | None = None,
    created_by=None,
    progress: Progress | None = None,
) -> DatasetSnapshot:
    """Export the consensus of every judged pair that passes ``filters`` as a snapshot under ``root``.

    Raises ``SnapshotEmpty`` when no pair passes. With ``bundle_videos`` the videos are copied into the
    snapshot (``videos/<id>.mp4``) so it can travel to a cluster without the media store; otherwise
    the rows name the videos where the media store keeps them.
    """
    filters = filters or ConsensusFilters()
    root = Path(root or settings.SNAPSHOT_ROOT)
    name = name or _new_name()
    sweep_partial_snapshots(root)
    report = progress or (lambda done, total, text: None)
    table = transaction_table("snapshot_pairs")  # the consensus of the pairs that pass, joined by parallel workers
    with _snapshot_transaction(), connection.cursor() as cursor:
        cursor.execute(f"SELECT {PARALLEL_SCANS}")
        consensus, params = consensus_sql(filters)
        cursor.execute(f"CREATE UNLOGGED TABLE {table} AS {consensus}", params)
        total = cursor.rowcount
        if total == 0:
            raise SnapshotEmpty(f"no judged pair passes the filters {filters.as_dict()}; nothing to export")
        cursor.execute(f"ANALYZE {table}")
        cursor.execute("SELECT max(id) FROM annotate_judgment")
        watermark = cursor.fetchone()[0]
        with SnapshotWriter(root / name) as writer:
            written = 0
            for batch in csv_record_batches(
                _copy_out(cursor, _pairs_query(table, bundle_videos, val_fraction, test_fraction)), PAIRS_SCHEMA
            ):
                written += writer.add_pairs(batch)
                report(written, total, f"{written:,} of {total:,} pairs")
            where_judgments, judgment_params = counted_judgments_sql(filters)
            judgments = _bound(_judgments_query(table, where_judgments), judgment_params)
            report(written, total, "judgments")
            writer.add_judgments(csv_record_batches(_copy_out(cursor, judgments), JUDGMENTS_SCHEMA))
            if bundle_videos:
                _bundle_videos(cursor, table, writer, report)
            agreement = _agreement_summary(cursor, table)
            path = writer.commit(
                filters={
                    **filters.as_dict(),
                    "val_fraction": val_fraction,
                    "test_fraction": test_fraction,
                    "bundle_videos": bundle_videos,
                },
                agreement=agreement,
                extra={"name": name, "judgment_watermark": watermark},
            )
        uri = _publish(path, report) if settings.SNAPSHOT_STORAGE_URL else str(path)
        snapshot = DatasetSnapshot.objects.create(
            name=name,
            uri=uri,
            kind=DatasetSnapshot.Kind.TRAINING,
            filters=writer.manifest["filters"],
            counts=writer.manifest["counts"],
            agreement=agreement,
            bytes=sum(entry["bytes"] for entry in writer.manifest["files"].values()),
            judgment_watermark=watermark,
            job=job,
            created_by=created_by,
        )
        snapshot.videoalign = writer.manifest["videoalign"]  # not a column: the manifest keeps it
        cursor.execute(f"DROP TABLE {table}")  # with the transaction: also when the caller's goes on
        webhook_emit(event="snapshot.created", data=snapshot_payload(snapshot))
        return snapshot


def snapshot_payload(snapshot: DatasetSnapshot) -> dict:
    return {
        "id": snapshot.pk,
        "name": snapshot.name,
        "uri": snapshot.uri,
        "kind": snapshot.kind,
        "counts": snapshot.counts,
        "filters": snapshot.filters,
        "bytes": snapshot.bytes,
        "created_at": snapshot.created_at.isoformat(),
    }


def snapshot_local_folder(snapshot: DatasetSnapshot, folder: Path) -> Path:
    """The snapshot as a local folder, for a trainer: where it is, or downloaded from its ``s3://`` prefix into
    ``folder`` (the job's)."""
    if not snapshot.uri.startswith("s3://"):
        return Path(snapshot.uri)
    import boto3  # only where snapshots live in S3

    bucket, _, prefix = snapshot.uri[len("s3://") :].partition("/")
    client = boto3.client("s3", endpoint_url=settings.AWS_S3_ENDPOINT_URL, region_name=settings.AWS_S3_REGION_NAME)
    target = folder / snapshot.name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            destination = target / item["Key"][len(prefix) + 1 :]
            destination.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(destination))
    return target


def _publish(path: Path, report: Progress) -> str:
    """Upload a committed local snapshot to ``SNAPSHOT_STORAGE_URL`` (``s3://bucket/prefix``), manifest last,
    then remove the local copy. Returns the snapshot's URI there."""
    import boto3  # only where snapshots live in S3

    url = settings.SNAPSHOT_STORAGE_URL
    if not url.startswith("s3://"):
        raise ValueError(f"SNAPSHOT_STORAGE_URL={url!r}: only s3://bucket/prefix is supported (or leave it empty)")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = "/".join(part for part in (prefix.strip("/"), path.name) if part)
    client = boto3.client("s3", endpoint_url=settings.AWS_S3_ENDPOINT_URL, region_name=settings.AWS_S3_REGION_NAME)
    files = sorted((item for item in path.rglob("*") if item.is_file()), key=lambda item: item.name == "manifest.json")
    try:
        for done, item in enumerate(files, start=1):
            client.upload_file(str(item), bucket, f"{prefix}/{item.relative_to(path).as_posix()}")
            report(done, len(files), f"uploading {item.name}")
    finally:  # uploaded or not, the local copy goes: without its manifest an upload is invisible, like a partial folder
        shutil.rmtree(path)
    return f"s3://{bucket}/{prefix}"


def _pairs_query(table: str, bundle_videos: bool, val_fraction: float, test_fraction: float) -> str:
    if bundle_videos:
        video_a, video_b = "'videos/' || va.id || '.mp4'", "'videos/' || vb.id || '.mp4'"
    else:
        prefix = _video_uri_prefix().replace("'", "''")
        video_a, video_b = f"'{prefix}' || va.file", f"'{prefix}' || vb.file"
    return f"""
    SELECT s.pair_id, pr.text AS prompt, {video_a} AS video_a, {video_b} AS video_b,
           nullif(va.generator, '') AS generator_a, nullif(vb.generator, '') AS generator_b,
           va.fps AS fps_a, va.num_frames AS num_frames_a, vb.fps AS fps_b, vb.num_frames AS num_frames_b,
           s.vq, s.mq, s.ta, NULL AS overall, s.n_judgments, s.agreement_vq, s.agreement_mq, s.agreement_ta,
           {_split_sql(val_fraction, test_fraction)} AS split
    FROM {table} s
    JOIN annotate_pair p ON p.id = s.pair_id
    JOIN annotate_prompt pr ON pr.id = p.prompt_id
    JOIN annotate_video va ON va.id = p.video_a_id
    JOIN annotate_video vb ON vb.id = p.video_b_id
    ORDER BY s.pair_id
    """


def _judgments_query(table: str, where_judgments: str) -> str:
    codes = {dim: f"CASE j.{dim} WHEN 'A' THEN 1 WHEN 'B' THEN -1 ELSE 0 END AS {dim}" for dim in DIMENSIONS}
    return f"""
    SELECT j.id AS judgment_id, j.pair_id, j.annotator_id, {codes["vq"]}, {codes["mq"]}, {codes["ta"]},
           j.left_is_a, j.duration_ms, j.watched_ms, j.flag, j.comment, j.created_at
    FROM annotate_judgment j
    JOIN {table} s ON s.pair_id = j.pair_id
    JOIN auth_user u ON u.id = j.annotator_id
    WHERE {where_judgments}
    ORDER BY j.id
    """


def _bundle_videos(cursor, table: str, writer: SnapshotWriter, report: Progress) -> None:
    cursor.execute(
        "SELECT v.id, v.file FROM annotate_video v WHERE v.id IN ("
        f"SELECT p.video_a_id FROM annotate_pair p JOIN {table} s ON s.pair_id = p.id UNION "
        f"SELECT p.video_b_id FROM annotate_pair p JOIN {table} s ON s.pair_id = p.id) ORDER BY v.id"
    )
    videos = cursor.fetchall()
    for done, (video_id, file_name) in enumerate(videos, start=1):
        writer.add_video(f"videos/{video_id}.mp4", default_storage.path(file_name))
        report(done, len(videos), f"video {done:,} of {len(videos):,}")


def _agreement_summary(cursor, table: str) -> dict:
    """Per dimension: mean agreement, share of unanimous pairs, tie share, labelled pairs."""
    columns = ", ".join(
        f"avg(agreement_{dim}), avg((agreement_{dim} = 1)::int), avg(({dim} = 0)::int), count({dim})"
        for dim in DIMENSIONS
    )
    cursor.execute(f"SELECT {columns} FROM {table}")
    row = cursor.fetchone()
    summary = {}
    for index, dim in enumerate(DIMENSIONS):
        mean, unanimous, ties, labelled = row[4 * index : 4 * index + 4]
        summary[dim.upper()] = {
            "mean_agreement": round(float(mean), 4) if mean is not None else None,
            "unanimous": round(float(unanimous), 4) if unanimous is not None else None,
            "tie_rate": round(float(ties), 4) if ties is not None else None,
            "labelled_pairs": labelled,
        }
    return summary


def snapshot_nightly_due() -> bool:
    """True when something was judged since the newest training snapshot (or there is none yet and
    something was judged at all)."""
    newest = (
        DatasetSnapshot.objects.filter(kind=DatasetSnapshot.Kind.TRAINING, judgment_watermark__isnull=False)
        .order_by("-judgment_watermark")
        .values_list("judgment_watermark", flat=True)
        .first()
    )
    judged = Judgment.objects.all() if newest is None else Judgment.objects.filter(pk__gt=newest)
    return judged.exists()


def snapshot_params_parse(params: dict) -> dict:
    """A job's JSON params → ``snapshot_create`` keyword arguments (dates as ISO strings, as ``as_dict`` wrote them)."""
    known = {
        "judged_from",
        "judged_until",
        "batch_ids",
        "min_judgments",
        "min_agreement",
        "include_flagged",
        "include_excluded_annotators",
        "include_gold",
        "no_majority",
    }
    values = {key: params[key] for key in known if params.get(key) is not None}
    for key in ("judged_from", "judged_until"):
        if key in values:
            values[key] = datetime.fromisoformat(values[key])
    if "batch_ids" in values:
        values["batch_ids"] = tuple(int(batch) for batch in values["batch_ids"])
    options = {"filters": ConsensusFilters(**values)}
    for key in ("name", "root", "bundle_videos", "val_fraction", "test_fraction"):
        if params.get(key) is not None:
            options[key] = params[key]
    return options


def snapshot_work(job: Job) -> dict:
    """An export job's work (run by ``job_execute``): a snapshot with the job's filters."""
    options = snapshot_params_parse(job.params)
    snapshot = snapshot_create(**options, job=job, created_by=job.created_by, progress=job.report_progress)
    job.append_log(f"snapshot {snapshot.name}: {snapshot.counts} at {snapshot.uri}")
    videoalign = getattr(snapshot, "videoalign", {})
    if videoalign.get("reason"):
        job.append_log(f"VideoAlign CSVs not written: {videoalign['reason']}")
    return {
        "snapshot_id": snapshot.pk,
        "name": snapshot.name,
        "uri": snapshot.uri,
        "counts": snapshot.counts,
        "videoalign": videoalign,
    }


def snapshot_job_create(*, params: dict, created_by=None) -> Job:
    """Record an export job and queue it on the ``default`` queue once committed (params checked first)."""
    snapshot_params_parse(params)  # a bad filter fails here, in front of the admin, not later in a worker
    return job_create(kind=Job.Kind.EXPORT, params=params, created_by=created_by)


def snapshot_job_create_if_due() -> Job | None:
    """The nightly export: a job with the default filters, only when something new was judged."""
    if not snapshot_nightly_due():
        return None
    return snapshot_job_create(params={"nightly": True})


def snapshot_from_rewardbench(
    *,
    csv_path: str | Path,
    video_root: str | Path | None = None,
    name: str | None = None,
    root: str | Path | None = None,
    bundle_videos: bool = False,
    created_by=None,
) -> tuple[DatasetSnapshot, list[str]]:
    """A VideoGen-RewardBench CSV as an evaluation snapshot (every pair in ``test``, with its Overall label).

    A row whose labels cannot be read, or whose video file is missing, is skipped and described in the
    returned list; the other rows are kept. Raises ``SnapshotEmpty`` when no row is usable.
    """
    csv_path = Path(csv_path)
    root = Path(root or settings.SNAPSHOT_ROOT)
    name = name or f"rewardbench-{_new_name()}"
    problems: list[str] = []
    records = read_rewardbench_csv(csv_path, video_root=video_root, bad_rows=problems)
    usable, videos = [], {}
    for record in records:
        missing = [uri for uri in (record.video_a, record.video_b) if not Path(uri).is_file()]
        if missing:
            problems.append(
                f"{csv_path}:{record.pair_id + 2}: video not found: {', '.join(missing)}; the row was skipped"
            )
            continue
        if bundle_videos:
            for side in ("video_a", "video_b"):
                source = Path(getattr(record, side))
                inner = f"videos/{hashlib.sha256(str(source).encode()).hexdigest()[:16]}{source.suffix}"
                videos[inner] = source
                setattr(record, side, inner)
        usable.append(record)
    if not usable:
        raise SnapshotEmpty(f"{csv_path}: no usable row ({len(problems)} skipped: {problems[:3]})")
    sweep_partial_snapshots(root)
    path = write_snapshot(
        usable,
        root / name,
        videos=videos,
        filters={"source": str(csv_path), "format": "VideoGen-RewardBench", "skipped_rows": len(problems)},
    )
    manifest = read_snapshot(path, verify=False).manifest
    snapshot = DatasetSnapshot.objects.create(
        name=name,
        uri=str(path),
        kind=DatasetSnapshot.Kind.EVALUATION,
        filters=manifest["filters"],
        counts=manifest["counts"],
        bytes=sum(entry["bytes"] for entry in manifest["files"].values()),
        created_by=created_by,
    )
    webhook_emit(event="snapshot.created", data=snapshot_payload(snapshot))
    return snapshot, problems
