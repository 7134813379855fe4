"""Snapshot export at scale, and the training data loader against a bare ffmpeg decode.

1. Export: 182,000 pairs with 3 judgments each (seeded in SQL into its own database, vidpref_bench_export).
   Prints the export's wall time (goal ≤ 15 s) as a ratio to PostgreSQL's own ``COPY … TO`` of the same
   rows (the pairs with their prompt and video columns, and the judgments) measured in the same run,
   and the export's peak memory at the full size vs at half of it (bounded memory: a ratio near 1).
2. Loader: ``PairVideoDataset`` in a ``DataLoader`` with worker processes, decoding the VideoAlign
   sample videos, as frames/s over ffmpeg's own decode of the same files to raw RGB frames
   (same frames, same pixels), and at the training spec (2 fps, ≤ 448² pixels) as videos/s over
   ffmpeg's full decode of the same files.

With ``--baseline-commit C`` the full export is also run with that commit's ``workers/services/snapshots.py`` on
the same data, each of its runs just before one of this tree's (the "before"); ``--reuse`` measures the database an
earlier run seeded (same ``--pairs``) again. Results also go to bench/results/export.json.

    .venv/bin/python bench/export.py [--pairs 182000] [--loader-videos 48] [--baseline-commit C] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale import bench_database_env, module_at_commit, run_child  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "data" / "videoalign-samples"
DATABASE = "vidpref_bench_export"


def child(env: dict, *args: str) -> dict:
    return run_child(__file__, env, *args)


def seed(pairs: int) -> dict:
    import django

    django.setup()
    from django.db import connection

    from tests.conftest import seed_judged_pairs

    started = time.perf_counter()
    with connection.cursor() as cursor:
        seed_judged_pairs(cursor, pairs=pairs, judgments_per_pair=3)
        from annotate.models import default_campaign_pk

        cursor.execute(
            "INSERT INTO annotate_batch (name, source, created_at, report, campaign_id) "
            "VALUES ('bench half', 'bench', now(), '{}', %s) RETURNING id",
            [default_campaign_pk()],
        )
        batch_id = cursor.fetchone()[0]
        cursor.execute("UPDATE annotate_pair SET batch_id = %s WHERE id <= %s", [batch_id, pairs // 2])
        cursor.execute("VACUUM ANALYZE")  # both sides then read all-visible pages
    return {"seconds": time.perf_counter() - started, "half_batch": batch_id}


def copy_baseline() -> dict:
    """PostgreSQL's COPY of the rows the export reads: pairs with prompt text and video columns, and judgments."""
    import django

    django.setup()
    from django.db import connection

    queries = [
        "SELECT p.id, pr.text, va.file, vb.file, va.generator, vb.generator, va.fps, va.num_frames, vb.fps, vb.num_frames "
        "FROM annotate_pair p JOIN annotate_prompt pr ON pr.id = p.prompt_id "
        "JOIN annotate_video va ON va.id = p.video_a_id JOIN annotate_video vb ON vb.id = p.video_b_id",
        "SELECT id, pair_id, annotator_id, vq, mq, ta, left_is_a, duration_ms, watched_ms, flag, comment, created_at "
        "FROM annotate_judgment",
    ]
    started = time.perf_counter()
    size = 0
    with connection.cursor() as cursor:
        for query in queries:
            with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER)") as copy:
                for chunk in copy:
                    size += len(chunk)
    return {"seconds": time.perf_counter() - started, "bytes": size}


def export_once(out_dir: str, batch_id: int | None, commit: str | None = None) -> dict:
    """One export in this (fresh) process; ``commit``: with that commit's export code."""
    import django

    django.setup()
    from annotate.consensus import ConsensusFilters
    from workers.services.snapshots import snapshot_create

    if commit:
        snapshot_create = module_at_commit(commit, "workers/services/snapshots.py").snapshot_create
    filters = ConsensusFilters(batch_ids=(batch_id,) if batch_id else ())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    snapshot = snapshot_create(filters=filters, root=out_dir)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "pairs": snapshot.counts["pairs"],
        "judgments": snapshot.counts["judgments"],
        "bytes": snapshot.bytes,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": before / 1024,
    }


def half_batch() -> dict:
    """The id of the batch the seed made of half the pairs (for ``--reuse``)."""
    import django

    django.setup()
    from annotate.models import Batch

    return {"half_batch": Batch.objects.get(name="bench half").pk}


def bench_export(pairs: int, *, baseline_commit: str | None = None, reuse: bool = False) -> dict:
    if reuse:
        env = bench_database_env(DATABASE, keep=True)
        seeded = child(env, "--half-batch")
    else:
        env = bench_database_env(DATABASE)
        seeded = child(env, "--seed", str(pairs))
        print(f"seeded {pairs:,} pairs × 3 judgments in {seeded['seconds']:.1f} s")
    baseline = min((child(env, "--copy-baseline") for _ in range(2)), key=lambda r: r["seconds"])
    commit_runs: list[dict] = []
    with tempfile.TemporaryDirectory() as out_dir:
        half = child(env, "--export-once", out_dir, "--batch", str(seeded["half_batch"]))
        runs = []
        for _ in range(3 if baseline_commit else 2):
            if baseline_commit:
                commit_runs.append(child(env, "--export-once", out_dir, "--commit", baseline_commit))
            runs.append(child(env, "--export-once", out_dir))
        full = min(runs, key=lambda r: r["seconds"])
    result = {
        "pairs": full["pairs"],
        "judgments": full["judgments"],
        "snapshot_mb": full["bytes"] / 1e6,
        "export_s": full["seconds"],
        "copy_baseline_s": baseline["seconds"],
        "export_over_copy": full["seconds"] / baseline["seconds"],
        "peak_rss_mb_full": full["peak_rss_mb"],
        "peak_rss_mb_half": half["peak_rss_mb"],
        "peak_rss_full_over_half": full["peak_rss_mb"] / half["peak_rss_mb"],
        "export_runs_s": [run["seconds"] for run in runs],
    }
    if commit_runs:
        import statistics

        result.update(
            baseline_commit=baseline_commit,
            commit_export_runs_s=[run["seconds"] for run in commit_runs],
            export_over_commit_median=statistics.median(result["export_runs_s"])
            / statistics.median(run["seconds"] for run in commit_runs),
            export_over_commit_best=full["seconds"] / min(run["seconds"] for run in commit_runs),
        )
    print(
        f"export: {full['pairs']:,} pairs, {full['judgments']:,} judgments, {result['snapshot_mb']:.1f} MB "
        f"in {full['seconds']:.2f} s (goal ≤ 15 s)"
    )
    print(
        f"PostgreSQL COPY TO of the same rows: {baseline['seconds']:.2f} s → export / COPY = "
        f"{result['export_over_copy']:.2f}"
    )
    print(
        f"peak memory: {full['peak_rss_mb']:.0f} MB at {full['pairs']:,} pairs, {half['peak_rss_mb']:.0f} MB at "
        f"{half['pairs']:,} → ratio {result['peak_rss_full_over_half']:.2f} for 2× the rows (bounded: ≈ 1)"
    )
    if commit_runs:
        print(
            f"{baseline_commit}'s export on the same data, alternating: "
            f"{', '.join(f'{s:.1f}' for s in result['commit_export_runs_s'])} s against this tree's "
            f"{', '.join(f'{s:.1f}' for s in result['export_runs_s'])} s → this tree / {baseline_commit} = "
            f"{result['export_over_commit_median']:.2f} (medians), {result['export_over_commit_best']:.2f} (best)"
        )
    return result


def ffmpeg_decode_seconds(files: list[Path], ffmpeg: str) -> float:
    """Wall time for ffmpeg to decode every file to raw RGB frames (two at a time, like two loader workers)."""
    started = time.perf_counter()
    for first in range(0, len(files), 2):
        running = [
            subprocess.Popen(
                [
                    ffmpeg,
                    "-nostdin",
                    "-v",
                    "error",
                    "-threads",
                    "1",
                    "-i",
                    str(path),
                    "-f",
                    "rawvideo",
                    "-pix_fmt",
                    "rgb24",
                    "-",
                ],
                stdout=subprocess.DEVNULL,
            )
            for path in files[first : first + 2]
        ]
        for process in running:
            if process.wait() != 0:
                raise RuntimeError(f"ffmpeg failed on {files[first : first + 2]}")
    return time.perf_counter() - started


def bench_loader(videos: int, workers: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from alignment.data import FrameSpec, PairRecord, PairVideoDataset, collate_pairs
    from config.tools import find_ffmpeg

    torch.set_num_threads(1)
    sources = sorted((SAMPLES / "videos").glob("*.mp4"))
    if not sources:
        raise SystemExit(f"the VideoAlign sample videos are not in {SAMPLES / 'videos'}")
    files = [sources[i % len(sources)] for i in range(videos)]
    pairs = [
        PairRecord(pair_id=i, prompt="p", video_a=str(files[2 * i]), video_b=str(files[2 * i + 1]))
        for i in range(videos // 2)
    ]

    def run_loader(spec: FrameSpec) -> tuple[float, int]:
        loader = DataLoader(
            PairVideoDataset(pairs, spec, decode_threads=1), batch_size=2, num_workers=workers, collate_fn=collate_pairs
        )
        started = time.perf_counter()
        frames = sum(video.shape[0] for batch in loader for video in batch["video_a"] + batch["video_b"])
        return time.perf_counter() - started, frames

    ffmpeg, _ = find_ffmpeg()
    ffmpeg_s = ffmpeg_decode_seconds(files, ffmpeg)
    every_s, every_frames = run_loader(
        FrameSpec(fps=None, max_frames=100_000, frame_multiple=1, max_pixels=10**9, size_factor=2)
    )
    train_s, train_frames = run_loader(FrameSpec())
    result = {
        "videos": len(files),
        "workers": workers,
        "ffmpeg_s": ffmpeg_s,
        "ffmpeg_frames_per_s": every_frames / ffmpeg_s,
        "loader_every_frame_per_s": every_frames / every_s,
        "loader_over_ffmpeg_frames": (every_frames / every_s) / (every_frames / ffmpeg_s),
        "loader_train_spec_videos_per_s": len(files) / train_s,
        "ffmpeg_videos_per_s": len(files) / ffmpeg_s,
        "loader_train_spec_over_ffmpeg_videos": ffmpeg_s / train_s,
        "train_spec_frames": train_frames,
    }
    print(
        f"loader, every frame at full size: {result['loader_every_frame_per_s']:.0f} frames/s vs ffmpeg → RGB "
        f"{result['ffmpeg_frames_per_s']:.0f} frames/s → ratio {result['loader_over_ffmpeg_frames']:.2f}"
    )
    print(
        f"loader at the training spec (2 fps, ≤ 448²): {result['loader_train_spec_videos_per_s']:.1f} videos/s vs "
        f"ffmpeg's full decode {result['ffmpeg_videos_per_s']:.1f} videos/s → ratio "
        f"{result['loader_train_spec_over_ffmpeg_videos']:.2f}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=182_000)
    parser.add_argument("--loader-videos", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument(
        "--baseline-commit", help="also export with this commit's workers/services/snapshots.py (the 'before')"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="measure the database a previous run seeded (same --pairs) again"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "export.json")
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--half-batch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--commit", help=argparse.SUPPRESS)
    parser.add_argument("--copy-baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--export-once", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        print(json.dumps(seed(args.seed)))
        return
    if args.copy_baseline:
        print(json.dumps(copy_baseline()))
        return
    if args.half_batch:
        print(json.dumps(half_batch()))
        return
    if args.export_once:
        print(json.dumps(export_once(args.export_once, args.batch, args.commit)))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {}
    if not args.skip_export:
        results["export"] = bench_export(args.pairs, baseline_commit=args.baseline_commit, reuse=args.reuse)
    if not args.skip_loader:
        results["loader"] = bench_loader(args.loader_videos, args.workers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"results → {args.out}")


if __name__ == "__main__":
    main()
