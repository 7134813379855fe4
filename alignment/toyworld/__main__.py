"""Command line of the toy world: ``python -m alignment.toyworld {render,score}``.

The world's validation tables (oracle against defects, annotators against the oracle) are studies:
``python -m studies oracle-table`` and ``python -m studies annotator-agreement``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from alignment.data.video import read_mp4
from alignment.labels import DIMENSIONS
from alignment.toyworld.oracle import oracle_scores
from alignment.toyworld.pairs import export_pairs, make_pairs
from alignment.toyworld.prompts import ToyPrompt


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    )


def _render(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    pairs = make_pairs(
        args.prompts, args.pairs_per_prompt, args.seed, size=args.size, frames=args.frames, p_clean=args.p_clean
    )
    with _progress() as progress:
        task = progress.add_task("writing MP4s", total=2 * len(pairs))
        manifest = export_pairs(
            pairs,
            args.out,
            fps=args.fps,
            min_side=args.min_side,
            workers=args.workers,
            on_progress=lambda done, total: progress.update(task, completed=done),
        )
    size = sum(path.stat().st_size for path in (manifest.parent / "videos").glob("*.mp4"))
    print(
        f"wrote {len(pairs)} pairs ({2 * len(pairs)} videos, {size / 1e6:.1f} MB) for {args.prompts} prompts "
        f"to {manifest} in {time.perf_counter() - started:.1f} s"
    )
    return 0


def _score(args: argparse.Namespace) -> int:
    prompt = ToyPrompt.parse(args.prompt)
    clips = [read_mp4(path, size=args.size) for path in args.videos]
    shapes = {clip.shape for clip in clips}
    if len(shapes) > 1:
        print(
            f"the videos decode to different shapes {sorted(shapes)}; pass --size to bring them to one", file=sys.stderr
        )
        return 2
    scores = oracle_scores(np.stack(clips), [prompt] * len(clips))
    for path, row in zip(args.videos, scores.as_array(), strict=True):
        print(f"{path}: " + "  ".join(f"{d}={v:.3f}" for d, v in zip(DIMENSIONS, row, strict=True)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m alignment.toyworld",
        description="The toy world: synthetic clips with oracle VQ/MQ/TA scores and simulated annotators.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    render = commands.add_parser("render", help="render toy pairs to MP4s with a JSONL manifest for the importer")
    render.add_argument("--out", type=Path, required=True, help="output folder (videos/, manifest.jsonl, oracle.jsonl)")
    render.add_argument("--prompts", type=int, default=48, help="distinct prompts, 1–144 (default 48)")
    render.add_argument("--pairs-per-prompt", type=int, default=2, help="pairs per prompt (default 2)")
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--size", type=int, default=32, help="frame side in pixels (default 32)")
    render.add_argument("--frames", type=int, default=9, help="frames per clip (default 9)")
    render.add_argument("--p-clean", type=float, default=0.25, help="chance that a dimension has no defect")
    render.add_argument("--fps", type=int, default=8)
    render.add_argument("--min-side", type=int, default=64, help="enlarge clips to at least this short side in the MP4")
    render.add_argument("--workers", type=int, default=None, help="clips encoded at once (default: CPUs, ≤ 8)")
    render.set_defaults(run=_render)

    score = commands.add_parser("score", help="oracle scores of video files against one prompt")
    score.add_argument("videos", nargs="+", type=Path)
    score.add_argument("--prompt", required=True, help='e.g. "a red square moving left quickly"')
    score.add_argument("--size", type=int, default=32, help="shrink frames to this side before scoring (default 32)")
    score.set_defaults(run=_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
