"""Pairs of toy clips for one prompt, with independent random defects, and their export as MP4s
plus the JSONL manifest that the web app's importer reads."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignment.data.video import write_mp4
from alignment.toyworld.oracle import oracle_scores
from alignment.toyworld.prompts import ToyPrompt, all_prompts
from alignment.toyworld.render import DefectSpec, render_clip

MANIFEST_NAME = "manifest.jsonl"
ORACLE_NAME = "oracle.jsonl"


@dataclass(frozen=True, eq=False)
class ToyClip:
    """A rendered clip ``(T, H, W, 3)`` with what made it and what the oracle says of it."""

    pixels: np.ndarray
    defects: DefectSpec
    seed: int
    scores: dict[str, float]

    @property
    def generator(self) -> str:
        return self.defects.generator_name()


@dataclass(frozen=True, eq=False)
class ToyPair:
    prompt: ToyPrompt
    a: ToyClip
    b: ToyClip


def make_pairs(
    n_prompts: int,
    pairs_per_prompt: int,
    seed: int = 0,
    *,
    size: int | tuple[int, int] = 32,
    frames: int = 9,
    p_clean: float = 0.25,
    policy_p_clean: float | None = None,
) -> list[ToyPair]:
    """``n_prompts`` distinct prompts (a seeded draw from the grammar) × ``pairs_per_prompt`` pairs.

    Each clip of a pair gets its own render seed and its own ``DefectSpec.random(p_clean=…)``, so
    its quality varies in all three dimensions independently of the other clip's: two seeds of one
    generator. With ``policy_p_clean``, one clip of each pair, on a side drawn at random, comes from
    a better generator that leaves a dimension clean with that probability: a policy-vs-base pair.
    """
    if policy_p_clean is not None and not 0.0 <= policy_p_clean <= 1.0:
        raise ValueError(f"policy_p_clean={policy_p_clean}: a probability lies in [0, 1]")
    prompts = all_prompts()
    if not 1 <= n_prompts <= len(prompts):
        raise ValueError(
            f"n_prompts={n_prompts}: the toy grammar has {len(prompts)} prompts; ask for 1 to {len(prompts)}"
        )
    if pairs_per_prompt < 1:
        raise ValueError(f"pairs_per_prompt={pairs_per_prompt}: ask for at least one pair per prompt")
    rng = np.random.default_rng(seed)
    chosen = [prompts[i] for i in rng.permutation(len(prompts))[:n_prompts]]
    plan = []  # (prompt, defects, render seed) for a, then b, of every pair
    for prompt in chosen:
        for _ in range(pairs_per_prompt):
            policy_side = int(rng.integers(2)) if policy_p_clean is not None else -1
            for side in range(2):
                chance = policy_p_clean if side == policy_side and policy_p_clean is not None else p_clean
                plan.append((prompt, DefectSpec.random(rng, p_clean=chance), int(rng.integers(2**31))))
    pixels = np.stack([render_clip(p, d, s, size=size, frames=frames) for p, d, s in plan])
    scores = oracle_scores(pixels, [p for p, _, _ in plan])
    clips = [ToyClip(pixels[i], d, s, scores[i]) for i, (_, d, s) in enumerate(plan)]
    return [ToyPair(plan[i][0], clips[i], clips[i + 1]) for i in range(0, len(plan), 2)]


def export_pairs(
    pairs: Sequence[ToyPair],
    out_dir: str | os.PathLike,
    *,
    fps: int = 8,
    min_side: int = 64,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write every clip as ``videos/<pair>_<a|b>.mp4`` under ``out_dir`` and return the manifest path.

    ``manifest.jsonl`` has one line per pair, ``{"prompt", "video_a", "video_b", "generator_a",
    "generator_b"}`` with video paths relative to the manifest. ``oracle.jsonl`` has one line per
    video with its oracle scores, defects and render seed, for analysis. ``on_progress(done, total)``
    is called after each video; clips are encoded in ``workers`` threads (default: the CPU count, ≤ 8).
    Both JSONL files appear atomically once every video is written.
    """
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    jobs = [
        (pair.prompt, clip, f"videos/{index:05d}_{side}.mp4")
        for index, pair in enumerate(pairs)
        for side, clip in (("a", pair.a), ("b", pair.b))
    ]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(write_mp4, clip.pixels, out_dir / name, fps, min_side=min_side) for _, clip, name in jobs
        ]
        for done, future in enumerate(futures, start=1):
            future.result()
            if on_progress is not None:
                on_progress(done, len(jobs))

    manifest_rows = [
        {
            "prompt": str(pair.prompt),
            "video_a": f"videos/{index:05d}_a.mp4",
            "video_b": f"videos/{index:05d}_b.mp4",
            "generator_a": pair.a.generator,
            "generator_b": pair.b.generator,
        }
        for index, pair in enumerate(pairs)
    ]
    oracle_rows = [
        {
            "video": name,
            "prompt": str(prompt),
            "generator": clip.generator,
            "seed": clip.seed,
            **clip.scores,
            "defects": {kind: strength for kind, strength in clip.defects.as_dict().items() if strength > 0},
        }
        for prompt, clip, name in jobs
    ]
    _write_jsonl_atomically(out_dir / ORACLE_NAME, oracle_rows)
    return _write_jsonl_atomically(out_dir / MANIFEST_NAME, manifest_rows)


def _write_jsonl_atomically(path: Path, rows: list[dict]) -> Path:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    partial.replace(path)
    return path
