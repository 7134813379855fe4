"""Flow-NRG's cost: the time of reward-guided sampling as a ratio to unguided sampling of the same clips,
both with classifier-free guidance. Goal: ≤ 1.5×.

Unguided, a step runs the policy forward on 2B latents (conditional and unconditional). Guidance adds a
forward and a backward of the latent reward model — the policy's first K blocks — on B latents, so the
expected ratio is about 1 + 3K / (2L) for a policy of L blocks (Wan 2.1 1.3B has 30; K = 2 costs ≈ 1.1).
The bench builds a Wan transformer with ``build_tiny_wan_policy`` (wider than the tests': 576 tokens a
clip, ``--layers`` blocks) and a latent reward of ``--reward-layers`` blocks copied from it, and times
``sample_latents`` both ways, alternated in one process so that the load of a shared machine hits both
alike: the median run, on the CPU the process's CPU time (one thread by default), on a GPU the wall time.

    .venv/bin/python bench/guidance.py [--out bench/results/guidance.json] [--layers 8] [--reward-layers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = {"num_heads": 2, "head_dim": 32, "text_dim": 64, "pixel_patch": 2}  # 576 tokens a clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "guidance.json"))
    parser.add_argument("--layers", type=int, default=8, help="the policy's transformer blocks (L)")
    parser.add_argument("--reward-layers", type=int, default=2, help="the latent reward's blocks (K)")
    parser.add_argument("--clips", type=int, default=2, help="clips sampled together")
    parser.add_argument("--steps", type=int, default=10, help="sampling steps of a run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each kind after a warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    args = parser.parse_args()

    import torch

    from alignment.flow import load_policy
    from alignment.flow.guidance import reward_guidance
    from alignment.flow.latent_reward import LatentRewardModel
    from alignment.flow.sample import initial_noise, sample_latents
    from alignment.flow.tiny import build_tiny_wan_policy

    torch.set_num_threads(args.threads)
    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    with tempfile.TemporaryDirectory() as temp:
        folder = build_tiny_wan_policy(Path(temp) / "policy", num_layers=args.layers, **MODEL)
        policy = load_policy(folder, device=device, dtype=torch.bfloat16 if on_gpu else torch.float32)
        latent_reward = LatentRewardModel.from_policy(policy.transformer, args.reward_layers).to(device).eval()
        text = policy.pad_text(policy.encode_prompts(["a red square moving left quickly"])).expand(args.clips, -1, -1)
        negative = policy.pad_text(policy.encode_prompts([""])).expand(args.clips, -1, -1)
        latent_shape = policy.latent_shape()  # the codec loads from the folder
    noise = initial_noise(range(args.clips), latent_shape)
    transforms = {"unguided": None, "guided": reward_guidance(latent_reward, text[:1], weights=(1, 1, 2), scale=100.0)}

    def run(kind: str) -> tuple[float, float]:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        sample_latents(
            policy, text, negative, noise, steps=args.steps, guidance_scale=5.0, velocity_transform=transforms[kind]
        )
        if on_gpu:
            torch.cuda.synchronize()
        return time.perf_counter() - start_wall, time.process_time() - start_cpu

    for kind in transforms:  # warm-up
        run(kind)
    wall, cpu = {kind: [] for kind in transforms}, {kind: [] for kind in transforms}
    for _ in range(args.runs):
        for kind in transforms:
            seconds_wall, seconds_cpu = run(kind)
            wall[kind].append(seconds_wall)
            cpu[kind].append(seconds_cpu)
    timed = wall if on_gpu else cpu
    medians = {kind: statistics.median(values) for kind, values in timed.items()}
    ratio = medians["guided"] / medians["unguided"]
    results = {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "measure": "wall" if on_gpu else "process_cpu",
        "model": {**MODEL, "num_layers": args.layers},
        "reward_layers": args.reward_layers,
        "latent_shape": list(latent_shape),
        "clips": args.clips,
        "steps": args.steps,
        "unguided_seconds": medians["unguided"],
        "guided_seconds": medians["guided"],
        "time_ratio": ratio,
        "goal_time_ratio": 1.5,
        "wall_seconds_all": wall,
        "cpu_seconds_all": cpu,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"bench/guidance.py: {results['device']} {results['measure']}, {args.clips} clips × {args.steps} steps, "
        f"L={args.layers} policy blocks, K={args.reward_layers} reward blocks: unguided "
        f"{medians['unguided']:.2f} s, guided {medians['guided']:.2f} s, time ratio {ratio:.2f} (goal ≤ 1.5); "
        f"results in {out}"
    )


if __name__ == "__main__":
    main()
