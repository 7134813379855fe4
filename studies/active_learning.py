"""Evidence that ordering the labelling queue by the reward model's uncertainty pays: a pool-based study.

The web app queues generated pairs with priority 1/(1 + |Δr|), r the VideoReward score (the mean of the
normalised VQ, MQ, TA; ``workers.services.generation``), so annotators judge first the pairs the current
reward model can least tell apart. This study measures whether that reaches a given reward accuracy
with fewer judgments than labelling in random order, with the same model and the same rule:

1. the toy world renders a **pool** of pairs on the training prompts (the queue of generated pairs: two seeds of
   one generator, or with ``policy_p_clean`` a policy that leaves more dimensions clean against the base), a
   fixed **validation** set and a **test** set on prompts training never sees; simulated annotators judge
   the pool and the validation pairs (their majority is what a labeller delivers), the test pairs carry
   the sign of the oracle's score difference (the truth);
2. both strategies start from the same random ``initial`` labelled pairs; each round the small-backbone
   VideoReward trains from scratch on the pairs labelled so far (the same recipe every round, keeping
   the epoch with the best validation accuracy), its accuracy without ties on the test pairs is recorded
   (per dimension and their mean), and ``batch`` more pool pairs are labelled: at **random**; those with the
   smallest |Δr| under the model just trained (**uncertainty**: the queue's rule); or those whose three
   BT-with-ties predictions are the least certain (**entropy**: the sum over VQ, MQ, TA of the entropy of
   P(A ≻ B), P(A = B), P(B ≻ A) at the model's raw margin, θ the loss's); or those a **committee** of
   ``committee_size`` models, trained on the same pairs from other seeds, disagrees on most (the sum over VQ,
   MQ, TA of the spread of their normalised margins: the model's own ignorance, where the first two orders
   read how close the pair is, and a close pair comes back from annotators as a tie);
3. repeated ``repeats`` times (another initial set and training seed each), averaged; each order's gain over
   random order is the paired difference in test accuracy, with a 95 % interval across the repeats.

    python -m studies active-learning --output-dir runs/active-learning [--quick]
"""

from __future__ import annotations

import json
import math
import shutil
import time
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from alignment.config import save_config
from alignment.labels import DIMENSION_NAMES

RESULT_FILE = "result.json"
CONFIG_FILE = "active_learning_config.json"
EXTENDABLE = ("repeats", "rounds", "strategies")  # the runs a study has stay valid with more (or fewer) of these
StrategyName = Literal["random", "uncertainty", "entropy", "committee"]
STRATEGIES: tuple[StrategyName, ...] = typing.get_args(StrategyName)  # random, the baseline every study runs first


@dataclass
class ActiveLearningConfig:
    output_dir: str  # the study's folder: rendered pairs, one snapshot and reward run per round, result.json
    # the world: n_prompts − test_prompts − val_prompts pool prompts × pairs_per_prompt pool pairs
    n_prompts: int = 144  # distinct prompts to render, at most 144
    pairs_per_prompt: int = 32  # pool pairs per prompt (the pool's size)
    test_prompts: int = 24  # the test pairs: the first test_pairs_per_prompt of each
    test_pairs_per_prompt: int = 16  # test pairs per test prompt, labelled by the oracle
    val_prompts: int = 8  # validation prompts: each round keeps its best epoch on their pairs
    val_pairs_per_prompt: int = 12  # validation pairs per validation prompt, judged by the annotators
    frame_size: int = 32  # frame side in pixels
    frames: int = 9  # frames per clip
    p_clean: float = 0.25  # chance that a dimension of a clip has no defect (the base generator)
    policy_p_clean: float | None = None  # set: policy-vs-base pairs, one clip from a generator this often clean
    annotators_per_pair: int = 3  # judgments per labelled pair
    pool_size: int = 20  # simulated annotators in the pool
    annotator_mix: dict[str, float] | None = None  # kinds' shares, e.g. {"careful": 1}; None: toyworld.DEFAULT_MIX
    # the rounds
    initial: int = 256  # labelled pool pairs before the first round, the same for every strategy
    batch: int = 256  # pool pairs labelled per round
    rounds: int = 6  # labelling rounds (the first trains on the initial pairs)
    repeats: int = 1  # repeats with other initial pairs; the curve is their mean
    strategies: tuple[StrategyName, ...] = STRATEGIES  # labelling orders, random (the baseline) first; add one later
    # VideoReward (the small backbone of the reward-toy study), retrained from scratch every round
    hidden_size: int = 64  # width of the small backbone
    num_layers: int = 1  # per stage of the small backbone: spatial, temporal, reward queries
    num_heads: int = 4  # attention heads of the small backbone
    tubelet: tuple[int, int, int] = (1, 8, 8)  # frames, height and width of a video token
    frame_cnn_channels: int = 32  # TA also reads each frame through a small CNN (shapes); 0: tubelets only
    ta_time_basis: int = 3  # TA reads time through the mean, trend and curvature of the frames (0: a weight per frame)
    epochs: int = 6  # training epochs a round, at least
    min_steps: int = 480  # small labelled sets get more epochs, so that every round trains at least this long
    batch_size: int = 16  # pairs per step
    learning_rate: float = 1e-3  # peak learning rate (cosine schedule)
    weight_decay: float = 0.01  # AdamW's
    warmup_steps: int = 30  # linear warm-up steps
    theta: float = 5.0  # the tie parameter of BT with ties
    committee_size: int = 3  # models the committee order trains each round: the evaluated one and this − 1 more
    seed: int = 0  # seed of the pool, the annotators and training
    progress: bool = True  # progress bars

    @classmethod
    def quick(cls, output_dir: str, **overrides) -> ActiveLearningConfig:
        """A small study for tests: a small pool, two rounds, short training."""
        values: dict[str, Any]  # the fields' own types
        values = dict(
            n_prompts=24,
            pairs_per_prompt=4,
            test_prompts=4,
            test_pairs_per_prompt=4,
            val_prompts=2,
            val_pairs_per_prompt=4,
            initial=16,
            batch=16,
            rounds=2,
            epochs=2,
            min_steps=4,
            warmup_steps=2,
            frame_cnn_channels=8,
        )
        values.update(overrides)
        return cls(output_dir=output_dir, **values)

    def check(self) -> None:
        unknown = [name for name in self.strategies if name not in STRATEGIES]
        if (
            unknown
            or not self.strategies
            or self.strategies[0] != "random"
            or len(set(self.strategies)) < len(self.strategies)
        ):
            raise ValueError(
                f"strategies {list(self.strategies)}: give random (the baseline) first, then any of "
                f"{', '.join(STRATEGIES[1:])}, each once"
            )
        pool_pairs = (self.n_prompts - self.test_prompts - self.val_prompts) * self.pairs_per_prompt
        needed = self.initial + self.batch * (self.rounds - 1)
        for name in ("test_pairs_per_prompt", "val_pairs_per_prompt"):
            if getattr(self, name) > self.pairs_per_prompt:
                raise ValueError(f"{name}={getattr(self, name)} exceeds pairs_per_prompt={self.pairs_per_prompt}")
        if self.rounds < 1 or self.repeats < 1 or self.initial < 1 or self.batch < 1:
            raise ValueError("rounds, repeats, initial and batch must each be at least 1")
        if self.committee_size < 2:
            raise ValueError(f"committee_size={self.committee_size}: a committee needs at least 2 models to disagree")
        if needed > pool_pairs:
            raise ValueError(
                f"initial {self.initial} + {self.rounds - 1} rounds × batch {self.batch} = {needed} "
                f"labelled pairs, but the pool has {pool_pairs}; raise pairs_per_prompt or take fewer "
                "rounds"
            )


@dataclass
class Pool:
    """The rendered pairs: rows ready for a snapshot (labels: the annotators' majority, or the oracle's
    sign on test pairs), the indices of the pool, validation and test pairs among them, and the oracle's
    VQ, MQ, TA score differences A − B ``(N, 3)``."""

    rows: list[dict]
    pool: np.ndarray
    val: np.ndarray
    test: np.ndarray
    media_root: Path
    differences: np.ndarray


def rendered_pairs(config: ActiveLearningConfig, media_root: Path) -> list[dict]:
    """One row per pair (``prompt``, ``generator_a``, ``generator_b``, ``scores_a``, ``scores_b``): rendered into
    ``media_root`` the first time, read back from its manifest and oracle scores when a study resumes."""
    from alignment.toyworld import export_pairs, make_pairs

    manifest, oracle_file = media_root / "manifest.jsonl", media_root / "oracle.jsonl"
    if not (manifest.is_file() and oracle_file.is_file()):
        pairs = make_pairs(
            config.n_prompts,
            config.pairs_per_prompt,
            config.seed,
            size=config.frame_size,
            frames=config.frames,
            p_clean=config.p_clean,
            policy_p_clean=config.policy_p_clean,
        )
        export_pairs(pairs, media_root)
        return [
            {
                "prompt": str(pair.prompt),
                "generator_a": pair.a.generator,
                "generator_b": pair.b.generator,
                "scores_a": dict(pair.a.scores),
                "scores_b": dict(pair.b.scores),
            }
            for pair in pairs
        ]
    scores = {row["video"]: row for row in map(json.loads, oracle_file.read_text().splitlines())}
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    expected = config.n_prompts * config.pairs_per_prompt
    if len(rows) != expected:
        raise ValueError(
            f"{manifest}: {len(rows)} pairs, but this study renders {expected}; it belongs to another "
            "study: pick a new --output-dir"
        )
    return [
        {
            "prompt": row["prompt"],
            "generator_a": row["generator_a"],
            "generator_b": row["generator_b"],
            **{
                f"scores_{side}": {d.lower(): scores[row[f"video_{side}"]][d.lower()] for d in DIMENSION_NAMES}
                for side in "ab"
            },
        }
        for row in rows
    ]


def build_pool(config: ActiveLearningConfig, *, log=print) -> Pool:
    """Render the pairs once (``output_dir/toy``), judge the pool and validation pairs, split by prompt."""
    from studies.reward_toy import assign_splits, judge_pairs, majority_labels

    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    media_root = Path(config.output_dir) / "toy"
    pairs = rendered_pairs(config, media_root)
    prompts = [pair["prompt"] for pair in pairs]
    split_of = assign_splits(prompts, test_prompts=config.test_prompts, val_prompts=config.val_prompts, rng=rng)
    differences = np.array(
        [[pair["scores_a"][d.lower()] - pair["scores_b"][d.lower()] for d in DIMENSION_NAMES] for pair in pairs]
    )
    votes, _ = judge_pairs(
        differences,
        annotators_per_pair=config.annotators_per_pair,
        pool_size=config.pool_size,
        mix=config.annotator_mix,
        rng=rng,
    )
    labels = majority_labels(votes)
    rank = np.arange(len(pairs)) % config.pairs_per_prompt  # make_pairs keeps each prompt's pairs together
    splits = np.array([split_of[prompt] for prompt in prompts])
    test = np.flatnonzero((splits == "test") & (rank < config.test_pairs_per_prompt))
    val = np.flatnonzero((splits == "val") & (rank < config.val_pairs_per_prompt))
    pool = np.flatnonzero(splits == "train")
    labels[test] = np.sign(differences[test]).astype(labels.dtype)  # the truth, to measure against
    rows = [
        {
            "pair_id": index,
            "prompt": prompts[index],
            "video_a": f"videos/{index:05d}_a.mp4",
            "video_b": f"videos/{index:05d}_b.mp4",
            "generator_a": pair["generator_a"],
            "generator_b": pair["generator_b"],
            "fps_a": 8.0,
            "num_frames_a": config.frames,
            "fps_b": 8.0,
            "num_frames_b": config.frames,
            **{dim.lower(): int(labels[index, d]) for d, dim in enumerate(DIMENSION_NAMES)},
            "n_judgments": config.annotators_per_pair,
        }
        for index, pair in enumerate(pairs)
    ]
    log(
        f"{len(pairs)} pairs ready in {time.perf_counter() - started:.0f} s: a pool of {len(pool)} pairs on "
        f"{len(set(prompts[i] for i in pool))} prompts, {len(val)} validation pairs (judged), {len(test)} test pairs "
        "on held-out prompts (the oracle's labels)"
    )
    return Pool(rows, pool, val, test, media_root, differences)


def round_snapshot(data: Pool, labelled: np.ndarray, folder: Path) -> Path:
    """A snapshot of the labelled pool pairs (train) and the validation pairs (val); videos stay in the pool's."""
    from alignment.data import write_snapshot

    rows = [{**data.rows[i], "split": "train"} for i in data.pool[labelled]] + [
        {**data.rows[i], "split": "val"} for i in data.val
    ]
    return write_snapshot(rows, folder, filters={"active_learning": {"media_root": str(data.media_root)}})


def train_config_for(
    config: ActiveLearningConfig, snapshot: Path, media_root: Path, run_dir: Path, labelled: int, seed: int
):
    from alignment.reward.train import RewardTrainConfig
    from studies.reward_toy import toy_model_config

    steps_per_epoch = math.ceil(labelled / config.batch_size)
    model = toy_model_config(config)
    return RewardTrainConfig(
        output_dir=str(run_dir),
        snapshot=str(snapshot),
        media_root=str(media_root),
        model=model,
        loss="bt_ties",
        theta=config.theta,
        learning_rate=config.learning_rate,
        lr_schedule="cosine",
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        epochs=max(config.epochs, math.ceil(config.min_steps / steps_per_epoch)),
        warmup_steps=config.warmup_steps,
        num_workers=0,
        cache_videos=100_000,
        seed=seed,
        progress=config.progress,
        keep_checkpoints=1,
        keep_best=True,
    )


def pair_rewards(model_dir: Path, data: Pool, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw VQ, MQ, TA margins r_A − r_B ``(N, 3)`` of the pairs ``indices`` under a trained model, and the
    model's reward standard deviations ``(3,)``: the normalised margins are ``raw / std``."""
    from alignment.reward import load_reward_model
    from alignment.reward.evaluate import score_videos

    model = load_reward_model(model_dir)
    items = [(data.rows[i][side], data.rows[i]["prompt"]) for i in indices for side in ("video_a", "video_b")]
    scores = score_videos(model, items, roots=[data.media_root], batch_size=64, normalize=False, progress=False).numpy()
    return scores[0::2] - scores[1::2], model.reward_std.detach().cpu().numpy()


def scored_margins(run_dir: Path, model_dir: Path, data: Pool, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pair_rewards``, kept in ``run_dir/margins.npz``: the initial round's model scores the pool once for every
    order that reads it, not once per order."""
    stored = run_dir / "margins.npz"
    if stored.is_file():
        with np.load(stored) as saved:
            if np.array_equal(saved["indices"], indices):
                return saved["margins"], saved["reward_std"]
    margins, reward_std = pair_rewards(model_dir, data, indices)
    temporary = stored.with_suffix(".tmp")
    with open(temporary, "wb") as handle:
        np.savez(handle, indices=indices, margins=margins, reward_std=reward_std)
    temporary.replace(stored)  # a study killed while writing leaves no half-written file
    return margins, reward_std


def uncertainty(margins: np.ndarray) -> np.ndarray:
    """|Δr| with r the mean of the normalised VQ, MQ, TA: what the queue's priority 1/(1 + |Δr|) reads."""
    return np.abs(margins.mean(axis=1))


def tie_entropy(raw_margins: np.ndarray, theta: float) -> np.ndarray:
    """The sum over VQ, MQ, TA of the entropy (nats) of the BT-with-ties prediction at raw margins Δ ``(N, 3)``:
    P(A ≻ B) = σ(Δ − ln θ), P(B ≻ A) = σ(−Δ − ln θ), P(A = B) the rest (``alignment.losses.bt_ties_nll``).
    High and nearly flat across the tie band |Δ| < ln θ, falling towards 0 as the model grows sure of a win."""
    log_theta = math.log(theta)
    p_a = 1.0 / (1.0 + np.exp(-(raw_margins - log_theta)))
    p_b = 1.0 / (1.0 + np.exp(raw_margins + log_theta))
    probabilities = np.stack([p_a, p_b, np.clip(1.0 - p_a - p_b, 0.0, 1.0)])
    terms = np.where(probabilities > 0, -probabilities * np.log(np.maximum(probabilities, 1e-300)), 0.0)
    return terms.sum(axis=0).sum(axis=1)


def committee_disagreement(members: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``(N,)``: the sum over VQ, MQ, TA of the standard deviation across the committee of each member's
    normalised margin ``raw / reward_std``; ``members`` are (raw margins ``(N, 3)``, reward std ``(3,)``) pairs.
    Small where the members agree, on a win or on a tie alike; large where what one learned the others did not."""
    normalised = np.stack([raw / reward_std for raw, reward_std in members])  # (M, N, 3)
    return normalised.std(axis=0, ddof=1).sum(axis=1)


def labelling_order(strategy: str, members: list[tuple[np.ndarray, np.ndarray]], theta: float) -> np.ndarray:
    """Pool positions, the pair to label first first, under ``uncertainty``, ``entropy`` (both read the first
    member: the model of the round) or ``committee`` (all of them). ``members`` as ``committee_disagreement``'s."""
    raw_margins, reward_std = members[0]
    if strategy == "uncertainty":
        sureness = uncertainty(raw_margins / reward_std)
    elif strategy == "entropy":
        sureness = -tie_entropy(raw_margins, theta)
    elif strategy == "committee":
        if len(members) < 2:
            raise ValueError("the committee order needs the margins of at least 2 models")
        sureness = -committee_disagreement(members)
    else:
        raise ValueError(f"strategy {strategy!r} reads no margins; choose from {', '.join(STRATEGIES[1:])}")
    return np.argsort(sureness, kind="stable")


def committee_member(
    config: ActiveLearningConfig, data: Pool, run_dir: Path, labelled: int, seed: int, member: int
) -> Path:
    """The committee's ``member``-th extra model of a round (``run_dir/member-<k>``): the round's recipe on the
    round's snapshot from another seed; trained once, kept for a resumed or extended study."""
    from alignment.reward.train import train_reward_model

    member_dir = run_dir / f"member-{member}"
    if not (member_dir / "reward" / "metrics.json").is_file():
        if member_dir.exists():  # cut off half-way: starts again
            shutil.rmtree(member_dir)
        train_reward_model(
            train_config_for(
                config, run_dir / "snapshot", data.media_root, member_dir / "reward", labelled, seed + 1000 * member
            )
        )
    return member_dir


def test_accuracy(data: Pool, margins: np.ndarray) -> dict:
    """Accuracy without ties per dimension on the test pairs (the oracle's labels), and their mean."""
    from alignment.metrics import accuracy_without_ties

    labels = np.array([[data.rows[i][dim.lower()] for dim in DIMENSION_NAMES] for i in data.test])
    by_dimension = {dim: accuracy_without_ties(labels[:, d], margins[:, d]) for d, dim in enumerate(DIMENSION_NAMES)}
    return {"mean": float(np.nanmean(list(by_dimension.values()))), **by_dimension}


def run_active_learning_study(config: ActiveLearningConfig, *, log=print) -> dict:
    """Run the study; returns the result (also ``output_dir/result.json``). An interrupted study resumes at its
    first unfinished round, and a finished one is extended by more repeats or rounds (``resume_check``)."""
    from tqdm.auto import tqdm

    from alignment.reward.train import train_reward_model

    config.check()
    resume_check(config)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, output_dir / CONFIG_FILE)
    started = time.perf_counter()
    data = build_pool(config, log=log)
    strategies = tuple(config.strategies)
    members = config.committee_size - 1 if "committee" in strategies else 0  # the committee's extra models a round
    trainings = config.repeats * (1 + (len(strategies) + members) * (config.rounds - 1))
    progress = tqdm(total=trainings, desc="reward trainings", disable=not config.progress)
    # per repeat: [{pairs, judgments, accuracy, by_dimension}]
    curves: dict[str, list] = {strategy: [] for strategy in strategies}
    added: dict[str, list] = {strategy: [] for strategy in strategies}  # per repeat: the pool positions labelled
    for repeat in range(config.repeats):
        rng = np.random.default_rng(config.seed + 100 + repeat)
        initial = rng.choice(len(data.pool), size=config.initial, replace=False)
        for strategy in strategies:
            labelled, curve = list(initial), []
            for round_index in range(config.rounds):
                # round 0 trains on the initial pairs alone: one run serves both strategies
                name = f"r{repeat}-initial" if round_index == 0 else f"r{repeat}-{strategy}-{round_index:02d}"
                run_dir = output_dir / "runs" / name
                model_dir = run_dir / "reward" / "model"
                if not (run_dir / "reward" / "metrics.json").is_file():
                    if run_dir.exists():  # a round cut off half-way starts again
                        shutil.rmtree(run_dir)
                    snapshot = round_snapshot(data, np.array(labelled), run_dir / "snapshot")
                    train_reward_model(
                        train_config_for(
                            config, snapshot, data.media_root, run_dir / "reward", len(labelled), config.seed + repeat
                        )
                    )
                    progress.update(1)
                elif round_index or strategy == strategies[0]:
                    progress.update(1)
                last = round_index == config.rounds - 1
                needs_pool = strategy != "random" and not last  # random order reads no margins
                outcome_file = run_dir / f"outcome-{strategy}.json"  # a resumed study does not score again
                outcome = json.loads(outcome_file.read_text()) if outcome_file.is_file() else None
                if outcome is None or (needs_pool and outcome["chosen"] is None):
                    unlabelled = np.setdiff1d(np.arange(len(data.pool)), labelled)
                    scored = np.concatenate([data.test, data.pool[unlabelled] if needs_pool else []]).astype(int)
                    margins, reward_std = scored_margins(run_dir, model_dir, data, scored)
                    committee = [(margins[len(data.test) :], reward_std)]
                    if needs_pool and strategy == "committee":
                        for member in range(1, config.committee_size):
                            member_dir = committee_member(
                                config, data, run_dir, len(labelled), config.seed + repeat, member
                            )
                            committee.append(
                                scored_margins(
                                    member_dir, member_dir / "reward" / "model", data, scored[len(data.test) :]
                                )
                            )
                    order = labelling_order(strategy, committee, config.theta) if needs_pool else None
                    outcome = {
                        "accuracy": test_accuracy(data, margins[: len(data.test)]),
                        "chosen": unlabelled[order[: config.batch]].tolist() if order is not None else None,
                    }
                    outcome_file.write_text(json.dumps(outcome) + "\n")
                if needs_pool and strategy == "committee":
                    progress.update(config.committee_size - 1)  # its extra models: trained above, or before
                accuracy = outcome["accuracy"]
                curve.append(
                    {
                        "pairs": len(labelled),
                        "judgments": len(labelled) * config.annotators_per_pair,
                        "accuracy": accuracy["mean"],
                        "by_dimension": accuracy,
                    }
                )
                log(
                    f"  repeat {repeat} {strategy:<11} round {round_index}: {len(labelled)} pairs labelled, "
                    f"test accuracy {100 * accuracy['mean']:.1f} % ("
                    + ", ".join(f"{d} {100 * a:.1f}" for d, a in accuracy.items() if d != "mean")
                    + f"), {time.perf_counter() - started:.0f} s"
                )
                if last:
                    break
                if strategy == "random":
                    unlabelled = np.setdiff1d(np.arange(len(data.pool)), labelled)
                    chosen = rng.choice(unlabelled, size=config.batch, replace=False)
                else:
                    chosen = outcome["chosen"]
                labelled.extend(int(i) for i in chosen)
            curves[strategy].append(curve)
            added[strategy].append(labelled[config.initial :])
    progress.close()
    result: dict[str, Any] = {
        "config": asdict(config),
        "pool_pairs": len(data.pool),
        "val_pairs": len(data.val),
        "test_pairs": len(data.test),
        "curves": curves,
        "mean": mean_curves(curves),
        "seconds": time.perf_counter() - started,
    }
    result["judgments_saved"] = judgments_saved(result["mean"])
    result["accuracy_gain"] = accuracy_gain(curves)
    result["added_pairs"] = added_pairs(data, added)
    (output_dir / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def resume_check(config: ActiveLearningConfig) -> None:
    """A study in ``output_dir`` resumes with the settings it started with, or with other ``repeats`` or ``rounds``
    (its finished runs stay valid); a finished one asked for nothing new is refused."""
    output_dir = Path(config.output_dir)
    if not (output_dir / CONFIG_FILE).is_file():
        return
    before, now = json.loads((output_dir / CONFIG_FILE).read_text()), json.loads(json.dumps(asdict(config)))
    for key, value in now.items():
        if key != "progress" and key not in EXTENDABLE and key in before and before[key] != value:
            raise ValueError(
                f"{output_dir}: the study there was started with {key}={before[key]!r}, not "
                f"{value!r}; resume it with the same settings or pick a new --output-dir"
            )
    if (output_dir / RESULT_FILE).exists() and all(before.get(key) == now[key] for key in EXTENDABLE):
        raise FileExistsError(
            f"{output_dir}: already holds a finished study; pick a new --output-dir, or extend "
            "it with more --repeats or --rounds"
        )


def mean_curves(curves: dict) -> dict:
    """Per strategy: judgments and the accuracy averaged over the repeats, round by round."""

    def mean_of(runs, k, key):
        return float(
            np.mean([run[k]["by_dimension"][key] if key != "accuracy" else run[k]["accuracy"] for run in runs])
        )

    return {
        strategy: [
            {
                "judgments": runs[0][k]["judgments"],
                "accuracy": mean_of(runs, k, "accuracy"),
                **({dim: mean_of(runs, k, dim) for dim in DIMENSION_NAMES} if "by_dimension" in runs[0][k] else {}),
            }
            for k in range(len(runs[0]))
        ]
        for strategy, runs in curves.items()
    }


def judgments_saved(mean: dict) -> dict:
    """For each accuracy random order reaches and each other strategy: the judgments the strategy needs to
    reach it, read off its curve where it first gets there (linear between the rounds around the crossing),
    as a share of random's; None when it never gets there."""
    saved = {}
    for strategy, curve in mean.items():
        if strategy == "random":
            continue
        out = []
        for point in mean["random"][1:]:
            target, reached = point["accuracy"], None
            k = next((k for k, p in enumerate(curve) if p["accuracy"] >= target), None)
            if k == 0:
                reached = float(curve[0]["judgments"])
            elif k is not None:
                before, after = curve[k - 1], curve[k]
                share = (target - before["accuracy"]) / (after["accuracy"] - before["accuracy"])
                reached = before["judgments"] + share * (after["judgments"] - before["judgments"])
            out.append(
                {
                    "accuracy": target,
                    "random_judgments": point["judgments"],
                    "judgments": reached,
                    "ratio": reached / point["judgments"] if reached is not None else None,
                }
            )
        saved[strategy] = out
    return saved


def accuracy_gain(curves: dict) -> dict:
    """For each strategy against random order, in test-accuracy points: the paired difference (same initial
    pairs and training seed) round by round, and its mean over the rounds after the shared first one (the
    area between the curves), each averaged over the repeats with a 95 % Student-t interval across them
    (None with one repeat). The repeats carry the noise that matters: another initial set, another training."""
    from scipy import stats

    def summary(values) -> dict:
        values = 100 * np.asarray(values, dtype=float)
        out = {"gain": float(values.mean()), "low": None, "high": None}
        if len(values) > 1:
            half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
            out.update(low=float(values.mean() - half), high=float(values.mean() + half))
        return out

    def paired(runs, accuracy_of) -> np.ndarray:  # (repeats, rounds): the strategy's run minus random's
        return np.array(
            [
                [accuracy_of(point) - accuracy_of(base) for point, base in zip(run, baseline)]
                for run, baseline in zip(runs, curves["random"])
            ]
        )

    gains = {}
    for strategy, runs in curves.items():
        if strategy == "random":
            continue
        differences = paired(runs, lambda point: point["accuracy"])
        gains[strategy] = {
            "repeats": len(runs),
            "per_round": [
                {"judgments": runs[0][k]["judgments"], **summary(differences[:, k])}
                for k in range(1, differences.shape[1])
            ],
        }
        if differences.shape[1] > 1:
            gains[strategy].update(summary(differences[:, 1:].mean(axis=1)))
            if all("by_dimension" in point for run in runs for point in run):
                gains[strategy]["by_dimension"] = {
                    dim: summary(paired(runs, lambda point, dim=dim: point["by_dimension"][dim])[:, 1:].mean(axis=1))
                    for dim in DIMENSION_NAMES
                }
    return gains


def added_pairs(data: Pool, added: dict) -> dict:
    """Per order, what the pairs it labelled after the initial ones were like, over all repeats: per
    dimension the mean |oracle score difference| (how far apart the two videos are) and the share the
    annotators' majority tied (a tie says little about which side is better)."""
    out = {}
    for strategy, repeats in added.items():
        indices = data.pool[np.concatenate([np.asarray(chosen, dtype=int) for chosen in repeats])]
        if not len(indices):
            continue
        labels = np.array([[data.rows[i][dim.lower()] for dim in DIMENSION_NAMES] for i in indices])
        distance = np.abs(data.differences[indices]).mean(axis=0)
        out[strategy] = {
            "pairs": int(len(indices)),
            "oracle_difference": dict(zip(DIMENSION_NAMES, distance.tolist())),
            "tied": dict(zip(DIMENSION_NAMES, (labels == 0).mean(axis=0).tolist())),
        }
    return out


def format_table(result: dict) -> str:
    mean = result["mean"]
    strategies = list(mean)
    lines = [
        f"Test accuracy of VideoReward (%, without ties, against the oracle) by judgments collected; mean of "
        f"{result['config']['repeats']} repeat(s); pool {result['pool_pairs']} pairs, {result['test_pairs']} "
        "test pairs on held-out prompts; mean of VQ, MQ, TA (per dimension in brackets)",
        "",
        " | ".join(["judgments", *strategies]),
        " | ".join(["---"] * (1 + len(strategies))),
    ]

    def cell(point):
        dims = "/".join(f"{100 * point[d]:.0f}" for d in DIMENSION_NAMES if d in point)
        return f"{100 * point['accuracy']:.1f}" + (f" ({dims})" if dims else "")

    for k, random_point in enumerate(mean["random"]):
        lines.append(" | ".join([str(random_point["judgments"]), *(cell(mean[s][k]) for s in strategies)]))
    for strategy, gain in (result.get("accuracy_gain") or {}).items():
        if "gain" not in gain:
            continue
        interval = (
            f" (95 % interval over {gain['repeats']} repeats: {gain['low']:+.1f} to {gain['high']:+.1f})"
            if gain["low"] is not None
            else f" ({gain['repeats']} repeat: no interval)"
        )
        lines += [
            "",
            f"{strategy} − random, test accuracy after the first round: {gain['gain']:+.1f} points"
            f"{interval}; by round: " + ", ".join(f"{p['judgments']} {p['gain']:+.1f}" for p in gain["per_round"]),
        ]
        if "by_dimension" in gain:
            lines.append(
                "  by dimension: "
                + ", ".join(
                    f"{dim} {g['gain']:+.1f}"
                    + (f" [{g['low']:+.1f}, {g['high']:+.1f}]" if g["low"] is not None else "")
                    for dim, g in gain["by_dimension"].items()
                )
            )
    if result.get("added_pairs"):
        lines += [
            "",
            "the pairs each order labelled after the first round: mean |oracle score difference| and the "
            "share the annotators tied, VQ / MQ / TA",
            "",
            "order | oracle difference | tied",
            "--- | --- | ---",
        ]
        for strategy, summary in result["added_pairs"].items():
            lines.append(
                f"{strategy} | "
                + " / ".join(f"{summary['oracle_difference'][d]:.2f}" for d in DIMENSION_NAMES)
                + " | "
                + " / ".join(f"{100 * summary['tied'][d]:.0f} %" for d in DIMENSION_NAMES)
            )
    for strategy, points in result["judgments_saved"].items():
        lines += ["", f"judgments {strategy} needs to reach random order's accuracy:"]
        for point in points:
            reached = (
                f"{point['judgments']:.0f} ({point['ratio']:.2f}×)" if point["ratio"] is not None else "not reached"
            )
            lines.append(f"  {100 * point['accuracy']:.1f} %: random {point['random_judgments']}, {strategy} {reached}")
    return "\n".join(lines)
