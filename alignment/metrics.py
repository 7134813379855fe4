"""Pairwise accuracy of a reward model against human labels (docs/ml/reward.md §3).

Labels: 1 = A better, 0 = tie, −1 = B better. Margins: m = r_A − r_B.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class AccuracyWithTies(NamedTuple):
    accuracy: float
    epsilon: float  # the model calls a tie when |m| ≤ epsilon


def _as_arrays(labels, margins) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    if hasattr(margins, "detach"):
        margins = margins.detach().float().cpu().numpy()
    label_array = np.asarray(labels).astype(np.int64).reshape(-1)
    margin_array = np.asarray(margins, dtype=np.float64).reshape(-1)
    if label_array.shape != margin_array.shape:
        raise ValueError(f"labels ({label_array.shape[0]}) and margins ({margin_array.shape[0]}) differ in length")
    if not np.isin(label_array, (-1, 0, 1)).all():
        raise ValueError("labels must be 1 (A better), 0 (tie) or -1 (B better); drop missing labels first")
    if not np.isfinite(margin_array).all():
        raise ValueError("margins contain NaN or infinity")
    return label_array, margin_array


def accuracy_with_ties(labels, margins) -> AccuracyWithTies:
    """Tie-calibrated pairwise accuracy (Deutsch, Foster & Freitag, 2023).

    The model calls a tie when |m_i| ≤ ε; a pair counts when the model agrees with the human —
    same sign for a decided pair, or both tied. ε is chosen to maximise

        acc(ε) = (concordant(ε) + both_tied(ε)) / N,   ε ∈ {|m_i|} ∪ {0}.

    Sorting the |m_i| once makes every candidate ε a prefix (model ties) / suffix (model decisions)
    split, so the search is O(N log N). Among equally good ε the smallest is returned.
    """
    label_array, margin_array = _as_arrays(labels, margins)
    n = label_array.size
    if n == 0:
        return AccuracyWithTies(float("nan"), 0.0)
    abs_margin = np.abs(margin_array)
    concordant = (label_array != 0) & (np.sign(margin_array).astype(np.int64) == label_array)
    human_tie = label_array == 0

    order = np.argsort(abs_margin, kind="stable")
    sorted_abs = abs_margin[order]
    ties_up_to = np.cumsum(human_tie[order])  # human ties among the k+1 smallest |m|
    concordant_after = concordant.sum() - np.cumsum(concordant[order])  # concordant among the rest
    # ε = sorted_abs[k] makes every pair with equal |m| a model tie: score only at each group's end.
    group_end = np.append(sorted_abs[1:] != sorted_abs[:-1], True)
    candidate_eps = sorted_abs[group_end]
    candidate_hits = ties_up_to[group_end] + concordant_after[group_end]
    if candidate_eps[0] > 0.0:  # ε = 0 with no |m| equal to 0: no model ties at all
        candidate_eps = np.insert(candidate_eps, 0, 0.0)
        candidate_hits = np.insert(candidate_hits, 0, concordant.sum())
    best = int(np.argmax(candidate_hits))  # first maximum = smallest ε
    return AccuracyWithTies(float(candidate_hits[best]) / n, float(candidate_eps[best]))


def accuracy_without_ties(labels, margins) -> float:
    """Concordant pairs / pairs the humans did not tie. A zero margin is not concordant.

    NaN when every human label is a tie.
    """
    label_array, margin_array = _as_arrays(labels, margins)
    decided = label_array != 0
    if not decided.any():
        return float("nan")
    concordant = np.sign(margin_array[decided]).astype(np.int64) == label_array[decided]
    return float(concordant.mean())


def accuracy_table(labels_by_dim: dict[str, object], margins_by_dim: dict[str, object]) -> dict[str, dict]:
    """Per dimension: accuracy with ties, its ε, accuracy without ties and the number of pairs.

    Entries whose label is not 1/0/−1 (missing labels) are dropped per dimension.
    """
    table = {}
    for dim, labels in labels_by_dim.items():
        label_array = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int64).reshape(-1)
        margins = margins_by_dim[dim]
        margin_array = np.asarray(
            margins.detach().float().cpu() if hasattr(margins, "detach") else margins, dtype=np.float64
        ).reshape(-1)
        keep = np.isin(label_array, (-1, 0, 1))
        with_ties = accuracy_with_ties(label_array[keep], margin_array[keep])
        table[dim] = {
            "accuracy_with_ties": with_ties.accuracy,
            "epsilon": with_ties.epsilon,
            "accuracy_without_ties": accuracy_without_ties(label_array[keep], margin_array[keep]),
            "n_pairs": int(keep.sum()),
            "n_ties": int((label_array[keep] == 0).sum()),
        }
    return table
