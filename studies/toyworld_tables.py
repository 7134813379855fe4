"""Validation studies of the toy world: how each oracle score tracks each defect, and how often
each kind of simulated annotator agrees with the oracle.

    python -m studies oracle-table [--clips 1500]
    python -m studies annotator-agreement [--prompts 144 --pairs-per-prompt 14]
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from alignment.labels import DIMENSIONS
from alignment.toyworld.annotators import ANNOTATOR_PROFILES, LEFT, TIE, SimulatedAnnotator, oracle_labels
from alignment.toyworld.oracle import oracle_scores
from alignment.toyworld.prompts import all_prompts
from alignment.toyworld.render import DEFECT_DIMENSION, DEFECTS_BY_DIMENSION, DefectSpec, render_clip


@dataclass
class OracleTableConfig:
    clips: int = 1500  # random clips, every dimension with a defect of random kind and strength
    seed: int = 0  # seed of the prompts, the defects and the rendering
    size: int = 32  # frame side in pixels
    frames: int = 9  # frames per clip


@dataclass
class AnnotatorAgreementConfig:
    prompts: int = 144  # distinct prompts of the toy pairs, at most 144
    pairs_per_prompt: int = 14  # toy pairs per prompt
    seed: int = 0  # seed of the pairs and the annotators
    size: int = 32  # frame side in pixels


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


@dataclass(frozen=True)
class CorrelationTable:
    """Spearman correlations of each oracle score with each defect strength.

    ``by_defect[dim][kind]``: over the clips whose ``kind``'s dimension drew ``kind`` (so its strength
    is uniform on [0, 1] while the other two dimensions carry random defects).
    ``by_dimension[dim][other]``: over all clips, oracle ``dim`` against ``other``'s severity.
    """

    by_defect: dict[str, dict[str, float]]
    by_dimension: dict[str, dict[str, float]]
    n_clips: int
    size: int

    def format(self) -> str:
        kinds = [kind for dim in DIMENSIONS for kind in DEFECTS_BY_DIMENSION[dim]]
        lines = [
            f"Spearman correlation of oracle scores with defect strength ({self.n_clips} random clips, "
            f"{self.size}x{self.size})",
            "",
            "oracle | " + " | ".join(kinds),
            "--- | " + " | ".join("---" for _ in kinds),
        ]
        for dim in DIMENSIONS:
            lines.append(f"{dim.upper()} | " + " | ".join(f"{self.by_defect[dim][kind]:+.2f}" for kind in kinds))
        lines += ["", "oracle | " + " | ".join(f"{d.upper()} severity" for d in DIMENSIONS), "--- | --- | --- | ---"]
        for dim in DIMENSIONS:
            lines.append(
                f"{dim.upper()} | " + " | ".join(f"{self.by_dimension[dim][other]:+.2f}" for other in DIMENSIONS)
            )
        return "\n".join(lines)


def correlation_table(n_clips: int = 1500, seed: int = 0, *, size: int = 32, frames: int = 9) -> CorrelationTable:
    """Render ``n_clips`` clips with independent random defects in every dimension (one defect kind
    per dimension, strength uniform on [0, 1], never clean) and correlate oracle and strengths."""
    rng = np.random.default_rng(seed)
    prompts = all_prompts()
    chosen = [prompts[i] for i in rng.integers(len(prompts), size=n_clips)]
    specs = [DefectSpec.random(rng, p_clean=0.0) for _ in range(n_clips)]
    clips = np.stack(
        [
            render_clip(p, spec, seed=int(s), size=size, frames=frames)
            for p, spec, s in zip(chosen, specs, rng.integers(2**31, size=n_clips), strict=True)
        ]
    )
    scores = oracle_scores(clips, chosen)
    by_score = {"vq": scores.vq, "mq": scores.mq, "ta": scores.ta}
    strengths = {kind: np.array([getattr(spec, kind) for spec in specs]) for kind in DEFECT_DIMENSION}
    by_defect: dict[str, dict[str, float]] = {dim: {} for dim in DIMENSIONS}
    for kind, dim_of_kind in DEFECT_DIMENSION.items():
        drew = np.array([spec.dominant_in(dim_of_kind) == kind for spec in specs])
        for dim in DIMENSIONS:
            by_defect[dim][kind] = spearman(by_score[dim][drew], strengths[kind][drew])
    severity = {dim: np.array([spec.severity(dim) for spec in specs]) for dim in DIMENSIONS}
    by_dimension = {
        dim: {other: spearman(by_score[dim], severity[other]) for other in DIMENSIONS} for dim in DIMENSIONS
    }
    return CorrelationTable(by_defect=by_defect, by_dimension=by_dimension, n_clips=n_clips, size=size)


@dataclass(frozen=True)
class AgreementRow:
    """One annotator kind's judgments of every dimension of a set of pairs.

    ``clear_agreement``: agreement with the oracle label on clear judgments (``|Δ|`` more than
    ``4 · noise_sd`` from the tie band's edge), to compare with the profile's ``agreement``.
    ``decisive_agreement``: agreement on judgments where neither the oracle nor the annotator said tie.
    """

    kind: str
    configured: float
    clear_agreement: float
    n_clear: int
    decisive_agreement: float
    tie_rate: float
    left_rate: float


def agreement_table(score_differences: np.ndarray, seed: int = 0) -> list[AgreementRow]:
    """Let one annotator of every kind judge score differences ``left − right`` (any shape, e.g.
    ``(pairs, 3)`` from toy pairs) and measure its agreement with the oracle."""
    rng = np.random.default_rng(seed)
    rows = []
    for kind, profile in ANNOTATOR_PROFILES.items():
        codes = SimulatedAnnotator(kind, profile).judge_codes(score_differences, rng)
        truth = oracle_labels(score_differences, profile.tie_band)
        clear = np.abs(np.abs(score_differences) - profile.tie_band) > profile.clear_margin()
        decisive = (codes != TIE) & (truth != TIE)
        rows.append(
            AgreementRow(
                kind=kind,
                configured=profile.agreement,
                clear_agreement=float((codes == truth)[clear].mean()),
                n_clear=int(clear.sum()),
                decisive_agreement=float((codes == truth)[decisive].mean()),
                tie_rate=float((codes == TIE).mean()),
                left_rate=float((codes == LEFT).mean()),
            )
        )
    return rows


def format_agreement(rows: list[AgreementRow]) -> str:
    lines = [
        "kind | configured | agreement on clear judgments (n) | agreement, no ties | tie rate | left rate",
        "--- | --- | --- | --- | --- | ---",
    ]
    lines += [
        f"{r.kind} | {r.configured:.2f} | {r.clear_agreement:.3f} ({r.n_clear}) | {r.decisive_agreement:.3f} | "
        f"{r.tie_rate:.3f} | {r.left_rate:.3f}"
        for r in rows
    ]
    lines.append(
        "\n(left_biased answers left with probability 0.5 whatever it sees and otherwise judges like careful, "
        "whose configured agreement it shows.)"
    )
    return "\n".join(lines)


def run_oracle_table(config: OracleTableConfig, *, log=print) -> CorrelationTable:
    """Render and score ``config.clips`` clips and print the correlation table; returns it."""
    started = time.perf_counter()
    table = correlation_table(config.clips, config.seed, size=config.size, frames=config.frames)
    log(table.format())
    log(f"\n{config.clips} clips rendered and scored in {time.perf_counter() - started:.1f} s")
    return table


def run_annotator_agreement(config: AnnotatorAgreementConfig, *, log=print) -> list[AgreementRow]:
    """Let one annotator of every kind judge VQ, MQ and TA of toy pairs and print their agreement with the oracle."""
    from alignment.toyworld.pairs import make_pairs

    started = time.perf_counter()
    pairs = make_pairs(min(config.prompts, 144), config.pairs_per_prompt, config.seed, size=config.size)
    differences = np.array([[pair.a.scores[d] - pair.b.scores[d] for d in DIMENSIONS] for pair in pairs])
    rows = agreement_table(differences, config.seed)
    log(f"one annotator of each kind judges VQ, MQ and TA of {len(pairs)} toy pairs\n")
    log(format_agreement(rows))
    log(f"\n{3 * len(pairs)} judgments per kind in {time.perf_counter() - started:.1f} s")
    return rows
