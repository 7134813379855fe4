"""Does Flow-GRPO on a VideoReward beat Flow-DPO on the judged pairs, with the same simulated judgments? And
where does reward hacking start? A toy-world study over the flow-toy study's seeds.

Per seed, from a finished ``flow-toy --seeds`` folder (``--flow-toy-dir``; its ``seed-N/`` holds the base policy,
the snapshot of simulated judgments and Flow-DPO's result on the held-out prompts):

1. VideoReward (the small backbone of the reward-toy study) trained on that snapshot — the same judgments
   Flow-DPO learned from;
2. Flow-GRPO (``alignment.flow.grpo_train``) from the same base policy on the snapshot's training prompts,
   rewarded by that VideoReward (VQ + MQ + TA), with a checkpoint every ``checkpoint_every`` steps;
3. the oracle's win rate of the Flow-GRPO policy against the base on the flow-toy study's held-out prompts ×
   seeds (the same clips, same noise), next to Flow-DPO's from ``seed-N/result.json``;
4. reward hacking: at every checkpoint, ``hacking_prompts`` × ``hacking_seeds`` held-out clips scored by the
   VideoReward (what GRPO maximises) and by the oracle (the truth).

The across-seed table (mean and 95 % t-interval, the seed as the unit) uses ``studies.flow_toy.seed_interval``.

    python -m studies grpo-toy --output-dir runs/grpo-toy --flow-toy-dir runs/flow-toy-seeds --seeds 0 1 2 3 4
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

RESULT_FILE = "result.json"
SUMMARY_FILE = RESULT_FILE  # the across-seed summary, next to the seed-N/ folders


@dataclass
class GRPOToyConfig:
    output_dir: str  # a folder: seed-N/ per seed, result.json (the summary)
    flow_toy_dir: str  # a `flow-toy --seeds` folder: its seed-N/ base policy, snapshot and Flow-DPO result
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # seeds of the flow-toy folder to run (finished ones are reused)
    # the reward model (reward-toy's small backbone)
    reward_epochs: int = 10  # training epochs of the VideoReward
    reward_learning_rate: float = 1e-3  # its peak learning rate
    # Flow-GRPO
    steps: int = 100  # optimizer steps
    batch_size: int = 4  # prompts per step
    group_size: int = 4  # samples per prompt
    sample_steps: int = 8  # SDE steps while training
    kl_weight: float = 0.04  # β of the KL to the base
    clip_range: float = 1e-4  # ε of the clipped ratio
    learning_rate: float = 5e-4  # the LoRA's (Flow-DPO's in the flow-toy study)
    lora_rank: int = 16  # as Flow-DPO's
    checkpoint_every: int = 25  # steps between the checkpoints the hacking curve samples
    # measuring
    hacking_prompts: int = 16  # held-out prompts sampled at each checkpoint
    hacking_seeds: int = 2  # seeds per prompt there
    progress: bool = True  # progress bars


def seed_paths(config: GRPOToyConfig, seed: int) -> dict[str, Path]:
    flow = Path(config.flow_toy_dir) / f"seed-{seed}"
    return {
        "flow": flow,
        "base_policy": flow / "base-policy",
        "snapshot": flow / "snapshot",
        "flow_result": flow / RESULT_FILE,
        "out": Path(config.output_dir) / f"seed-{seed}",
    }


def train_reward(config: GRPOToyConfig, snapshot: Path, out: Path, seed: int) -> Path:
    """The small-backbone VideoReward on the snapshot (keep the best epoch on its val prompts)."""
    from alignment.reward.train import RewardTrainConfig, train_reward_model
    from studies.reward_toy import ToyStudyConfig, toy_model_config

    folder = out / "reward"
    if (folder / "model" / "model.safetensors").is_file():
        return folder / "model"
    toy = ToyStudyConfig(output_dir=str(out))
    train_reward_model(
        RewardTrainConfig(
            output_dir=str(folder),
            snapshot=str(snapshot),
            model=toy_model_config(toy),
            learning_rate=config.reward_learning_rate,
            lr_schedule="cosine",
            weight_decay=toy.weight_decay,
            batch_size=toy.batch_size,
            epochs=config.reward_epochs,
            warmup_steps=toy.warmup_steps,
            num_workers=0,
            cache_videos=100_000,
            seed=seed,
            keep_best=True,
            keep_checkpoints=1,
            progress=config.progress,
        )
    )
    return folder / "model"


def train_grpo(config: GRPOToyConfig, paths: dict[str, Path], reward: Path, seed: int) -> Path:
    from alignment.flow.config import FlowGRPOConfig
    from alignment.flow.grpo_train import train_flow_grpo

    folder = paths["out"] / "grpo"
    if not (folder / "final").is_dir():
        train_flow_grpo(
            FlowGRPOConfig(
                output_dir=str(folder),
                policy=str(paths["base_policy"]),
                reward_model=str(reward),
                snapshot=str(paths["snapshot"]),
                group_size=config.group_size,
                sample_steps=config.sample_steps,
                kl_weight=config.kl_weight,
                clip_range=config.clip_range,
                lora_rank=config.lora_rank,
                learning_rate=config.learning_rate,
                batch_size=config.batch_size,
                epochs=10_000,
                max_steps=config.steps,
                save_every_steps=config.checkpoint_every,
                keep_checkpoints=config.steps // config.checkpoint_every + 1,
                max_eval_items=8,
                eval_sample_steps=12,
                mixed_precision="no",
                seed=seed,
                progress=config.progress,
            )
        )
    return folder


def run_seed(config: GRPOToyConfig, seed: int, *, log=print) -> dict:
    """One seed's study (see the module docstring); its result in ``output_dir/seed-N/result.json``."""
    from alignment.checkpoints import checkpoints
    from alignment.reward import load_reward_model
    from alignment.reward.evaluate import score_videos
    from alignment.toyworld import write_mp4
    from studies.flow_toy import FlowToyStudyConfig, sample_policy, scores_with_overall, split_prompts, win_rates

    paths = seed_paths(config, seed)
    for key in ("base_policy", "snapshot", "flow_result"):
        if not paths[key].exists():
            raise FileNotFoundError(
                f"{paths[key]}: missing; run `python -m studies flow-toy --seeds {seed} ...` into --flow-toy-dir first"
            )
    started = time.perf_counter()
    paths["out"].mkdir(parents=True, exist_ok=True)
    flow_result = json.loads(paths["flow_result"].read_text())
    flow_config = FlowToyStudyConfig(**{**flow_result["config"], "seeds": (), "progress": config.progress})
    log(f"seed {seed}: VideoReward on {paths['snapshot']}")
    reward_dir = train_reward(config, paths["snapshot"], paths["out"], seed)
    reward_seconds = time.perf_counter() - started
    log(f"seed {seed}: Flow-GRPO ({config.steps} steps)")
    grpo_dir = train_grpo(config, paths, reward_dir, seed)
    grpo_seconds = time.perf_counter() - started - reward_seconds

    # the held-out clips of the flow-toy study: the same prompts and noise as Flow-DPO's numbers
    splits = split_prompts(flow_config)
    eval_prompts = [prompt for prompt in splits["test"] for _ in range(flow_config.eval_seeds)]
    eval_seeds = [1_000_000 + index for index in range(len(eval_prompts))]
    groups = np.array([index // flow_config.eval_seeds for index in range(len(eval_prompts))])
    base_clips = sample_policy(paths["base_policy"], eval_prompts, eval_seeds, flow_config, desc="sample base")
    base = scores_with_overall(base_clips, eval_prompts)
    grpo = scores_with_overall(
        sample_policy(grpo_dir / "final", eval_prompts, eval_seeds, flow_config, desc="sample grpo"), eval_prompts
    )
    rng = np.random.default_rng(seed + 1)
    vs_base = win_rates(grpo, base, groups, bootstrap=flow_config.bootstrap, rng=rng)

    # reward hacking: the reward model's score and the oracle's over the checkpoints
    reward_model = load_reward_model(reward_dir)
    subset = [i for i in range(len(eval_prompts)) if i % flow_config.eval_seeds < config.hacking_seeds]
    subset = subset[: config.hacking_prompts * config.hacking_seeds]
    prompts = [eval_prompts[i] for i in subset]
    seeds = [eval_seeds[i] for i in subset]

    def scored(clips: np.ndarray, tag: str) -> dict:
        folder = (paths["out"] / "hacking" / tag).resolve()  # score_videos resolves relative paths against roots
        items = [
            (str(write_mp4(clip, folder / f"{i:04d}.mp4", fps=8)), prompt)
            for i, (clip, prompt) in enumerate(zip(clips, prompts))
        ]
        rewards = score_videos(reward_model, items, progress=False).sum(dim=1)
        oracle = scores_with_overall(clips, prompts)[:, 3]
        return {"reward": float(rewards.mean()), "oracle": float(oracle.mean())}

    curve = [{"step": 0, **scored(base_clips[subset], "step-0")}]
    for checkpoint in checkpoints(grpo_dir):
        step = int(checkpoint.name.split("-")[-1])
        clips = sample_policy(checkpoint, prompts, seeds, flow_config, desc=f"sample step {step}")
        curve.append({"step": step, **scored(clips, f"step-{step}")})
    metrics = json.loads((grpo_dir / "metrics.json").read_text())
    result = {
        "seed": seed,
        "config": asdict(config),
        "eval_clips": len(eval_prompts),
        "flow_toy": {"result": str(paths["flow_result"]), "eval_clips": flow_result["eval_clips"]},
        "methods": {
            "flow-grpo": {"description": "Flow-GRPO on the VideoReward", "vs_base": vs_base},
            "flow-dpo": {
                "description": "Flow-DPO on the judged pairs",
                "vs_base": flow_result["methods"]["flow-dpo"]["vs_base"],
            },
        },
        "hacking": curve,
        "grpo_train": [
            {k: entry[k] for k in ("step", "reward_mean", "reward_std", "kl", "clip_fraction") if k in entry}
            for entry in metrics["train_loss"]
        ],
        "seconds": {"reward": reward_seconds, "grpo": grpo_seconds, "total": time.perf_counter() - started},
    }
    (paths["out"] / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_grpo_toy(config: GRPOToyConfig, *, log=print) -> dict:
    """Every seed (finished ones read back), then the across-seed summary in ``output_dir/result.json``."""
    from studies.flow_toy import SCORE_NAMES, seed_interval

    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, Any]] = {}
    for seed in config.seeds:
        done = Path(config.output_dir) / f"seed-{seed}" / RESULT_FILE
        results[seed] = json.loads(done.read_text()) if done.is_file() else run_seed(config, seed, log=log)
    seeds = sorted(results)
    summary: dict[str, Any] = {"seeds": seeds, "config": asdict(replace(config, seeds=tuple(seeds))), "methods": {}}
    for name in ("flow-grpo", "flow-dpo"):
        per_seed = {
            score: [results[s]["methods"][name]["vs_base"][score]["win_rate"] for s in seeds] for score in SCORE_NAMES
        }
        summary["methods"][name] = {
            "description": results[seeds[0]]["methods"][name]["description"],
            "per_seed": per_seed,
            "across": {score: seed_interval(values) for score, values in per_seed.items()},
        }
    differences = [
        results[s]["methods"]["flow-grpo"]["vs_base"]["overall"]["win_rate"]
        - results[s]["methods"]["flow-dpo"]["vs_base"]["overall"]["win_rate"]
        for s in seeds
    ]
    summary["lead"] = {**seed_interval(differences), "per_seed": differences}
    summary["hacking"] = {str(s): results[s]["hacking"] for s in seeds}
    (Path(config.output_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_table(summary: dict) -> str:
    from studies.flow_toy import SCORE_NAMES

    n = len(summary["seeds"])
    lines = [
        f"Oracle win rate (%) against the base, mean [95 % t-interval across {n} seeds]",
        "",
        "method | VQ | MQ | TA | Overall",
        "--- | --- | --- | --- | ---",
    ]
    for entry in summary["methods"].values():
        cells = []
        for score in SCORE_NAMES:
            stats = entry["across"][score]
            interval = f" [{100 * stats['ci_low']:.1f}, {100 * stats['ci_high']:.1f}]" if stats["n"] > 1 else ""
            cells.append(f"{100 * stats['mean']:.1f}{interval}")
        lines.append(f"{entry['description']} | " + " | ".join(cells))
    lead = summary["lead"]
    interval = f" [{100 * lead['ci_low']:+.1f}, {100 * lead['ci_high']:+.1f}]" if lead["n"] > 1 else ""
    lines += ["", f"Flow-GRPO − Flow-DPO, overall: {100 * lead['mean']:+.1f} points{interval}", ""]
    lines += ["Reward hacking (VideoReward's VQ+MQ+TA vs the oracle's overall, held-out clips)", ""]
    for seed, curve in summary["hacking"].items():
        points = ", ".join(f"step {p['step']}: {p['reward']:+.2f} / {p['oracle']:.3f}" for p in curve)
        lines.append(f"seed {seed}: {points}")
    return "\n".join(lines)
