import itertools

import numpy as np
import pytest
import torch

from alignment.metrics import accuracy_table, accuracy_with_ties, accuracy_without_ties


def brute_force_with_ties(labels, margins):
    best = -1.0
    for eps in sorted({abs(m) for m in margins} | {0.0}):
        hits = 0
        for h, m in zip(labels, margins):
            model = 0 if abs(m) <= eps else (1 if m > 0 else -1)
            hits += model == h
        if hits / len(labels) > best:
            best, best_eps = hits / len(labels), eps
    return best, best_eps


def brute_force_without_ties(labels, margins):
    decided = [(h, m) for h, m in zip(labels, margins) if h != 0]
    return sum((m > 0) == (h > 0) and m != 0 for h, m in decided) / len(decided)


@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force_on_random_data_with_duplicates(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    labels = rng.integers(-1, 2, n)
    # coarse margins: many exact duplicates, zeros and ± pairs with equal |m|
    margins = rng.integers(-4, 5, n) / 2.0 if seed % 2 else rng.normal(size=n) + labels * rng.uniform(0, 2)
    acc, eps = accuracy_with_ties(labels, margins)
    assert (acc, eps) == pytest.approx(brute_force_with_ties(labels.tolist(), margins.tolist()))
    if (labels != 0).any():
        assert accuracy_without_ties(labels, margins) == pytest.approx(
            brute_force_without_ties(labels.tolist(), margins.tolist())
        )


def test_hand_computed_cases():
    # perfect model with ties: ties have the smallest |m|
    assert accuracy_with_ties([1, 0, -1, 0], [2.0, 0.1, -3.0, -0.2]) == (1.0, 0.2)
    # no human ties: ε = 0 keeps every decision
    assert accuracy_with_ties([1, -1, 1], [1.0, -1.0, -0.5]) == (pytest.approx(2 / 3), 0.0)
    assert accuracy_without_ties([1, -1, 1, 0], [1.0, -1.0, -0.5, 7.0]) == pytest.approx(2 / 3)
    # a zero margin is never concordant, but is a model tie at ε = 0
    assert accuracy_without_ties([1, 1], [0.0, 1.0]) == 0.5
    assert accuracy_with_ties([0, 1], [0.0, 1.0]) == (1.0, 0.0)
    assert np.isnan(accuracy_without_ties([0, 0], [1.0, 2.0]))


def test_accepts_tensors_and_rejects_bad_input():
    acc = accuracy_with_ties(torch.tensor([1, 0], dtype=torch.int8), torch.tensor([1.0, 0.0]))
    assert acc.accuracy == 1.0
    with pytest.raises(ValueError, match="labels must be"):
        accuracy_with_ties([2], [1.0])
    with pytest.raises(ValueError, match="differ in length"):
        accuracy_without_ties([1, 1], [1.0])


def test_scales_n_log_n():
    rng = np.random.default_rng(0)
    n = 200_000
    labels = rng.integers(-1, 2, n)
    margins = rng.normal(size=n) + labels
    import time

    start = time.perf_counter()
    acc, eps = accuracy_with_ties(labels, margins)
    assert time.perf_counter() - start < 2.0
    assert 0.5 < acc < 1.0 and eps > 0


def test_accuracy_table_drops_missing_labels():
    table = accuracy_table({"VQ": [1, -100, -1]}, {"VQ": [1.0, 5.0, -1.0]})
    assert table["VQ"]["n_pairs"] == 2
    assert table["VQ"]["accuracy_without_ties"] == 1.0


def test_brute_force_itself_on_exhaustive_tiny_inputs():
    for labels in itertools.product((-1, 0, 1), repeat=3):
        for margins in itertools.product((-1.0, 0.0, 1.0), repeat=3):
            assert accuracy_with_ties(labels, margins) == pytest.approx(brute_force_with_ties(labels, margins))
