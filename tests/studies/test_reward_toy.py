"""The toy-world study of VideoReward: annotation helpers, and a quick end-to-end run that must learn."""

import json

import numpy as np
import pytest
import torch

from alignment.data import read_snapshot
from alignment.reward.train import learning_rate_factor
from studies.cli import main
from studies.reward_toy import assign_splits, judge_pairs, majority_labels

torch.set_num_threads(2)

# The quick study (512 training pairs, 12 epochs, the model and its control) is the setup of the first test
# that reads it: 90 s on an idle 2-core machine, several times that on a busy one.
pytestmark = [pytest.mark.study, pytest.mark.timeout(1800)]


def test_majority_labels_strict_majority_else_tie():
    votes = np.array(
        [
            [[1, 0, -1], [1, 0, 1], [-1, 0, 1]],  # VQ 1 (2 of 3), MQ 0 (3 of 3), TA 1 (2 of 3)
            [[1, -1, 0], [0, 1, 0], [-1, 0, -1]],  # VQ, MQ: three different votes → tie; TA 0 (2 of 3)
        ],
        dtype=np.int8,
    )  # (N=2, k=3, D=3)
    assert majority_labels(votes).tolist() == [[1, 0, 1], [0, 0, 0]]
    assert majority_labels(np.array([[[1], [1], [-1], [-1]]])).tolist() == [[0]]  # 2 of 4 is no majority


def test_judging_maps_screen_sides_back_to_a_and_b():
    differences = np.array([[0.5, -0.5, 0.0]] * 400)  # A better in VQ, B in MQ, equal in TA
    rng = np.random.default_rng(0)
    votes, judgments = judge_pairs(differences, annotators_per_pair=3, pool_size=4, mix={"careful": 1.0}, rng=rng)
    assert votes.shape == (400, 3, 3) and len(judgments) == 1200
    sides = np.array([row["a_on_left"] for row in judgments])
    assert 0.4 < sides.mean() < 0.6  # A is shown on both sides
    labels = majority_labels(votes)
    assert (labels == [1, -1, 0]).mean(axis=0).min() > 0.95  # careful annotators: lapses only
    biased, _ = judge_pairs(differences, annotators_per_pair=1, pool_size=1, mix={"left_biased": 1.0}, rng=rng)
    # Position bias becomes noise in A/B terms, not a preference for A: on TA (no difference) A and B win alike.
    assert abs((biased[:, 0, 2] == 1).mean() - (biased[:, 0, 2] == -1).mean()) < 0.12
    with pytest.raises(ValueError, match="exceeds the pool"):
        judge_pairs(differences, annotators_per_pair=3, pool_size=2, mix=None, rng=rng)


def test_splits_hold_out_whole_prompts():
    prompts = [f"prompt {i % 20}" for i in range(100)]
    split = assign_splits(prompts, test_prompts=5, val_prompts=3, rng=np.random.default_rng(1))
    assert sorted(list(split.values()).count(name) for name in ("test", "val", "train")) == [3, 5, 12]
    with pytest.raises(ValueError, match="no training prompt"):
        assign_splits(prompts, test_prompts=15, val_prompts=5, rng=np.random.default_rng(1))


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "study"
    assert main(["reward-toy", "--quick", "--quiet", "--output-dir", str(out)]) == 0
    return out


def _learned_vs_control(quick_study, dim):
    result = json.loads((quick_study / "result.json").read_text())
    model, control = result["variants"]["bt_ties"]["test"], result["variants"]["shuffled"]["test"]
    assert result["ceiling"][dim]["accuracy_without_ties"] > 0.8  # the labels carry the oracle's signal
    assert model[dim]["n_pairs"] == result["counts"]["test"]
    return model[dim]["accuracy_without_ties"], control[dim]["accuracy_without_ties"]


def test_quick_study_learns_visual_quality_beyond_chance_and_a_shuffled_label_control(quick_study):
    learned, shuffled = _learned_vs_control(quick_study, "VQ")
    assert learned >= 0.65, f"VQ: {learned:.3f} without ties is near chance (0.5)"
    assert learned >= shuffled + 0.08, f"VQ: {learned:.3f} is not clearly above the control's {shuffled:.3f}"


def test_quick_study_learns_motion_quality_beyond_chance_and_a_shuffled_label_control(quick_study):
    learned, shuffled = _learned_vs_control(quick_study, "MQ")
    assert learned >= 0.65, f"MQ: {learned:.3f} without ties is near chance (0.5)"
    assert learned >= shuffled + 0.08, f"MQ: {learned:.3f} is not clearly above the control's {shuffled:.3f}"


def test_quick_study_fits_text_alignment_beyond_a_shuffled_label_control(quick_study):
    """TA on held-out prompts needs many prompts: the quick split (32 training prompts, 12 test prompts) is
    noise there, so the full-scale figure lives in issue 7's note (85.2 % against the oracle's
    92.2 % with 14,336 training pairs). Here: TA is learned from its labels on the training pairs, which
    a control trained on shuffled labels cannot do."""
    result = json.loads((quick_study / "result.json").read_text())
    fit, control = result["variants"]["bt_ties"]["train"]["TA"], result["variants"]["shuffled"]["train"]["TA"]
    assert fit["n_pairs"] == result["counts"]["train"]
    learned, shuffled = fit["accuracy_without_ties"], control["accuracy_without_ties"]
    assert learned >= 0.7 and learned >= shuffled + 0.1, f"TA fit: {learned:.3f} (control {shuffled:.3f})"


def test_cosine_schedule_warms_up_then_decays_to_zero():
    factors = [learning_rate_factor(step, warmup_steps=4, total_steps=20, schedule="cosine") for step in range(21)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[12] == pytest.approx(0.5)  # halfway through the 16 steps after the warmup
    assert all(a >= b for a, b in zip(factors[3:], factors[4:])) and factors[20] == pytest.approx(0.0)
    assert learning_rate_factor(20, warmup_steps=4, total_steps=20, schedule="constant") == 1.0


def test_quick_study_snapshot_holds_out_test_prompts(quick_study):
    snapshot = read_snapshot(quick_study / "snapshot")
    prompts = {name: {pair.prompt for pair in snapshot.split(name)} for name in ("train", "val", "test")}
    assert prompts["test"] and not prompts["test"] & (prompts["train"] | prompts["val"])
    assert snapshot.manifest["counts"]["judgments"] == 3 * len(snapshot.pairs)
    shuffled = read_snapshot(quick_study / "snapshot-shuffled")
    # The control differs from the real labels only in the train split.
    for real, control in zip(snapshot.pairs, shuffled.pairs):
        if real.split != "train":
            assert real.labels == control.labels
