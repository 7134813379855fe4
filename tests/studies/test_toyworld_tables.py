"""The toy world's validation tables (``studies.toyworld_tables``): each oracle score tracks its own defects
and no other, each simulated annotator kind agrees with the oracle as configured; and their commands."""

from __future__ import annotations

import numpy as np
import pytest

from alignment.toyworld import DEFECTS_BY_DIMENSION, DIMENSIONS, make_pairs
from studies.cli import main
from studies.toyworld_tables import agreement_table, correlation_table, spearman

pytestmark = pytest.mark.study

ALL_KINDS = [kind for dim in DIMENSIONS for kind in DEFECTS_BY_DIMENSION[dim]]


def test_spearman_ranks_ties_alike():
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 1.0, 1.0])) == pytest.approx(-np.sqrt(3) / 2)


def test_oracle_correlates_with_its_own_defects_and_not_with_the_others():
    table = correlation_table(1500, seed=0, size=32)
    print("\n" + table.format())
    for dim in DIMENSIONS:
        for kind in ALL_KINDS:
            r = table.by_defect[dim][kind]
            if kind in DEFECTS_BY_DIMENSION[dim]:
                assert r < -0.85, (dim, kind, r)
            else:
                assert abs(r) < 0.2, (dim, kind, r)
        for other in DIMENSIONS:
            r = table.by_dimension[dim][other]
            assert (r < -0.75) if other == dim else (abs(r) < 0.1), (dim, other, r)


def test_oracle_separates_dimensions_on_16_pixel_clips_too():
    table = correlation_table(1500, seed=1, size=16)
    for dim in DIMENSIONS:
        for other in DIMENSIONS:
            r = table.by_dimension[dim][other]
            assert (r < -0.65) if other == dim else (abs(r) < 0.15), (dim, other, r)


def test_annotators_reproduce_their_agreement_on_toy_pairs():
    pairs = make_pairs(48, 4, seed=0)
    differences = np.array([[p.a.scores[d] - p.b.scores[d] for d in DIMENSIONS] for p in pairs] * 10)
    rows = {row.kind: row for row in agreement_table(differences, seed=0)}
    assert abs(rows["careful"].clear_agreement - 0.9) < 0.03
    assert abs(rows["noisy"].clear_agreement - 0.7) < 0.04
    assert abs(rows["spammer"].clear_agreement - 1 / 3) < 0.03
    assert rows["left_biased"].left_rate > rows["careful"].left_rate + 0.25


def test_cli_oracle_table_prints_the_correlation_table(capsys):
    assert main(["oracle-table", "--clips", "120", "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert "oracle | noise | blur | banding" in out and out.count("\nVQ | ") == 2
    assert "120 clips rendered and scored" in out


def test_cli_annotator_agreement_prints_one_row_per_kind(capsys):
    assert main(["annotator-agreement", "--prompts", "4", "--pairs-per-prompt", "2", "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert "judges VQ, MQ and TA of 8 toy pairs" in out
    assert all(f"\n{kind} | " in out for kind in ("careful", "noisy", "spammer", "left_biased"))
    assert "24 judgments per kind" in out
