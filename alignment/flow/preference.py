"""Training data for the flow trainers, from a snapshot's pairs: who won, and how much each video is worth.

Two label sources:
  * ``consensus`` — the snapshot's per-dimension consensus labels (1 = A better, 0 = tie, −1 = B better),
    combined with per-dimension weights: score = Σ_d w_d · label_d / Σ_d w_d over the judged dimensions
    (default weights 1, 1, 1: overall = the mean of VQ, MQ, TA). score > 0: A won; < 0: B won.
  * ``reward_model`` — a trained VideoReward scores both videos (normalised VQ, MQ, TA) and the score is
    Σ_d w_d · (r_A,d − r_B,d) / Σ_d w_d, as the paper relabels its pairs.
Ties (score 0), pairs with no judged dimension and pairs with |score| ≤ ``min_margin`` are dropped.

Flow-RWR needs a reward per video: with ``consensus`` the mean, over the pairs a video appears in, of its
signed pair score (+score as A, −score as B; in [−1, 1]); with ``reward_model`` its weighted reward.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alignment.data.records import PairRecord
from alignment.labels import DIMENSION_NAMES, LABEL_MISSING

LABEL_SOURCES = ("consensus", "reward_model")


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    winner: str  # video URI
    loser: str
    margin: float  # > 0: how strongly the winner won (weighted label, or reward difference)


@dataclass(frozen=True)
class RewardedVideo:
    prompt: str
    video: str
    reward: float


def _check_weights(weights: Sequence[float]) -> tuple[float, ...]:
    weights = tuple(float(w) for w in weights)
    if len(weights) != len(DIMENSION_NAMES) or any(w < 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(
            f"dimension_weights {weights}: give {len(DIMENSION_NAMES)} non-negative weights for "
            f"{', '.join(DIMENSION_NAMES)} with a positive sum, e.g. [1, 1, 1]"
        )
    return weights


def consensus_score(pair: PairRecord, weights: Sequence[float] = (1.0, 1.0, 1.0)) -> float | None:
    """Weighted mean of the pair's judged labels in [−1, 1] (> 0: A better); None when none is judged."""
    weights = _check_weights(weights)
    judged = [(w, label) for w, label in zip(weights, pair.labels) if label != LABEL_MISSING and w > 0]
    if not judged:
        return None
    return sum(w * label for w, label in judged) / sum(w for w, _ in judged)


def preference_pairs(
    pairs: Sequence[PairRecord], *, weights: Sequence[float] = (1.0, 1.0, 1.0), min_margin: float = 0.0
) -> list[PreferencePair]:
    """(winner, loser) pairs from consensus labels; ties, undecided and weak pairs are dropped."""
    result = []
    for pair in pairs:
        score = consensus_score(pair, weights)
        if score is None or abs(score) <= min_margin:
            continue
        winner, loser = (pair.video_a, pair.video_b) if score > 0 else (pair.video_b, pair.video_a)
        result.append(PreferencePair(prompt=pair.prompt, winner=winner, loser=loser, margin=abs(score)))
    return result


def consensus_video_rewards(
    pairs: Sequence[PairRecord], *, weights: Sequence[float] = (1.0, 1.0, 1.0)
) -> list[RewardedVideo]:
    """Each video's mean signed score over its judged pairs (for Flow-RWR)."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for pair in pairs:
        score = consensus_score(pair, weights)
        if score is None:
            continue
        scores[(pair.prompt, pair.video_a)].append(score)
        scores[(pair.prompt, pair.video_b)].append(-score)
    return [
        RewardedVideo(prompt=prompt, video=video, reward=sum(values) / len(values))
        for (prompt, video), values in sorted(scores.items())
    ]


def standardised_rewards(
    videos: Sequence[RewardedVideo], *, reference: Sequence[RewardedVideo] | None = None
) -> list[RewardedVideo]:
    """``videos`` with rewards standardised, (r − mean) / std, by the mean and standard deviation of
    ``reference`` (default: ``videos`` themselves) — Flow-RWR's rewards over the whole training set, so that
    exp(r / τ) weighs a video the same whatever batch it lands in. Equal rewards all become 0 (plain flow
    matching)."""
    basis = [v.reward for v in (videos if reference is None else reference)]
    if not basis:
        return list(videos)
    mean = sum(basis) / len(basis)
    std = (sum((r - mean) ** 2 for r in basis) / len(basis)) ** 0.5
    scale = 1.0 / std if std > 1e-12 else 0.0
    return [RewardedVideo(prompt=v.prompt, video=v.video, reward=(v.reward - mean) * scale) for v in videos]


def reward_model_scores(
    reward_model: str | Path,
    items: Sequence[tuple[str, str]],
    *,
    roots: Sequence[str | Path] = (),
    weights: Sequence[float] = (1.0, 1.0, 1.0),
    batch_size: int = 8,
    progress: bool = True,
) -> dict[tuple[str, str], float]:
    """Weighted normalised VideoReward score of each distinct (video, prompt)."""
    import torch

    from alignment.reward import load_reward_model
    from alignment.reward.evaluate import score_videos

    weights = _check_weights(weights)
    keys = sorted(set(items))
    model = load_reward_model(reward_model).to("cuda" if torch.cuda.is_available() else "cpu")
    rewards = score_videos(model, keys, roots=roots, batch_size=batch_size, progress=progress)  # (N, 3)
    total = sum(weights)
    return {key: float(sum(w * r for w, r in zip(weights, row)) / total) for key, row in zip(keys, rewards.tolist())}


def relabelled_pairs(
    pairs: Sequence[PairRecord],
    reward_model: str | Path,
    *,
    roots: Sequence[str | Path] = (),
    weights: Sequence[float] = (1.0, 1.0, 1.0),
    min_margin: float = 0.0,
    batch_size: int = 8,
    progress: bool = True,
) -> list[PreferencePair]:
    """(winner, loser) pairs decided by a reward model's weighted score, whatever the humans said."""
    items = [(p.video_a, p.prompt) for p in pairs] + [(p.video_b, p.prompt) for p in pairs]
    scores = reward_model_scores(
        reward_model, items, roots=roots, weights=weights, batch_size=batch_size, progress=progress
    )
    result = []
    for pair in pairs:
        margin = scores[(pair.video_a, pair.prompt)] - scores[(pair.video_b, pair.prompt)]
        if abs(margin) <= min_margin:
            continue
        winner, loser = (pair.video_a, pair.video_b) if margin > 0 else (pair.video_b, pair.video_a)
        result.append(PreferencePair(prompt=pair.prompt, winner=winner, loser=loser, margin=abs(margin)))
    return result


def reward_model_video_rewards(
    pairs: Sequence[PairRecord],
    reward_model: str | Path,
    *,
    roots: Sequence[str | Path] = (),
    weights: Sequence[float] = (1.0, 1.0, 1.0),
    batch_size: int = 8,
    progress: bool = True,
) -> list[RewardedVideo]:
    """Every distinct video of ``pairs`` with its weighted reward-model score (for Flow-RWR)."""
    items = [(p.video_a, p.prompt) for p in pairs] + [(p.video_b, p.prompt) for p in pairs]
    scores = reward_model_scores(
        reward_model, items, roots=roots, weights=weights, batch_size=batch_size, progress=progress
    )
    return [
        RewardedVideo(prompt=prompt, video=video, reward=score) for (video, prompt), score in sorted(scores.items())
    ]
