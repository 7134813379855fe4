"""Evidence that ordering the labelling queue by the reward model's uncertainty pays: a pool-based study.

The web app queues generated pairs with priority 1/(1 + |Δr|), so annotators judge first the pairs the
current reward model can least tell apart. This study measures whether that reaches a given reward
accuracy with fewer judgments than labelling in random order:

1. the toy base policy samples a **pool** of pairs on the training prompts (two seeds of one prompt each)
   and a **held-out** set on other prompts; simulated annotators judge the pool (their majority is what
   a labeller would deliver), the held-out pairs carry the oracle's own verdict (the truth);
2. both strategies start from the same random ``initial`` labelled pairs; each round a latent reward
   model (``alignment.flow.latent_reward``, the same trainer and budget every round) trains from scratch on
   the pairs labelled so far, its accuracy without ties on the held-out pairs (σ = 0, per dimension and
   their mean) is recorded, and
   ``batch`` more pool pairs are labelled: at **random**, or those with the smallest |Δr| under the model
   just trained (**uncertainty**; r the sum of the normalised VQ, MQ, TA rewards of the clean latents);
3. repeated over ``repeats`` seeds (a different initial set and annotators each), averaged.

    python -m alignment active-learning-study --output-dir runs/active-learning [--quick] [--base-policy DIR]
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from alignment.config import start_study

RESULT_FILE = "result.json"
STRATEGIES = ("random", "uncertainty")


@dataclass
class ActiveLearningConfig:
    output_dir: str
    base_policy: str | None = None  # a toy base policy folder; default output_dir/base-policy
    quick_policy: bool = False
    # the pool and the held-out pairs
    pool_prompts: int = 96
    pool_pairs_per_prompt: int = 8  # a pool well beyond what is labelled, as a queue of generated pairs is
    heldout_prompts: int = 32
    heldout_pairs_per_prompt: int = 4
    annotators_per_pair: int = 3  # judgments per labelled pair
    pool_size: int = 20
    annotator_mix: dict[str, float] | None = None
    sample_steps: int = 12
    guidance_scale: float = 1.0
    sample_batch_size: int = 64
    # the rounds
    initial: int = 32  # labelled pairs before the first round, the same for both strategies
    batch: int = 32  # pairs labelled per round
    rounds: int = 8
    repeats: int = 2
    # the reward model, retrained from scratch every round
    num_layers: int = 1
    reward_steps: int = 150
    reward_batch_size: int = 32
    reward_learning_rate: float = 3e-4
    seed: int = 0
    progress: bool = True

    @classmethod
    def quick(cls, output_dir: str, **overrides) -> "ActiveLearningConfig":
        """A small study for tests: the quick base policy, a small pool, two rounds."""
        values = dict(quick_policy=True, pool_prompts=24, pool_pairs_per_prompt=2, heldout_prompts=8,
                      heldout_pairs_per_prompt=2, initial=8, batch=8, rounds=2, repeats=1, reward_steps=20)
        values.update(overrides)
        return cls(output_dir=output_dir, **values)


def build_pool(config: ActiveLearningConfig, base_policy: Path, *, log=print) -> Path:
    """The pool (split ``train``, annotators' labels) and held-out pairs (split ``val``, the oracle's), as a
    snapshot of base-policy pairs (``alignment.flow.toy_study.build_preference_snapshot``)."""
    from alignment.flow.toy_study import FlowToyStudyConfig, build_preference_snapshot
    from alignment.toyworld import all_prompts

    prompts = [str(p) for p in all_prompts()]
    if config.pool_prompts + config.heldout_prompts > len(prompts):
        raise ValueError(f"pool_prompts {config.pool_prompts} + heldout_prompts {config.heldout_prompts}: at most "
                         f"{len(prompts)} toy prompts together")
    order = np.random.default_rng(config.seed).permutation(len(prompts))
    heldout = [prompts[i] for i in order[: config.heldout_prompts]]
    pool = [prompts[i] for i in order[config.heldout_prompts: config.heldout_prompts + config.pool_prompts]]
    folder = Path(config.output_dir) / "pool"
    if folder.exists():
        return folder
    data = FlowToyStudyConfig(output_dir=config.output_dir, annotators_per_pair=config.annotators_per_pair,
                              pool_size=config.pool_size, annotator_mix=config.annotator_mix,
                              sample_steps=config.sample_steps, guidance_scale=config.guidance_scale,
                              sample_batch_size=config.sample_batch_size, seed=config.seed, progress=config.progress)
    # pairs_per_prompt is one number there: sample the larger count and keep what each side asks for
    data.pairs_per_prompt = max(config.pool_pairs_per_prompt, config.heldout_pairs_per_prompt)
    snapshot, _ = build_preference_snapshot(data, base_policy, {"train": pool, "val": heldout}, folder=folder,
                                            oracle_label_splits=("val",), log=log)
    return snapshot


def _subset_snapshot(pool_rows: list, labelled: np.ndarray, heldout_rows: list, folder: Path, media_root: Path) -> Path:
    """A snapshot of the labelled pool pairs (train) and the held-out pairs (val); the videos stay in the pool's."""
    from alignment.data import write_snapshot

    rows = [{**pool_rows[i].as_row(), "split": "train"} for i in labelled] + \
           [{**row.as_row(), "split": "val"} for row in heldout_rows]
    return write_snapshot(rows, folder, filters={"active_learning": {"media_root": str(media_root)}})


def uncertainty(model_folder: Path, pairs: list, cache, policy) -> np.ndarray:
    """|Δr| of each pair under a trained latent reward: r the mean of its normalised VQ, MQ, TA at σ = 0."""
    from alignment.flow.latent_reward import load_latent_reward

    std = load_latent_reward(model_folder).reward_std.numpy()
    return np.abs((margins(model_folder, pairs, cache, policy) / std).sum(axis=1))


def margins(model_folder: Path, pairs: list, cache, policy) -> np.ndarray:
    """Raw reward margins r_A − r_B (N, 3) of pairs under a trained latent reward, at σ = 0."""
    import torch

    from alignment.flow.cache import sha256_text
    from alignment.flow.latent_reward import load_latent_reward

    model = load_latent_reward(model_folder)
    out = []
    with torch.no_grad():
        for start in range(0, len(pairs), 64):
            chunk = pairs[start:start + 64]
            text = policy.pad_text([cache.text.get(sha256_text(pair.prompt)) for pair in chunk])
            zeros = torch.zeros(len(chunk))
            a, b = (model(torch.stack([cache.latents.get(cache.video_keys[getattr(pair, side)]) for pair in chunk]),
                          zeros, text) for side in ("video_a", "video_b"))
            out.append(a - b)
    return torch.cat(out).numpy() if out else np.zeros((0, 3))


def heldout_accuracy(model_folder: Path, heldout: list, cache, policy) -> dict:
    """Accuracy without ties per dimension on the held-out pairs (their oracle labels), and the mean."""
    from alignment.data.records import DIMENSIONS
    from alignment.metrics import accuracy_without_ties

    margin = margins(model_folder, heldout, cache, policy)
    labels = np.array([pair.labels for pair in heldout])
    by_dimension = {dim: accuracy_without_ties(labels[:, d], margin[:, d]) for d, dim in enumerate(DIMENSIONS)}
    return {"mean": float(np.nanmean(list(by_dimension.values()))), **by_dimension}


def run_active_learning_study(config: ActiveLearningConfig, *, log=print) -> dict:
    """Run the study; returns the result (also ``output_dir/result.json``)."""
    from alignment.data import read_snapshot
    from alignment.flow.cache import build_cache
    from alignment.flow.config import LatentRewardConfig
    from alignment.flow.latent_reward import labelled_pairs, train_latent_reward
    from alignment.flow.model import load_policy
    from alignment.flow.toy_policy import ensure_toy_base_policy

    output_dir = start_study(config, "active_learning_config.json", taken_by=RESULT_FILE, what="a finished study")
    started = time.perf_counter()
    base_policy = ensure_toy_base_policy(config.base_policy or output_dir / "base-policy", quick=config.quick_policy,
                                         progress=config.progress).resolve()
    snapshot = read_snapshot(build_pool(config, base_policy, log=log))
    keep = {"train": config.pool_pairs_per_prompt, "val": config.heldout_pairs_per_prompt}
    seen: dict[tuple[str, str], int] = {}
    kept = {"train": [], "val": []}
    for pair in snapshot.pairs:  # the first pairs of each prompt, as many as each side asks for
        key = (pair.split, pair.prompt)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= keep[pair.split]:
            kept[pair.split].append(pair)
    pool, heldout = labelled_pairs(kept["train"]), kept["val"]
    needed = config.initial + config.batch * (config.rounds - 1)
    if needed > len(pool):
        raise ValueError(f"initial {config.initial} + {config.rounds - 1} rounds × batch {config.batch} = {needed} "
                         f"labelled pairs, but the pool has {len(pool)}; enlarge the pool or take fewer rounds")
    policy = load_policy(base_policy)
    cache_dir = output_dir / "cache"
    everything = pool + heldout
    cache = build_cache(policy, [p.prompt for p in everything], [v for p in everything for v in (p.video_a, p.video_b)],
                        cache_dir=cache_dir, roots=[snapshot.root], progress=config.progress)
    log(f"pool of {len(pool)} judged pairs, {len(heldout)} held-out pairs with the oracle's labels "
        f"({time.perf_counter() - started:.0f} s so far)")

    curves = {strategy: [] for strategy in STRATEGIES}  # per repeat: [(judgments, accuracy by dimension), ...]
    for repeat in range(config.repeats):
        rng = np.random.default_rng(config.seed + 100 + repeat)
        initial = rng.choice(len(pool), size=config.initial, replace=False)
        for strategy in STRATEGIES:
            labelled, curve = list(initial), []
            for round_index in range(config.rounds):
                # round 0 trains on the initial pairs alone: one run serves both strategies
                name = f"r{repeat}-initial" if round_index == 0 else f"r{repeat}-{strategy}-{round_index:02d}"
                run_dir = output_dir / "runs" / name
                metrics_file = run_dir / "reward" / "metrics.json"
                if metrics_file.is_file():  # an interrupted study resumes at its first unfinished round
                    metrics = json.loads(metrics_file.read_text())
                else:
                    if run_dir.exists():  # a round cut off half-way starts again
                        shutil.rmtree(run_dir)
                    subset = _subset_snapshot(pool, np.array(labelled), heldout, run_dir / "snapshot", snapshot.root)
                    metrics = train_latent_reward(LatentRewardConfig(
                        output_dir=str(run_dir / "reward"), policy=str(base_policy), snapshot=str(subset),
                        media_root=str(snapshot.root), cache_dir=str(cache_dir), num_layers=config.num_layers,
                        batch_size=config.reward_batch_size, epochs=10_000, max_steps=config.reward_steps,
                        learning_rate=config.reward_learning_rate, warmup_steps=max(1, config.reward_steps // 20),
                        lr_schedule="cosine", mixed_precision="no", max_eval_items=None, keep_checkpoints=1,
                        seed=config.seed + repeat, progress=False))
                accuracy = heldout_accuracy(Path(metrics["final"]), heldout, cache, policy)
                curve.append({"pairs": len(labelled), "judgments": len(labelled) * config.annotators_per_pair,
                              "accuracy": accuracy["mean"], "by_dimension": accuracy})
                log(f"  repeat {repeat} {strategy:<11} round {round_index}: {len(labelled)} pairs labelled, "
                    f"held-out accuracy {100 * accuracy['mean']:.1f} % (" +
                    ", ".join(f"{d} {100 * a:.1f}" for d, a in accuracy.items() if d != "mean") + ")")
                if round_index == config.rounds - 1:
                    break
                unlabelled = np.setdiff1d(np.arange(len(pool)), labelled)
                if strategy == "random":
                    chosen = rng.choice(unlabelled, size=config.batch, replace=False)
                else:
                    margins = uncertainty(Path(metrics["final"]), [pool[i] for i in unlabelled], cache, policy)
                    chosen = unlabelled[np.argsort(margins, kind="stable")[: config.batch]]
                labelled.extend(int(i) for i in chosen)
            curves[strategy].append(curve)
    result = {"config": asdict(config), "base_policy": str(base_policy), "pool_pairs": len(pool),
              "heldout_pairs": len(heldout), "curves": curves, "mean": mean_curves(curves),
              "seconds": time.perf_counter() - started}
    result["judgments_saved"] = judgments_saved(result["mean"])
    (output_dir / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def mean_curves(curves: dict) -> dict:
    """Per strategy: judgments and the accuracy averaged over the repeats, round by round."""
    def mean_of(runs, k, key):
        return float(np.mean([run[k]["by_dimension"][key] if key != "accuracy" else run[k]["accuracy"] for run in runs]))

    return {strategy: [{"judgments": runs[0][k]["judgments"], "accuracy": mean_of(runs, k, "accuracy"),
                        **({dim: mean_of(runs, k, dim) for dim in ("VQ", "MQ", "TA")}
                           if "by_dimension" in runs[0][k] else {})}
                       for k in range(len(runs[0]))]
            for strategy, runs in curves.items()}


def judgments_saved(mean: dict) -> dict:
    """For each accuracy random order reaches: the judgments uncertainty needs to reach it first, as a share of
    random's (the first round where its accuracy is at least as high; None when it never gets there)."""
    out = []
    for point in mean["random"][1:]:
        reached = next((p["judgments"] for p in mean["uncertainty"] if p["accuracy"] >= point["accuracy"]), None)
        out.append({"accuracy": point["accuracy"], "random_judgments": point["judgments"],
                    "uncertainty_judgments": reached,
                    "ratio": reached / point["judgments"] if reached is not None else None})
    return {"points": out}


def format_table(result: dict) -> str:
    mean = result["mean"]
    lines = [f"Held-out reward accuracy (%, without ties, vs the oracle) by judgments collected; mean of "
             f"{result['config']['repeats']} repeats; pool {result['pool_pairs']} pairs, {result['heldout_pairs']} "
             "held-out pairs; mean of VQ, MQ, TA (per dimension in brackets)", "",
             "judgments | random | uncertainty", "--- | --- | ---"]

    def cell(point):
        dims = "/".join(f"{100 * point[d]:.0f}" for d in ("VQ", "MQ", "TA") if d in point)
        return f"{100 * point['accuracy']:.1f}" + (f" ({dims})" if dims else "")

    for random_point, uncertain_point in zip(mean["random"], mean["uncertainty"]):
        lines.append(f"{random_point['judgments']} | {cell(random_point)} | {cell(uncertain_point)}")
    lines += ["", "judgments uncertainty needs to reach random order's accuracy:"]
    for point in result["judgments_saved"]["points"]:
        reached = (f"{point['uncertainty_judgments']} ({point['ratio']:.2f}×)" if point["ratio"] is not None
                   else "not reached")
        lines.append(f"  {100 * point['accuracy']:.1f} %: random {point['random_judgments']}, uncertainty {reached}")
    return "\n".join(lines)
