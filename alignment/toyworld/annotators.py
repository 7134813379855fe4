"""Simulated annotators that judge a pair per dimension from oracle scores.

Labels are in screen terms — ``"left"``, ``"right"``, ``"tie"`` — because the annotators drive the
real HTTP API, where the server maps screen sides to the pair's A/B.

Generative model, per dimension and independently, with ``Δ = score_left − score_right``:

1. with probability ``left_bias`` the annotator answers ``"left"`` whatever it sees (position bias);
2. otherwise, with probability ``lapse`` it answers uniformly at random among the three labels
   (inattention);
3. otherwise it perceives ``Δ̃ = Δ + N(0, noise_sd²)`` and answers ``"tie"`` when ``|Δ̃| ≤ tie_band``,
   else the side with the higher perceived score.

The **oracle label** of a pair is the same rule applied to the true ``Δ`` with the annotator's own
tie band. On a *clear* pair — one whose ``|Δ|`` is farther than ``4 · noise_sd`` from the tie band's
edge, so perception noise flips it with probability < 10⁻⁴ — an annotator without position bias
agrees with the oracle with probability exactly ``agreement = 1 − lapse + lapse / 3``; that is the
parameter each kind is configured by (``lapse = 3/2 · (1 − agreement)``).

========== ========= ======== ========= =========
kind       agreement noise_sd tie_band  left_bias
========== ========= ======== ========= =========
careful    0.90      0.02     0.05      0
noisy      0.70      0.08     0.05      0
spammer    1/3       0        0.05      0
left_biased 0.90     0.02     0.05      0.5
========== ========= ======== ========= =========

The spammer's lapse is 1: it answers uniformly at random, so it agrees with the oracle on 1/3 of
all pairs, and on 1/2 of the pairs where neither it nor the oracle says tie. The left-biased
annotator answers ``"left"`` with probability ``0.5 + 0.5 · P(left | careful judgement)``; on a
clear pair that the oracle gives to the right, ``0.5 + 0.5 · lapse / 3 = 0.525``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from alignment.labels import DIMENSIONS

LABELS: tuple[str, ...] = ("left", "right", "tie")
LEFT, RIGHT, TIE = 1, -1, 0
_CODE_TO_LABEL = {LEFT: "left", RIGHT: "right", TIE: "tie"}


@dataclass(frozen=True)
class AnnotatorProfile:
    """How one kind of simulated annotator behaves (see the module docstring)."""

    kind: str
    agreement: float
    noise_sd: float
    tie_band: float
    left_bias: float = 0.0

    def __post_init__(self) -> None:
        if not 1 / 3 - 1e-9 <= self.agreement <= 1.0:
            raise ValueError(f"{self.kind}: agreement {self.agreement} must lie in [1/3, 1] (1/3 is chance)")
        if self.noise_sd < 0 or self.tie_band < 0 or not 0 <= self.left_bias <= 1:
            raise ValueError(f"{self.kind}: noise_sd and tie_band must be ≥ 0 and left_bias in [0, 1]")

    @property
    def lapse(self) -> float:
        """Probability of a uniformly random answer, from ``agreement = 1 − lapse + lapse / 3``."""
        return min(1.0, 1.5 * (1.0 - self.agreement))

    def clear_margin(self) -> float:
        """``|Δ|`` is clear when outside ``[tie_band − m, tie_band + m]`` with ``m`` this margin."""
        return 4.0 * self.noise_sd


ANNOTATOR_PROFILES: dict[str, AnnotatorProfile] = {
    "careful": AnnotatorProfile("careful", agreement=0.90, noise_sd=0.02, tie_band=0.05),
    "noisy": AnnotatorProfile("noisy", agreement=0.70, noise_sd=0.08, tie_band=0.05),
    "spammer": AnnotatorProfile("spammer", agreement=1 / 3, noise_sd=0.0, tie_band=0.05),
    "left_biased": AnnotatorProfile("left_biased", agreement=0.90, noise_sd=0.02, tie_band=0.05, left_bias=0.5),
}
DEFAULT_MIX: dict[str, float] = {"careful": 0.5, "noisy": 0.3, "spammer": 0.1, "left_biased": 0.1}


def oracle_labels(delta: np.ndarray, tie_band: float) -> np.ndarray:
    """Codes (+1 left, −1 right, 0 tie) the oracle gives score differences ``left − right``."""
    return np.where(np.abs(delta) <= tie_band, TIE, np.sign(delta)).astype(np.int8)


@dataclass(frozen=True)
class SimulatedAnnotator:
    """One simulated annotator: a name (usable as a username) and a behaviour profile."""

    name: str
    profile: AnnotatorProfile

    @property
    def kind(self) -> str:
        return self.profile.kind

    def judge(
        self,
        scores_left: Mapping[str, float],
        scores_right: Mapping[str, float],
        rng: np.random.Generator,
    ) -> dict[str, str]:
        """Judge one pair: ``{"vq": "left" | "right" | "tie", "mq": …, "ta": …}``.

        ``scores_*`` are oracle scores keyed by dimension (as ``OracleScores[i]`` returns them).
        """
        delta = np.array([[scores_left[dim] - scores_right[dim] for dim in DIMENSIONS]])
        codes = self.judge_codes(delta, rng)[0]
        return {dim: _CODE_TO_LABEL[int(code)] for dim, code in zip(DIMENSIONS, codes, strict=True)}

    def judge_codes(self, delta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Vectorised judging of score differences ``left − right`` of any shape; returns int8
        codes of the same shape (+1 left, −1 right, 0 tie)."""
        delta = np.asarray(delta, dtype=np.float64)
        profile = self.profile
        biased = rng.random(delta.shape) < profile.left_bias
        lapsed = rng.random(delta.shape) < profile.lapse
        random_codes = rng.choice(np.array([LEFT, RIGHT, TIE], dtype=np.int8), size=delta.shape)
        perceived = delta + profile.noise_sd * rng.standard_normal(delta.shape)
        codes = oracle_labels(perceived, profile.tie_band)
        codes = np.where(lapsed, random_codes, codes)
        return np.where(biased, np.int8(LEFT), codes).astype(np.int8)


def make_annotator_pool(
    n: int, mix: Mapping[str, float] | None = None, *, prefix: str = "sim"
) -> list[SimulatedAnnotator]:
    """``n`` annotators whose kinds follow ``mix`` (kind → share; default ``DEFAULT_MIX``) as closely as
    whole numbers allow (largest remainders), named ``<prefix>-<kind>-<i>`` in a fixed order."""
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = set(mix) - set(ANNOTATOR_PROFILES)
    if unknown:
        raise ValueError(f"unknown annotator kinds {sorted(unknown)}; choose from {', '.join(ANNOTATOR_PROFILES)}")
    total = sum(mix.values())
    if n < 0 or total <= 0 or any(share < 0 for share in mix.values()):
        raise ValueError(f"need n ≥ 0 and non-negative shares with a positive sum; got n={n}, mix={mix}")
    quotas = {kind: n * share / total for kind, share in mix.items()}
    counts = {kind: int(quota) for kind, quota in quotas.items()}
    by_remainder = sorted(mix, key=lambda kind: (-(quotas[kind] - counts[kind]), list(mix).index(kind)))
    for kind in by_remainder[: n - sum(counts.values())]:
        counts[kind] += 1
    return [
        SimulatedAnnotator(f"{prefix}-{kind.replace('_', '-')}-{i + 1:02d}", ANNOTATOR_PROFILES[kind])
        for kind in mix
        for i in range(counts[kind])
    ]
