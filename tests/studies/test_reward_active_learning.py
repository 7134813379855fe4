"""The active-learning study: labelling by VideoReward's uncertainty against random order, end to end at its
quick size, and its reporting on hand-made results."""

import json
import shutil

import numpy as np
import pytest

from alignment.data import read_snapshot
from studies import active_learning
from studies.active_learning import (
    ActiveLearningConfig,
    Pool,
    accuracy_gain,
    added_pairs,
    build_pool,
    committee_disagreement,
    format_table,
    judgments_saved,
    labelling_order,
    mean_curves,
    pair_rewards,
    tie_entropy,
    uncertainty,
)
from studies.cli import main

pytestmark = [pytest.mark.study, pytest.mark.usefixtures("one_thread")]  # one_thread: tests/studies/conftest.py


def test_judgments_saved_reads_where_each_strategy_first_reaches_each_random_accuracy():
    curves = {
        "random": [
            [{"judgments": 30, "accuracy": 0.5}, {"judgments": 60, "accuracy": 0.6}, {"judgments": 90, "accuracy": 0.7}]
        ],
        "uncertainty": [
            [
                {"judgments": 30, "accuracy": 0.5},
                {"judgments": 60, "accuracy": 0.72},
                {"judgments": 90, "accuracy": 0.69},
            ]
        ],
    }
    curves["entropy"] = [[dict(point) for point in curves["random"][0]]]
    saved = judgments_saved(mean_curves(curves))
    assert list(saved) == ["uncertainty", "entropy"]
    # 0.6 and 0.7 are crossed between 30 (0.5) and 60 judgments (0.72): at 30 + 30 · 0.1/0.22 and 30 + 30 · 0.2/0.22
    assert [(p["random_judgments"], p["judgments"], p["ratio"]) for p in saved["uncertainty"]] == [
        (60, pytest.approx(30 + 30 * 0.1 / 0.22), pytest.approx((30 + 30 * 0.1 / 0.22) / 60)),
        (90, pytest.approx(30 + 30 * 0.2 / 0.22), pytest.approx((30 + 30 * 0.2 / 0.22) / 90)),
    ]
    assert [p["ratio"] for p in saved["entropy"]] == [1.0, 1.0]  # the same curve: the same judgments
    curves["uncertainty"][0][1]["accuracy"] = 0.55
    curves["uncertainty"][0][2]["accuracy"] = 0.58
    assert [p["judgments"] for p in judgments_saved(mean_curves(curves))["uncertainty"]] == [None, None]


def test_accuracy_gain_pairs_each_repeat_with_its_random_run_and_gives_a_t_interval_over_repeats():
    def run(*accuracies):
        return [{"judgments": 30 * (k + 1), "accuracy": a} for k, a in enumerate(accuracies)]

    curves = {
        "random": [run(0.5, 0.6, 0.7), run(0.4, 0.5, 0.6)],
        "uncertainty": [run(0.5, 0.62, 0.74), run(0.4, 0.51, 0.60)],
    }
    (gain,) = accuracy_gain(curves).values()
    # per repeat, the mean difference after the shared first round: (2 + 4) / 2 = 3 and (1 + 0) / 2 = 0.5 points
    assert gain["repeats"] == 2 and gain["gain"] == pytest.approx(1.75)
    half = 12.7062 * np.std([3.0, 0.5], ddof=1) / np.sqrt(2)  # t(0.975, 1 degree of freedom)
    assert (gain["low"], gain["high"]) == (pytest.approx(1.75 - half, abs=1e-3), pytest.approx(1.75 + half, abs=1e-3))
    assert [(p["judgments"], p["gain"]) for p in gain["per_round"]] == [
        (60, pytest.approx(1.5)),
        (90, pytest.approx(2.0)),
    ]

    single = accuracy_gain({"random": curves["random"][:1], "uncertainty": curves["uncertainty"][:1]})["uncertainty"]
    assert single["gain"] == pytest.approx(3.0) and single["low"] is None and "by_dimension" not in single

    # Per dimension, the same paired rule: here uncertainty gains TA points and loses MQ points in both repeats.
    for name, shift in (
        ("random", {"VQ": 0.0, "MQ": 0.0, "TA": 0.0}),
        ("uncertainty", {"VQ": 0.0, "MQ": -0.02, "TA": 0.04}),
    ):
        for run in curves[name]:
            for k, point in enumerate(run):
                point["by_dimension"] = {dim: 0.6 + (shift[dim] if k else 0.0) for dim in shift}
    by_dimension = accuracy_gain(curves)["uncertainty"]["by_dimension"]
    assert {dim: round(g["gain"], 6) for dim, g in by_dimension.items()} == {"VQ": 0.0, "MQ": -2.0, "TA": 4.0}
    assert by_dimension["TA"]["low"] == pytest.approx(4.0)  # the same in both repeats: no spread
    mean = mean_curves(curves)
    result = {
        "config": {"repeats": 2},
        "pool_pairs": 10,
        "test_pairs": 5,
        "mean": mean,
        "judgments_saved": judgments_saved(mean),
        "accuracy_gain": accuracy_gain(curves),
    }
    assert (
        "uncertainty − random, test accuracy after the first round: +1.8 points (95 % interval over 2 repeats: "
        f"{1.75 - half:+.1f} to {1.75 + half:+.1f}); by round: 60 +1.5, 90 +2.0\n"
        "  by dimension: VQ +0.0 [+0.0, +0.0], MQ -2.0 [-2.0, -2.0], TA +4.0 [+4.0, +4.0]"
    ) in format_table(result)


def test_added_pairs_reads_how_far_apart_and_how_often_tied_the_pairs_each_order_labelled(tmp_path):
    # pool positions 0..3 are rows 10..13; row 12's VQ is tied, row 13's TA
    rows = [{"vq": 1, "mq": -1, "ta": 1}] * 12 + [{"vq": 0, "mq": 1, "ta": 1}, {"vq": 1, "mq": 1, "ta": 0}]
    differences = np.zeros((14, 3))
    differences[10:] = [[0.5, -0.4, 0.2], [0.1, -0.2, 0.3], [0.0, 0.6, 0.1], [-0.3, 0.2, 0.0]]
    data = Pool(rows, np.arange(10, 14), np.array([0]), np.array([1]), tmp_path, differences)
    out = added_pairs(data, {"random": [[0, 1], [1]], "uncertainty": [[2, 3]], "committee": [[]]})
    assert out["random"]["pairs"] == 3 and out["uncertainty"]["pairs"] == 2 and "committee" not in out
    assert out["random"]["oracle_difference"] == pytest.approx({"VQ": 0.7 / 3, "MQ": 0.8 / 3, "TA": 0.8 / 3})
    assert out["random"]["tied"] == {"VQ": 0.0, "MQ": 0.0, "TA": 0.0}
    assert out["uncertainty"]["oracle_difference"] == pytest.approx({"VQ": 0.15, "MQ": 0.4, "TA": 0.05})
    assert out["uncertainty"]["tied"] == {"VQ": 0.5, "MQ": 0.0, "TA": 0.5}
    table = format_table(
        {
            "mean": {"random": []},
            "config": {"repeats": 1},
            "pool_pairs": 4,
            "test_pairs": 1,
            "judgments_saved": {},
            "added_pairs": out,
        }
    )
    assert "uncertainty | 0.15 / 0.40 / 0.05 | 50 % / 0 % / 50 %" in table


def test_uncertainty_is_the_margin_of_the_mean_normalised_reward():
    margins = np.array([[1.0, -1.0, 0.0], [0.3, 0.3, 0.3], [-0.9, 0.0, 0.0]])
    # What the queue's priority 1/(1 + |Δr|) reads: opposite dimensions cancel, as they do in r.
    assert uncertainty(margins) == pytest.approx([0.0, 0.3, 0.3])


def test_entropy_is_largest_between_a_tie_and_a_win_and_sums_the_dimensions():
    theta = 5.0
    grid = np.linspace(-6, 6, 1201)
    one = tie_entropy(np.stack([grid, np.full_like(grid, 50.0), np.full_like(grid, -50.0)], axis=1), theta)
    # VQ alone varies (MQ, TA sure wins, entropy ≈ 0): high and nearly flat across the tie band |Δ| < ln θ
    # (Δ = 0 is a tie at P = 2/3), falling as the model grows sure of a win either way
    p_a = 1 / (1 + np.exp(-(grid - np.log(theta))))
    p_b = 1 / (1 + np.exp(grid + np.log(theta)))
    assert np.allclose(one, -sum(p * np.log(p) for p in (p_a, p_b, 1 - p_a - p_b)), atol=1e-9)
    assert np.allclose(one, one[::-1]) and one.max() < np.log(3)
    assert abs(grid[one.argmax()]) < np.log(theta) and one[600] > 0.99 * one.max()
    beyond = grid >= np.log(theta)
    assert np.all(np.diff(one[beyond]) < 0) and one[-1] < 0.1
    assert tie_entropy(np.array([[1.6, 1.6, 1.6]]), theta)[0] == pytest.approx(
        3 * tie_entropy(np.array([[1.6, 50.0, 50.0]]), theta)[0], rel=1e-6
    )
    raw = np.array([[40.0, 40.0, 40.0], [0.5, 30.0, 30.0], [0.5, 0.5, 0.5], [3.0, 3.0, 3.0]])
    assert labelling_order("entropy", [(raw, np.ones(3))], theta).tolist() == [2, 3, 1, 0]
    # the queue's rule reads normalised margins: raw / std
    assert labelling_order(
        "uncertainty", [(np.array([[4.0, 0, 0], [0.0, 1, 0]]), np.array([8.0, 1, 1]))], theta
    ).tolist() == [0, 1]
    with pytest.raises(ValueError, match="reads no margins"):
        labelling_order("random", [(raw, np.ones(3))], theta)


def test_the_committee_ranks_first_the_pairs_its_models_disagree_on_not_the_close_ones():
    # Pair 0: every member calls it a tie (the pair the margin orders pick first, and annotators tie);
    # pair 1: a sure win for all; pair 2: the members disagree on VQ's sign; pair 3: on MQ's size, a little.
    first = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [2.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    second = np.array([[0.1, 0.0, 0.0], [5.0, 5.0, 5.0], [-2.0, 1.0, 1.0], [1.0, 1.5, 1.0]])
    third = np.array([[0.0, 0.1, 0.0], [5.0, 5.0, 5.0], [0.0, 1.0, 1.0], [1.0, 0.5, 1.0]])
    members = [(first, np.ones(3)), (second, np.ones(3)), (third, np.ones(3))]
    assert labelling_order("committee", members, 5.0).tolist() == [2, 3, 0, 1]
    assert labelling_order("uncertainty", members, 5.0)[0] == 0
    # each member's margins are normalised by its own reward scale: a member twice as wide agrees
    wide = [(first, np.ones(3)), (2 * first, np.full(3, 2.0))]
    assert committee_disagreement(wide) == pytest.approx(np.zeros(4))
    assert committee_disagreement(members)[2] == pytest.approx(2.0)  # VQ 2, −2, 0: std 2; MQ, TA agree
    with pytest.raises(ValueError, match="at least 2 models"):
        labelling_order("committee", members[:1], 5.0)


def test_a_pool_too_small_for_the_rounds_is_refused_before_anything_is_rendered(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"initial 16 \+ 5 rounds × batch 16 = 96 labelled pairs, but the pool has 72"):
        main(["active-learning", "--output-dir", str(tmp_path / "small"), "--quick", "--quiet", "--rounds", "6"])
    assert not (tmp_path / "small").exists()
    with pytest.raises(ValueError, match="test_pairs_per_prompt=4 exceeds pairs_per_prompt=2"):
        ActiveLearningConfig.quick(str(tmp_path), pairs_per_prompt=2).check()
    for strategies in (("uncertainty", "random"), ("random", "margin"), ("random", "entropy", "entropy")):
        with pytest.raises(ValueError, match="give random .the baseline. first"):
            ActiveLearningConfig.quick(str(tmp_path), strategies=strategies).check()
    with pytest.raises(ValueError, match="committee_size=1: a committee needs at least 2 models"):
        ActiveLearningConfig.quick(str(tmp_path), committee_size=1).check()


def test_the_pool_is_judged_and_the_test_pairs_carry_the_oracles_verdict(tmp_path, monkeypatch):
    config = ActiveLearningConfig.quick(str(tmp_path / "pool"))
    data = build_pool(config, log=lambda *_: None)

    def render(*args, **kwargs):
        raise AssertionError("a resumed study renders nothing")

    # Resumed: the clips, prompts and oracle scores are read back, and the pool comes out the same.
    monkeypatch.setattr("alignment.toyworld.make_pairs", render)
    again = build_pool(config, log=lambda *_: None)
    assert again.rows == data.rows and all(
        np.array_equal(getattr(again, name), getattr(data, name)) for name in ("pool", "val", "test")
    )
    with pytest.raises(ValueError, match="96 pairs, but this study renders 72; it belongs to another study"):
        build_pool(
            ActiveLearningConfig.quick(str(tmp_path / "pool"), pairs_per_prompt=4, n_prompts=18), log=lambda *_: None
        )
    prompts = {
        name: {data.rows[i]["prompt"] for i in indices}
        for name, indices in (("pool", data.pool), ("val", data.val), ("test", data.test))
    }
    assert len(prompts["test"]) == config.test_prompts and len(prompts["val"]) == config.val_prompts
    assert not (prompts["pool"] & prompts["test"]) and not (prompts["pool"] & prompts["val"])
    assert len(data.pool) == (24 - 4 - 2) * 4 and len(data.test) == 4 * 4 and len(data.val) == 2 * 4
    oracle = {json.loads(line)["video"]: json.loads(line) for line in (data.media_root / "oracle.jsonl").open()}
    for i in data.test:
        row = data.rows[i]
        for dim in ("vq", "mq", "ta"):
            assert row[dim] == np.sign(oracle[row["video_a"]][dim] - oracle[row["video_b"]][dim])
    # the annotators' majority is not the oracle's sign everywhere: they tie close pairs and err
    disagreements = sum(
        data.rows[i][dim] != np.sign(oracle[data.rows[i]["video_a"]][dim] - oracle[data.rows[i]["video_b"]][dim])
        for i in data.pool
        for dim in ("vq", "mq", "ta")
    )
    assert disagreements > 0


def test_a_policy_vs_base_pool_puts_the_cleaner_generator_on_either_side(tmp_path):
    data = build_pool(ActiveLearningConfig.quick(str(tmp_path / "pool"), policy_p_clean=1.0), log=lambda *_: None)
    clean = np.array([[row["generator_a"] == "toy-clean", row["generator_b"] == "toy-clean"] for row in data.rows])
    assert clean.any(axis=1).all() and clean[:, 0].sum() > 10 and clean[:, 1].sum() > 10


@pytest.mark.slow
def test_quick_study_labels_the_pairs_the_last_model_was_least_sure_about_and_resumes(tmp_path, capsys, monkeypatch):
    output_dir = tmp_path / "active"
    two = ["--strategies", "random", "uncertainty"]
    assert main(["active-learning", "--output-dir", str(output_dir), "--quick", "--quiet", *two]) == 0
    printed = capsys.readouterr().out
    assert "judgments | random | uncertainty" in printed and "active-learning:" in printed
    assert "uncertainty − random, test accuracy after the first round:" in printed
    result = json.loads((output_dir / "result.json").read_text())
    for strategy in ("random", "uncertainty"):
        (curve,) = result["curves"][strategy]
        assert [point["pairs"] for point in curve] == [16, 32]
        assert [point["judgments"] for point in curve] == [48, 96]  # 3 annotators a pair
        assert all(0.0 <= point["accuracy"] <= 1.0 for point in curve)
    assert result["curves"]["random"][0][0] == result["curves"]["uncertainty"][0][0]  # one shared first round
    assert {strategy: summary["pairs"] for strategy, summary in result["added_pairs"].items()} == {
        "random": 16,
        "uncertainty": 16,
    }

    # The uncertainty round labelled exactly the unlabelled pool pairs the first model was least sure about.
    config = ActiveLearningConfig.quick(str(output_dir), strategies=("random", "uncertainty"))
    data = build_pool(config, log=lambda *_: None)
    runs = output_dir / "runs"

    def labelled(name):
        return {p.pair_id for p in read_snapshot(runs / name / "snapshot").split("train")}

    initial, after, random_after = labelled("r0-initial"), labelled("r0-uncertainty-01"), labelled("r0-random-01")
    assert initial < after and initial < random_after and len(after) == len(random_after) == 32
    assert {p.pair_id for p in read_snapshot(runs / "r0-initial" / "snapshot").split("val")} == set(data.val.tolist())
    candidates = np.array([i for i in data.pool if i not in initial])
    raw, reward_std = pair_rewards(runs / "r0-initial" / "reward" / "model", data, candidates)
    margins = uncertainty(raw / reward_std)
    chosen = np.isin(candidates, list(after))
    assert chosen.sum() == 16 and margins[chosen].max() <= margins[~chosen].min()

    # Finished: refused, unless extended; the rounds it has are neither trained nor scored again.
    with pytest.raises(FileExistsError, match="already holds a finished study"):
        main(["active-learning", "--output-dir", str(output_dir), "--quick", "--quiet", *two])
    with pytest.raises(ValueError, match="was started with batch=16, not 8; resume it with the same settings"):
        main(["active-learning", "--output-dir", str(output_dir), "--quick", "--quiet", *two, "--batch", "8"])
    ranks_next = runs / "r0-uncertainty-01" / "outcome-uncertainty.json"  # was the last round; now ranks the pool
    finished = {path: path.stat().st_mtime_ns for path in runs.glob("*/outcome-*.json") if path != ranks_next}
    finished.update({path: path.stat().st_mtime_ns for path in runs.glob("*/reward/metrics.json")})
    assert main(["active-learning", "--output-dir", str(output_dir), "--quick", "--quiet", *two, "--rounds", "3"]) == 0
    assert finished == {path: path.stat().st_mtime_ns for path in finished}
    longer = json.loads((output_dir / "result.json").read_text())
    for strategy in ("random", "uncertainty"):
        assert longer["curves"][strategy][0][:2] == result["curves"][strategy][0]
        assert [point["pairs"] for point in longer["curves"][strategy][0]] == [16, 32, 48]
    assert json.loads(ranks_next.read_text())["chosen"] is not None
    third = labelled("r0-uncertainty-02")
    assert third > after

    # A third strategy joins the finished study: only its own rounds train; it labels the pairs whose
    # BT-with-ties predictions the first model was least certain of.
    # The first model's margins on the pool, kept when uncertainty ranked it, are not computed again.
    finished = {path: path.stat().st_mtime_ns for path in runs.glob("*/reward/metrics.json")}
    scored = []
    monkeypatch.setattr(
        active_learning,
        "pair_rewards",
        lambda model_dir, *args: scored.append(model_dir.parent.parent.name) or pair_rewards(model_dir, *args),
    )
    three = ["--strategies", "random", "uncertainty", "entropy"]
    assert (
        main(["active-learning", "--output-dir", str(output_dir), "--quick", "--quiet", "--rounds", "3", *three]) == 0
    )
    assert scored == ["r0-entropy-01", "r0-entropy-02"]
    assert finished == {path: path.stat().st_mtime_ns for path in finished}
    assert sorted(path.parent.parent.name for path in runs.glob("*/reward/metrics.json") if path not in finished) == [
        "r0-entropy-01",
        "r0-entropy-02",
    ]
    with_entropy = json.loads((output_dir / "result.json").read_text())
    assert {key: with_entropy["curves"][key] for key in longer["curves"]} == longer["curves"]
    assert list(with_entropy["judgments_saved"]) == ["uncertainty", "entropy"]
    entropy = tie_entropy(raw, config.theta)
    chosen = np.isin(candidates, list(labelled("r0-entropy-01")))
    assert chosen.sum() == 16 and entropy[chosen].min() >= entropy[~chosen].max()
    assert "judgments | random | uncertainty | entropy" in capsys.readouterr().out

    # Cut off in a round: it starts again there, and comes to the same pairs and curve.
    (output_dir / "result.json").unlink()
    shutil.rmtree(runs / "r0-uncertainty-02" / "reward")
    assert (
        main(["active-learning", "--output-dir", str(output_dir), "--quick", "--quiet", "--rounds", "3", *three]) == 0
    )
    assert labelled("r0-uncertainty-02") == third
    assert json.loads((output_dir / "result.json").read_text())["curves"] == with_entropy["curves"]

    # The committee order joins: the first round's model and two more from other seeds score the pool (the
    # first model's margins are read from margins.npz), and it labels the pairs they disagree on most.
    scored.clear()
    finished = {path: path.stat().st_mtime_ns for path in runs.glob("**/reward/metrics.json")}
    assert (
        main(
            [
                "active-learning",
                "--output-dir",
                str(output_dir),
                "--quick",
                "--quiet",
                "--rounds",
                "2",
                "--strategies",
                "random",
                "committee",
            ]
        )
        == 0
    )
    assert scored == ["member-1", "member-2", "r0-committee-01"]
    assert finished == {path: path.stat().st_mtime_ns for path in finished}
    members = [
        pair_rewards(runs / "r0-initial" / name / "model", data, candidates)
        for name in ("reward", "member-1/reward", "member-2/reward")
    ]
    assert not np.allclose(members[0][0], members[1][0]) and not np.allclose(members[1][0], members[2][0])
    seeds = [
        json.loads((runs / "r0-initial" / name / "train_config.json").read_text())["seed"]
        for name in ("reward", "member-1/reward", "member-2/reward")
    ]
    assert len(set(seeds)) == 3
    disagreement = committee_disagreement(members)
    chosen = np.isin(candidates, list(labelled("r0-committee-01")))
    assert chosen.sum() == 16 and disagreement[chosen].min() >= disagreement[~chosen].max()
    committee = json.loads((output_dir / "result.json").read_text())
    assert committee["curves"]["random"][0] == with_entropy["curves"]["random"][0][:2]
    assert "committee − random" in capsys.readouterr().out
