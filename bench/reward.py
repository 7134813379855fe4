"""VideoReward throughput on CPU: training pairs/s, and the data loader's pairs/s as a ratio to it.

The loader must outrun the model (goal: ratio ≥ 2), or decoding becomes the bottleneck. Measured for
the small backbone as the toy study trains it (32×32 clips) and for a tiny random Qwen2-VL on the real
VideoAlign sample videos (2 fps, ≤ 448² pixels; a 2B model is far slower, so that ratio is a floor).
With a warm frame cache (a later epoch, or a later run whose snapshot shares the videos), the loader
reads decoded frames from disk instead of decoding. Also: decoding those videos skipping the
non-reference frames that are not sampled, as a ratio to decoding every frame; and the small backbone's
frame CNN, forward and backward, on channels-last input (what the model feeds it) as a ratio to
contiguous NCHW input.

    .venv/bin/python bench/reward.py [--out bench/results/reward.json] [--workers 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from alignment.data import PairRecord, PairVideoDataset, read_videoalign_csv  # noqa: E402
from alignment.data.video import read_video_frames  # noqa: E402
from alignment.losses import reward_loss  # noqa: E402
from alignment.reward import RewardBatchCollator, RewardModel, RewardModelConfig  # noqa: E402
from alignment.reward.tiny import build_tiny_qwen2vl  # noqa: E402
from alignment.toyworld import write_mp4  # noqa: E402
from studies.reward_toy import MAIN_VARIANT, VARIANTS, ToyStudyConfig, train_config_for  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "videoalign-samples"


def toy_pairs(folder: Path, n_videos: int = 64, n_pairs: int = 512, frames: int = 16) -> list[PairRecord]:
    rng = np.random.default_rng(0)
    for index in range(n_videos):
        clip = rng.integers(0, 256, (frames, 32, 32, 3), dtype=np.uint8)
        write_mp4(clip, folder / f"{index}.mp4", 8, min_side=1)
    return [
        PairRecord(
            pair_id=i,
            prompt="a red circle moving left",
            video_a=str(folder / f"{rng.integers(n_videos)}.mp4"),
            video_b=str(folder / f"{rng.integers(n_videos)}.mp4"),
            vq=1,
            mq=0,
            ta=-1,
        )
        for i in range(n_pairs)
    ]


def loader_pairs_per_second(dataset, collator, batch_size: int, workers: int, batches: int) -> float:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collator,
        shuffle=True,
        persistent_workers=workers > 0,
    )
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start = time.perf_counter()
    count = 0
    for batch in itertools.islice(iterator, batches):
        count += batch["labels"].shape[0]
    rate = count / (time.perf_counter() - start)
    iterator._shutdown_workers()  # so that they do not compete with the next measurement
    return rate


def train_pairs_per_second(model, batch, steps: int) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    labels = batch["labels"].long().flatten()

    def step():
        rewards_a, rewards_b = model(**batch["inputs"]).chunk(2)
        loss = reward_loss((rewards_a - rewards_b).flatten(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch["labels"].shape[0] / (time.perf_counter() - start)


def measure(
    name, model, pairs, *, batch_size, workers, loader_batches, train_steps, cache_videos=0, frame_cache=None
) -> dict:
    dataset = PairVideoDataset(
        pairs, model.frame_spec, decode_threads=1, cache_videos=cache_videos, frame_cache=frame_cache
    )
    if frame_cache is not None:  # warm: an earlier epoch, or an earlier run on a snapshot with these videos
        for index in range(len(dataset)):
            dataset[index]
    collator = RewardBatchCollator(model.processor())
    batch = collator([dataset[i] for i in range(batch_size)])
    train_rate = train_pairs_per_second(model, batch, train_steps)  # first: no loader workers alive yet
    loader_rate = loader_pairs_per_second(dataset, collator, batch_size, workers, loader_batches)
    result = {
        "train_pairs_per_s": train_rate,
        "loader_pairs_per_s": loader_rate,
        "loader_to_model_ratio": loader_rate / train_rate,
        "batch_size": batch_size,
        "loader_workers": workers,
        "cache_videos": cache_videos,
        "frame_cache": frame_cache is not None,
        "frames_per_video": int(dataset[0]["video_a"].shape[0]),
        "frame_size": list(dataset[0]["video_a"].shape[2:]),
    }
    print(
        f"{name:<28} train {train_rate:8.1f} pairs/s   loader ({workers} workers) {loader_rate:8.1f} pairs/s   "
        f"ratio {result['loader_to_model_ratio']:.2f}"
    )
    return result


def best_interleaved(variants: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """The best of ``repeats`` timings (s) of each variant, the variants taking turns within every round so
    that a noisy neighbour slows them alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def decode_speedup(paths: list[Path], spec, repeats: int = 3) -> dict:
    """Videos/s of ``read_video_frames`` skipping unwanted non-reference frames, as a ratio to decoding
    every frame up to the last wanted one; the best of ``repeats`` interleaved rounds each."""

    def decode_all(skip: bool) -> None:
        for path in paths:
            read_video_frames(path, spec, threads=1, skip_nonreference=skip)

    best = best_interleaved({"every": lambda: decode_all(False), "skipping": lambda: decode_all(True)}, repeats)
    every, skipping = len(paths) / best["every"], len(paths) / best["skipping"]
    print(
        f"{'decode, real videos':<28} every frame {every:6.1f} videos/s   skipping non-reference {skipping:6.1f} "
        f"videos/s   ratio {skipping / every:.2f}"
    )
    return {
        "videos_per_s_every_frame": every,
        "videos_per_s_skipping": skipping,
        "speedup": skipping / every,
        "videos": len(paths),
    }


def frame_cnn_memory_format(model, batch, repeats: int = 5, steps: int = 3) -> dict:
    """Forward and backward steps/s of the small backbone's frame CNN on a batch's frames (both videos of
    each pair, with their motion channels) in channels-last layout, as a ratio to contiguous NCHW; the best
    of ``repeats`` interleaved rounds each."""
    from alignment.reward.small import with_motion

    frames = with_motion(batch["inputs"]["frames"]).flatten(0, 1).contiguous()
    layouts = {"contiguous": frames, "channels_last": frames.contiguous(memory_format=torch.channels_last)}
    cnn = model.backbone.frame_cnn

    def steps_on(inputs: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            for _ in range(steps):
                cnn(inputs).sum().backward()

        return run

    for inputs in layouts.values():
        cnn(inputs).sum().backward()  # warm-up: oneDNN picks its kernels for each layout
    best = best_interleaved({name: steps_on(inputs) for name, inputs in layouts.items()}, repeats)
    contiguous, channels_last = steps / best["contiguous"], steps / best["channels_last"]
    print(
        f"{'frame CNN fwd+bwd':<28} contiguous {contiguous:6.2f} steps/s   channels-last {channels_last:6.2f} "
        f"steps/s   ratio {channels_last / contiguous:.2f}"
    )
    return {
        "steps_per_s_contiguous": contiguous,
        "steps_per_s_channels_last": channels_last,
        "speedup": channels_last / contiguous,
        "frames": int(frames.shape[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "reward.json"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {"cpu_count": os.cpu_count(), "torch_threads": args.threads}
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        (temp / "toy").mkdir()
        study = ToyStudyConfig(output_dir=str(temp / "study"))  # the model as reward-toy-study trains it
        small = RewardModel(train_config_for(study, VARIANTS[MAIN_VARIANT], temp).model)
        toy = toy_pairs(temp / "toy")
        results["small_backbone_32px"] = measure(
            f"small backbone, 32x32x{study.frames}",
            small,
            toy,
            batch_size=16,
            workers=args.workers,
            loader_batches=12,
            train_steps=10,
        )
        toy_dataset = PairVideoDataset(toy, small.frame_spec, decode_threads=1)
        toy_batch = RewardBatchCollator(small.processor())([toy_dataset[i] for i in range(16)])
        results["small_frame_cnn_channels_last"] = frame_cnn_memory_format(small, toy_batch)
        results["small_backbone_32px_cached"] = measure(
            "  same, cache_videos=1024",
            small,
            toy,
            batch_size=16,
            workers=args.workers,
            loader_batches=12,
            train_steps=10,
            cache_videos=1024,
        )
        if SAMPLES.is_dir():
            folder = build_tiny_qwen2vl(temp / "qwen")
            qwen = RewardModel(
                RewardModelConfig(
                    backbone="qwen2vl", backbone_path=str(folder), lora_rank=8, lora_alpha=16, max_frames=8
                )
            )
            pairs = read_videoalign_csv(SAMPLES / "example.csv")
            results["tiny_qwen2vl_samples_448px"] = measure(
                "tiny Qwen2-VL, real videos",
                qwen,
                pairs,
                batch_size=2,
                workers=args.workers,
                loader_batches=4,
                train_steps=3,
            )
            results["tiny_qwen2vl_samples_448px_frame_cache"] = measure(
                "  same, frame cache warm",
                qwen,
                pairs,
                batch_size=2,
                workers=args.workers,
                loader_batches=4,
                train_steps=3,
                frame_cache=temp / "frames",
            )
            results["decode_samples_448px"] = decode_speedup(
                sorted((SAMPLES / "videos").glob("*.mp4")), qwen.frame_spec
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"bench/reward.py: results in {out}")


if __name__ == "__main__":
    main()
