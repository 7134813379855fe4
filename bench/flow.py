"""Flow-DPO's cost over SFT: step time and peak memory of a Flow-DPO step as ratios to an SFT step over
the same number of videos (B pairs = 2B videos). Goal: time ratio ≤ 1.4. And Flow-GRPO's step (LoRA) as a ratio
to Flow-DPO's on the same number of videos: 2B videos in two groups of B, sampled with ``--grpo-steps`` SDE
steps, every noisy step trained with the KL to the reference (``alignment.flow.grpo``); decoding and the
reward model's scoring are left out (they depend on the codec and the reward model, not on the method).

Flow-DPO runs the policy forward and backward on the 2B noised videos, as SFT does, plus one forward of
the reference (the same network with its LoRA disabled, or a frozen copy for a full fine-tune) without
gradients, so the expected time ratio is about 1 + forward / (forward + backward) ≈ 1.3. Both steps are
``alignment.flow.train.step_loss`` + backward + AdamW on a Wan transformer built by
``build_tiny_wan_policy`` (wider than the tests': 576 tokens a video), for LoRA and for a full fine-tune.
Time: the median step, SFT and Flow-DPO steps alternated in one process so that the load of a shared
machine hits both alike; on the CPU the process's CPU time (one thread by default), which other jobs do
not stretch, on a GPU the wall time. Memory: in a fresh process per method, the peak that training adds
over the loaded policy — adapters, optimizer state, a full fine-tune's frozen reference copy, activations
(CUDA: ``max_memory_allocated``; CPU: peak RSS from ``getrusage``, coarser). On a GPU the trainer's
settings apply: bf16 autocast and gradient checkpointing.

    .venv/bin/python bench/flow.py [--out bench/results/flow.json] [--pairs 2] [--steps 8] [--grpo-steps 10]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = {"num_layers": 2, "num_heads": 2, "head_dim": 32, "text_dim": 64, "pixel_patch": 2}  # 576 tokens a video


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def setup(
    policy_folder: str, finetune: str, pairs: int, threads: int, *, methods=("sft", "flow-dpo"), grpo_steps: int = 10
):
    """The policy (LoRA or full, as the trainer sets it up: a full fine-tune's Flow-DPO adds a frozen
    reference copy), an optimizer, one batch per method, and the memory in use once the policy is loaded."""
    import torch

    from alignment.flow import load_policy
    from alignment.flow.train import TRAINERS, step_loss

    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    policy = load_policy(
        policy_folder, device=device, dtype=torch.bfloat16 if on_gpu and finetune == "lora" else torch.float32
    )
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    loaded_bytes = torch.cuda.memory_allocated() if on_gpu else rss_bytes()
    model, reference = policy.transformer, None
    if finetune == "lora":
        policy.add_lora(rank=16)
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
    else:
        import copy

        if "flow-dpo" in methods:
            reference = copy.deepcopy(model).requires_grad_(False).eval()
            if on_gpu:
                reference.to(torch.bfloat16)
        model.requires_grad_(True)
    if on_gpu:
        model.enable_gradient_checkpointing()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    latent_shape = policy.latent_shape()
    text = torch.randn(pairs, policy.max_sequence_length, model.config.text_dim, generator=generator)
    batches = {  # the same number of videos: B pairs, 2B videos
        "flow-dpo": {
            "latents_w": torch.randn(pairs, *latent_shape, generator=generator),
            "latents_l": torch.randn(pairs, *latent_shape, generator=generator),
            "text": text,
        },
        "sft": {"latents": torch.randn(2 * pairs, *latent_shape, generator=generator), "text": torch.cat([text, text])},
    }
    batches = {method: {k: v.to(device) for k, v in batches[method].items()} for method in methods}

    def grpo_step() -> None:
        from alignment.flow.grpo import (
            group_advantages,
            grpo_loss,
            reference_step_mean,
            sample_trajectories,
            step_log_prob,
            trainable_steps,
        )

        videos = 2 * pairs
        noise = torch.randn(videos, *latent_shape, generator=torch.Generator().manual_seed(2))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
            trajectory = sample_trajectories(
                policy, torch.cat([text, text]).to(device), noise, steps=grpo_steps, transformer=model
            )
            rewards = trajectory.final.float().mean(dim=tuple(range(1, trajectory.final.dim())))
            advantages = group_advantages(rewards.cpu(), [i // pairs for i in range(videos)]).to(device)
            steps = trainable_steps(trajectory)
            for k in steps:
                stepped = step_log_prob(policy, trajectory, k, noise_level=0.7, transformer=model)
                reference_mean = reference_step_mean(policy, trajectory, k, noise_level=0.7, lora_model=model)
                parts = grpo_loss(
                    stepped.log_prob,
                    trajectory.log_probs[:, k],
                    advantages,
                    kl_weight=0.04,
                    mean=stepped.mean,
                    reference_mean=reference_mean,
                    std=stepped.std,
                )
                (parts.loss / len(steps)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.synchronize()

    def step(method: str) -> None:
        if method == "flow-grpo":
            return grpo_step()
        config = TRAINERS[method](output_dir="unused", policy=policy_folder, snapshot="unused", finetune=finetune)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
            loss, _ = step_loss(
                config,
                policy,
                model,
                batches[method],
                torch.Generator().manual_seed(1),
                reference=reference,
                lora_model=model if finetune == "lora" else None,
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.synchronize()

    info = {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "latent_shape": list(latent_shape),
        "videos_per_step": 2 * pairs,
    }
    return step, on_gpu, info, loaded_bytes


def time_worker(policy_folder: str, finetune: str, pairs: int, steps: int, threads: int, grpo_steps: int) -> dict:
    """SFT and Flow-DPO steps alternated in one process, so that drifting machine load hits both alike.

    Medians of the wall time and, on the CPU, of the process's CPU time — the ratio's measure there, as
    other jobs on a shared machine stretch the wall time of a step but not the work it does."""
    import statistics

    step, on_gpu, info, _ = setup(policy_folder, finetune, pairs, threads, grpo_steps=grpo_steps)
    methods = ("sft", "flow-dpo", "flow-grpo") if finetune == "lora" else ("sft", "flow-dpo")  # GRPO trains LoRA
    for method in methods:
        step(method)  # warm-up: allocator, kernels, optimizer state
    wall: dict[str, list[float]] = {method: [] for method in methods}
    cpu: dict[str, list[float]] = {method: [] for method in methods}
    for _ in range(steps):
        for method in wall:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            step(method)
            wall[method].append(time.perf_counter() - start_wall)
            cpu[method].append(time.process_time() - start_cpu)
    timed = wall if on_gpu else cpu
    return {
        **info,
        "measure": "wall" if on_gpu else "process_cpu",
        **{f"{m}_step_seconds": statistics.median(v) for m, v in timed.items()},
        **{f"{m}_wall_seconds_all": v for m, v in wall.items()},
        **{f"{m}_cpu_seconds_all": v for m, v in cpu.items()},
    }


def memory_worker(policy_folder: str, method: str, finetune: str, pairs: int, threads: int) -> dict:
    """The peak memory training adds over the loaded policy — adapters, optimizer state, a reference copy,
    activations — in a fresh process (CUDA: max_memory_allocated; CPU: peak RSS)."""
    import torch

    step, on_gpu, info, before = setup(policy_folder, finetune, pairs, threads, methods=(method,))
    for _ in range(2):  # the second step holds the optimizer state too
        step(method)
    peak = torch.cuda.max_memory_allocated() if on_gpu else peak_rss_bytes()
    return {**info, "peak_added_bytes": max(0, peak - before)}


def run_worker(policy_folder: Path, args, *extra: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--policy",
        str(policy_folder),
        "--pairs",
        str(args.pairs),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--grpo-steps",
        str(args.grpo_steps),
        *extra,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"bench/flow.py worker {' '.join(extra)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "flow.json"))
    parser.add_argument("--pairs", type=int, default=2, help="pairs per Flow-DPO step (SFT: twice as many videos)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each method after a warm-up")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on the CPU (1: CPU time then measures the work without thread spinning)",
    )
    parser.add_argument("--grpo-steps", type=int, default=10, help="SDE steps of the Flow-GRPO step's sampling")
    parser.add_argument("--worker", choices=("time", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=("sft", "flow-dpo"), help=argparse.SUPPRESS)
    parser.add_argument("--finetune", default="lora", help=argparse.SUPPRESS)
    parser.add_argument("--policy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "time":
        print(
            json.dumps(time_worker(args.policy, args.finetune, args.pairs, args.steps, args.threads, args.grpo_steps))
        )
        return
    if args.worker == "memory":
        print(json.dumps(memory_worker(args.policy, args.method, args.finetune, args.pairs, args.threads)))
        return

    from alignment.flow.tiny import build_tiny_wan_policy

    results = {
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "pairs_per_step": args.pairs,
        "timed_steps": args.steps,
        "model": MODEL,
        "goal_time_ratio": 1.4,
    }
    with tempfile.TemporaryDirectory() as temp:
        folder = build_tiny_wan_policy(Path(temp) / "policy", **MODEL)
        for finetune in ("lora", "full"):
            timing = run_worker(folder, args, "--worker", "time", "--finetune", finetune)
            memory = {
                method: run_worker(folder, args, "--worker", "memory", "--method", method, "--finetune", finetune)[
                    "peak_added_bytes"
                ]
                for method in ("sft", "flow-dpo")
            }
            time_ratio = timing["flow-dpo_step_seconds"] / timing["sft_step_seconds"]
            memory_ratio = memory["flow-dpo"] / max(1, memory["sft"])
            results[finetune] = {
                **timing,
                "sft_peak_added_bytes": memory["sft"],
                "flow-dpo_peak_added_bytes": memory["flow-dpo"],
                "time_ratio": time_ratio,
                "peak_memory_ratio": memory_ratio,
            }
            if "flow-grpo_step_seconds" in timing:
                results[finetune]["grpo_steps"] = args.grpo_steps
                results[finetune]["grpo_time_ratio_to_dpo"] = grpo_ratio = (
                    timing["flow-grpo_step_seconds"] / timing["flow-dpo_step_seconds"]
                )
                print(
                    f"{finetune:<5} Flow-GRPO {timing['flow-grpo_step_seconds'] * 1e3:7.1f} ms "
                    f"({args.grpo_steps} SDE steps sampled, {args.grpo_steps - 1} trained): {grpo_ratio:.1f}× a "
                    "Flow-DPO step on the same videos"
                )
            print(
                f"{finetune:<5} ({timing['device']} {timing['measure']}, {timing['videos_per_step']} videos/step)  "
                f"SFT {timing['sft_step_seconds'] * 1e3:7.1f} ms {memory['sft'] / 2**20:7.1f} MiB   "
                f"Flow-DPO {timing['flow-dpo_step_seconds'] * 1e3:7.1f} ms {memory['flow-dpo'] / 2**20:7.1f} MiB   "
                f"time ratio {time_ratio:.2f} (goal ≤ 1.4)   peak memory ratio {memory_ratio:.2f}"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"bench/flow.py: LoRA time ratio {results['lora']['time_ratio']:.2f}, peak memory ratio "
        f"{results['lora']['peak_memory_ratio']:.2f}, Flow-GRPO/Flow-DPO step time "
        f"{results['lora']['grpo_time_ratio_to_dpo']:.1f}; results in {out}"
    )


if __name__ == "__main__":
    main()
