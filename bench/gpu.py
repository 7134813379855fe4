"""Real-size training steps: step time and peak memory of one Flow-DPO LoRA step of Wan2.1-T2V-1.3B and one
VideoReward step of Qwen2-VL-2B-Instruct, each with a baseline measured in the same run for a ratio.

The models are the real architectures with random weights (``alignment.real_size``: the published configs in
``alignment/configs/``, nothing downloaded), run through the product's pieces — ``WanFlowPolicy`` with
``add_lora``, ``RewardModel`` with its own processor and collator, the losses of ``alignment.losses``.

Wan (Flow-DPO, LoRA rank 64 on to_q/to_k/to_v/to_out.0, as ``FlowDPOConfig``'s defaults): one pair of
81 × 480 × 832 videos, i.e. latents of 16 × 21 × 60 × 104 (32 760 tokens a video), random prompt embeddings
(1, 512, 4096) in place of UMT5-XXL's output (the trainers read them from their cache); a bf16 base with float32
adapters under bf16 autocast, as ``FlowMethod`` trains LoRA on a GPU. A step: the policy forward and backward on
both videos, the reference forward (adapters off, no gradient), AdamW. Measured: the step with gradient
checkpointing (the trainer's GPU default), the step without it (if it fits), and the policy forward alone
(no gradient) as the baseline.

Qwen2-VL (VideoReward, LoRA 64/128 on the language model, vision tower trained, BT with ties): one pair at
VideoAlign's training input — 2 fps, at most 448 × 448 = 200 704 pixels a frame (its train.sh), which are also
``RewardModelConfig``'s defaults (fps 2, max_frames 32, max_pixels 448²): a 5 s Wan clip (81 frames at 16 fps,
480 × 832) gives 10 frames resized to 336 × 588, 1260 video tokens a video. bf16 weights (VideoAlign's
torch_dtype) under bf16 autocast, batch 1 pair (its per-device batch). Measured: the step without gradient
checkpointing (VideoAlign's setting), with it, and the forward alone as the baseline.

Time: the median of ``--steps`` timed steps after ``--warmup`` (wall clock, synchronised; the forward baseline,
measured first, always gets a warm-up call; on the CPU also the process's CPU time, steadier on a shared
machine). Memory: on a GPU ``torch.cuda.max_memory_allocated`` over each measurement; on the CPU the process's
peak RSS so far (it only grows: read it as an upper bound).

On the CPU (``--cpu-reduced``, automatic without CUDA) the same code runs at a reduced size to show it works: the
real widths but 4 blocks of each stack (Wan's 30, Qwen2-VL's 28 language and 32 vision layers; ``--wan-layers``,
``--qwen-layers``, ``--vision-depth`` set them), Wan latents 16 × 2 × 8 × 8 (5 frames of 64 × 64) with 64 text
tokens, Qwen2-VL on 2 frames of 56 × 56, bf16 weights without autocast (adapters and heads in float32), 1 warm-up
and 2 timed steps. The full depths on the CPU are tests/alignment/test_real_size.py's. CPU numbers say nothing
about a GPU.

    .venv/bin/python bench/gpu.py                      # on a GPU
    .venv/bin/python bench/gpu.py --cpu-reduced        # anywhere, about a minute
    .venv/bin/python bench/gpu.py --only wan --steps 5 --out bench/results/gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from alignment.flow.config import DEFAULT_LORA_TARGETS, FlowDPOConfig  # noqa: E402
from alignment.real_size import (  # noqa: E402
    WAN_SIZE,
    WAN_TEXT_LENGTH,
    build_wan_transformer,
    build_wan_vae,
    flow_dpo_lora_loss,
    parameter_count,
    random_reward_batch,
    reward_pair_loss,
    save_random_qwen2vl,
)
from alignment.reward.config import RewardModelConfig, RewardTrainConfig  # noqa: E402

GIB = 2**30
CPU_DEPTH = 4  # --cpu-reduced: blocks of the Wan transformer, of Qwen2-VL's language model and of its vision tower


class Device:
    """Where the bench runs, and how it synchronises, autocasts and reads peak memory there."""

    def __init__(self, reduced: bool):
        self.cuda = torch.cuda.is_available() and not reduced
        self.torch = torch.device("cuda" if self.cuda else "cpu")
        self.name = torch.cuda.get_device_name() if self.cuda else "cpu"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / GIB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux: KiB

    def allocated_gib(self) -> float:
        if self.cuda:
            return torch.cuda.memory_allocated() / GIB
        import psutil

        return psutil.Process().memory_info().rss / GIB

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def measure(
    device: Device,
    name: str,
    run: Callable[[], None],
    *,
    warmup: int,
    steps: int,
    reset: Callable[[], None] | None = None,
) -> dict:
    """Median wall time of ``steps`` calls of ``run`` after ``warmup`` calls, and the peak memory over all of them.
    Running out of memory is reported, not raised; ``reset`` then clears what the failed call left (gradients)."""
    device.free()
    device.reset_peak()
    times: list[float] = []
    cpu_times: list[float] = []  # the process's CPU time (all threads): on a shared CPU, steadier than the wall
    failure = None
    try:
        for index in range(warmup + steps):
            device.sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            run()
            device.sync()
            if index >= warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
    except torch.OutOfMemoryError as error:
        failure = str(error).splitlines()[0][:100]  # the traceback (and the graph it holds) goes with the block
    if failure is not None:
        if reset is not None:
            reset()
        device.free()
        print(f"  {name:<44} out of memory ({failure})", flush=True)
        return {"name": name, "out_of_memory": failure}
    result = {
        "name": name,
        "seconds": statistics.median(times),
        "all_seconds": times,
        "cpu_seconds": statistics.median(cpu_times),
        "peak_gib": device.peak_gib(),
    }
    cpu = "" if device.cuda else f"   (process CPU time {result['cpu_seconds']:8.3f} s)"
    print(f"  {name:<44} {result['seconds']:8.3f} s   peak {result['peak_gib']:6.2f} GiB{cpu}", flush=True)
    return result


def ratios(results: dict, main: str, baselines: tuple[str, ...]) -> dict:
    out = {}
    for baseline in baselines:
        if "seconds" in results[main] and "seconds" in results[baseline]:
            out[f"{main} / {baseline}"] = results[main]["seconds"] / results[baseline]["seconds"]
    for key, value in out.items():
        print(f"  time ratio {key}: {value:.2f}")
    return out


# --------------------------------------------------------------------------------------------------
# Wan2.1-T2V-1.3B: Flow-DPO with LoRA
# --------------------------------------------------------------------------------------------------


def bench_wan(device: Device, args) -> dict:
    from alignment.flow.model import WanFlowPolicy, WanVAECodec

    size = {"num_frames": 5, "height": 64, "width": 64} if args.cpu_reduced else dict(WAN_SIZE)
    size.pop("fps", None)
    latent_shape = WanVAECodec(build_wan_vae(device="meta")).latent_shape(**size)  # the VAE's config only
    text_length = args.text_length or (64 if args.cpu_reduced else WAN_TEXT_LENGTH)
    overrides = {"num_layers": args.wan_layers} if args.wan_layers else {}
    start = time.perf_counter()
    transformer = build_wan_transformer(dtype=torch.bfloat16, device=device.torch, **overrides)
    built = time.perf_counter() - start
    parameters = parameter_count(transformer)  # before the adapters
    config = FlowDPOConfig(output_dir="-", policy="-", snapshot="-")
    with tempfile.TemporaryDirectory() as folder:  # a policy reads only its defaults there (none: Wan's 81×480×832)
        policy = WanFlowPolicy(Path(folder), transformer, device=device.torch, dtype=torch.bfloat16)
    policy.add_lora(rank=config.lora_rank, alpha=config.lora_alpha, target_modules=DEFAULT_LORA_TARGETS)
    trainable = [p for p in transformer.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.data = parameter.data.float()  # FlowMethod: adapters in float32 over a half-precision base
    transformer.train()
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(0)
    latents_w, latents_l = torch.randn(2, 1, *latent_shape, generator=generator).to(device.torch)
    text = torch.randn(1, text_length, 4096, generator=generator).to(device.torch)
    info = {
        "size": size,
        "latent_shape": list(latent_shape),
        "tokens_per_video": latent_shape[1] * (latent_shape[2] // 2) * (latent_shape[3] // 2),
        "text_shape": list(text.shape),
        "pairs": 1,
        "parameters": parameters,
        "lora_parameters": sum(p.numel() for p in trainable),
        "build_seconds": built,
        "weights_gib": device.allocated_gib(),
    }
    print(
        f"Wan2.1-T2V-1.3B transformer ({info['parameters'] / 1e9:.3f} B parameters, LoRA "
        f"{info['lora_parameters'] / 1e6:.1f} M), one pair of {size['num_frames']}×{size['height']}×{size['width']} "
        f"→ latents {tuple(latent_shape)}, {info['tokens_per_video']} tokens a video, text {tuple(text.shape)}",
        flush=True,
    )

    def step() -> None:
        with device.autocast():
            loss, _ = flow_dpo_lora_loss(policy, latents_w, latents_l, text, generator, beta=config.beta)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def reset() -> None:
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def forward() -> None:
        latents = torch.cat([latents_w, latents_l])
        with device.autocast():
            policy.velocity(latents, torch.full((2,), 0.5, device=device.torch), torch.cat([text, text]))

    results = {}
    # the forward gets a warm-up even on the CPU: the first call pays for setting up the kernels
    results["forward only (policy, 2 videos)"] = measure(
        device, "forward only (policy, 2 videos)", forward, warmup=max(1, args.warmup), steps=args.steps
    )
    transformer.enable_gradient_checkpointing()
    results["step, gradient checkpointing"] = measure(
        device, "step, gradient checkpointing", step, warmup=args.warmup, steps=args.steps, reset=reset
    )
    transformer.disable_gradient_checkpointing()
    results["step, no checkpointing"] = measure(
        device, "step, no checkpointing", step, warmup=args.warmup, steps=args.steps, reset=reset
    )
    info["ratios"] = ratios(
        results, "step, gradient checkpointing", ("forward only (policy, 2 videos)", "step, no checkpointing")
    )
    return {**info, "measurements": list(results.values())}


# --------------------------------------------------------------------------------------------------
# Qwen2-VL-2B-Instruct: VideoReward
# --------------------------------------------------------------------------------------------------


def bench_reward(device: Device, args) -> dict:
    from alignment.reward import RewardModel

    if args.cpu_reduced:
        frames, height, width = 2, 56, 56
    else:  # a Wan clip sampled at 2 fps: 81 frames at 16 fps are 5.06 s → 10 frames
        frames = round(WAN_SIZE["num_frames"] / WAN_SIZE["fps"] * 2.0) // 2 * 2
        height, width = WAN_SIZE["height"], WAN_SIZE["width"]
    overrides = {
        key: value
        for key, value in (("num_hidden_layers", args.qwen_layers), ("vision_depth", args.vision_depth))
        if value
    }
    train = RewardTrainConfig(output_dir="-")
    with tempfile.TemporaryDirectory(dir=args.work_dir) as temp:
        start = time.perf_counter()
        folder = save_random_qwen2vl(Path(temp) / "qwen2-vl-2b-instruct", device=device.torch, **overrides)
        device.free()
        config = RewardModelConfig(backbone="qwen2vl", backbone_path=str(folder), dtype="bfloat16")
        model = RewardModel(config).to(device.torch)
        built = time.perf_counter() - start
        model.train()
        head_names = {"head.weight", "backbone.reward_token_embeddings"}  # RewardMethod.optimizer's groups
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [
                {"params": [p for n, p in named if n not in head_names], "lr": train.learning_rate},
                {
                    "params": [p for n, p in named if n in head_names],
                    "lr": train.head_learning_rate or train.learning_rate,
                },
            ],
            weight_decay=train.weight_decay,
        )
        batch = random_reward_batch(model, pairs=1, num_frames=frames, height=height, width=width)
        inputs = {key: value.to(device.torch) for key, value in batch["inputs"].items()}
        labels = batch["labels"].to(device.torch)
        grid = inputs["video_grid_thw"][0].tolist()
        info = {
            "video": [frames, height, width],
            "grid_thw": grid,
            "video_tokens": int(inputs["video_grid_thw"][0].prod()) // 4,
            "sequence_length": inputs["input_ids"].shape[1],
            "pairs": 1,
            "parameters": sum(p.numel() for n, p in model.named_parameters() if ".lora_" not in n),
            "trainable_parameters": sum(p.numel() for _, p in named),
            "vision_tower_trained": config.train_vision_tower,
            "build_seconds": built,
            "weights_gib": device.allocated_gib(),
        }
        print(
            f"Qwen2-VL-2B VideoReward ({info['parameters'] / 1e9:.3f} B parameters, "
            f"{info['trainable_parameters'] / 1e6:.0f} M trainable), one pair of {frames} frames of "
            f"{height}×{width} → patches {tuple(grid)}, {info['video_tokens']} video tokens, sequence "
            f"{info['sequence_length']}",
            flush=True,
        )

        def step() -> None:
            with device.autocast():
                loss = reward_pair_loss(model, inputs, labels, kind=train.loss, theta=train.theta)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def reset() -> None:
            optimizer.zero_grad(set_to_none=True)

        @torch.no_grad()
        def forward() -> None:
            with device.autocast():
                model(**inputs)

        inner = model.backbone._inner()
        results = {}
        results["forward only (2 videos)"] = measure(
            device, "forward only (2 videos)", forward, warmup=max(1, args.warmup), steps=args.steps
        )
        results["step, no checkpointing"] = measure(
            device, "step, no checkpointing", step, warmup=args.warmup, steps=args.steps, reset=reset
        )
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        results["step, gradient checkpointing"] = measure(
            device, "step, gradient checkpointing", step, warmup=args.warmup, steps=args.steps, reset=reset
        )
        inner.gradient_checkpointing_disable()
        info["ratios"] = ratios(
            results, "step, no checkpointing", ("forward only (2 videos)", "step, gradient checkpointing")
        )
    return {**info, "measurements": list(results.values())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument(
        "--cpu-reduced",
        action="store_true",
        help="run on the CPU at a reduced size (automatic when CUDA is not available)",
    )
    parser.add_argument("--only", choices=("wan", "reward"), help="run one of the two benchmarks")
    parser.add_argument("--steps", type=int, help="timed steps of each measurement (default: 3 on a GPU, 2 on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: 1)")
    parser.add_argument("--text-length", type=int, help="Wan prompt tokens (default: 512 on a GPU, 64 on the CPU)")
    parser.add_argument("--wan-layers", type=int, help="Wan transformer blocks (default: the real 30; 4 on the CPU)")
    parser.add_argument(
        "--qwen-layers", type=int, help="Qwen2-VL language-model layers (default: the real 28; 4 on the CPU)"
    )
    parser.add_argument("--vision-depth", type=int, help="Qwen2-VL vision blocks (default: the real 32; 4 on the CPU)")
    parser.add_argument("--work-dir", help="where the random Qwen2-VL folder (4.4 GB) is written (default: $TMPDIR)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_reduced:
        print("no CUDA device: running --cpu-reduced", flush=True)
        args.cpu_reduced = True
    device = Device(args.cpu_reduced)
    if args.steps is None:
        args.steps = 2 if args.cpu_reduced else 3
    if args.warmup is None:
        args.warmup = 1
    if args.cpu_reduced:
        args.wan_layers = args.wan_layers or CPU_DEPTH
        args.qwen_layers = args.qwen_layers or CPU_DEPTH
        args.vision_depth = args.vision_depth or CPU_DEPTH
    sizes = "CPU-reduced sizes" if args.cpu_reduced else "full size"
    print(
        f"device: {device.name}, torch {torch.__version__}, {sizes}, {args.warmup} warm-up + {args.steps} timed "
        "step(s) each",
        flush=True,
    )
    results: dict = {
        "device": device.name,
        "torch": torch.__version__,
        "cpu_reduced": args.cpu_reduced,
        "steps": args.steps,
        "warmup": args.warmup,
    }
    started = time.perf_counter()
    if args.only in (None, "wan"):
        results["wan_flow_dpo"] = bench_wan(device, args)
        device.free()  # the transformer went with bench_wan's frame
    if args.only in (None, "reward"):
        results["qwen2vl_reward"] = bench_reward(device, args)
        device.free()
    results["total_seconds"] = time.perf_counter() - started
    print(f"total {results['total_seconds']:.0f} s", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
