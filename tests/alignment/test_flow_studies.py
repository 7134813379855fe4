"""The Flow-NRG guidance study and the active-learning study end to end, at their quick sizes, on one quick
toy base policy; and their reporting on hand-made results. A few minutes on one CPU thread."""

import json

import numpy as np
import pytest
import torch

from alignment.cli import main
from alignment.data import read_snapshot
from alignment.flow.active_learning import judgments_saved, mean_curves
from alignment.flow.guidance_study import GuidanceStudyConfig, goals
from alignment.flow.toy_policy import ensure_toy_base_policy

SETTINGS = GuidanceStudyConfig("unused").weight_settings


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def quick_policy(tmp_path_factory):
    torch.set_num_threads(1)
    return ensure_toy_base_policy(tmp_path_factory.mktemp("toy") / "base-policy", quick=True, progress=False)


def _rate(win: float, low: float) -> dict:
    return {"win_rate": win, "ci_low": low, "ci_high": min(1.0, win + 0.1)}


def test_goals_read_the_noisy_rows_only():
    def row(reward, weights, vq, mq, ta):
        return {"reward": reward, "weights": weights, "vs_unguided": {"vq": vq, "mq": mq, "ta": ta}}

    good = _rate(0.7, 0.6)
    result = {"rows": [row("noisy", "vq=0,mq=0,ta=1", _rate(0.5, 0.4), _rate(0.5, 0.4), _rate(0.62, 0.51)),
                       row("noisy", "vq=1,mq=1,ta=0", good, _rate(0.49, 0.4), good),
                       row("clean", "vq=1,mq=1,ta=0", good, good, good)]}
    assert goals(result) == {"ta_only_raises_ta": True, "vq_mq_raises_vq_and_mq": False}
    result["rows"][0]["vs_unguided"]["ta"] = _rate(0.62, 0.49)  # the interval reaches below 50 %
    assert goals(result)["ta_only_raises_ta"] is False


def test_judgments_saved_finds_the_first_round_uncertainty_reaches_each_random_accuracy():
    curves = {"random": [[{"judgments": 30, "accuracy": 0.5}, {"judgments": 60, "accuracy": 0.6},
                          {"judgments": 90, "accuracy": 0.7}]],
              "uncertainty": [[{"judgments": 30, "accuracy": 0.5}, {"judgments": 60, "accuracy": 0.72},
                               {"judgments": 90, "accuracy": 0.69}]]}
    mean = mean_curves(curves)
    points = judgments_saved(mean)["points"]
    assert [(p["random_judgments"], p["uncertainty_judgments"], p["ratio"]) for p in points] == [
        (60, 60, 1.0), (90, 60, pytest.approx(2 / 3))]
    curves["uncertainty"][0][1]["accuracy"] = 0.55
    curves["uncertainty"][0][2]["accuracy"] = 0.58
    assert [p["uncertainty_judgments"] for p in judgments_saved(mean_curves(curves))["points"]] == [None, None]


@pytest.mark.slow
def test_quick_guidance_study(quick_policy, tmp_path, capsys):
    output_dir = tmp_path / "guidance"
    assert main(["guidance-toy-study", "--output-dir", str(output_dir), "--quick", "--quiet", "--base-policy",
                 str(quick_policy), "--reward-steps", "30", "--scales", "10", "30"]) == 0
    printed = capsys.readouterr().out
    assert "noisy | 0:0:1 | " in printed and "clean | 1:1:1 |" in printed and "guidance-toy-study:" in printed

    result = json.loads((output_dir / "result.json").read_text())
    assert {(row["reward"], row["weights"]) for row in result["rows"]} == {
        (reward, setting) for reward in ("noisy", "clean") for setting in SETTINGS}
    assert result["eval_clips"] == 8 * 4
    for row in result["rows"]:
        assert row["scale"] == result["chosen"][row["reward"]]["scale"] and row["scale"] in (10.0, 30.0)
        assert row["sigma_min"] == 0.0 and row["max_ratio"] == 10.0
        for rate in row["vs_unguided"].values():
            assert 0.0 <= rate["ci_low"] <= rate["win_rate"] <= rate["ci_high"] <= 1.0
    assert set(result["validation_gains"]["noisy"]) == {"w=10,cap=10,sigma_min=0", "w=30,cap=10,sigma_min=0"}
    assert set(result["goals"]) == {"ta_only_raises_ta", "vq_mq_raises_vq_and_mq"}
    noisy, clean = (json.loads((output_dir / "rewards" / kind / "metrics.json").read_text()) for kind in ("noisy", "clean"))
    assert noisy["noisy"] is True and clean["noisy"] is False
    assert set(result["latent_rewards"]["noisy"]["val_accuracy_by_sigma"]) == {"0", "0.25", "0.5", "0.75"}

    with pytest.raises(FileExistsError, match="already holds a finished study"):
        main(["guidance-toy-study", "--output-dir", str(output_dir), "--quick", "--quiet"])


@pytest.mark.slow
def test_quick_active_learning_study_labels_the_least_certain_pairs(quick_policy, tmp_path, capsys):
    from alignment.flow.active_learning import uncertainty
    from alignment.flow.cache import build_cache
    from alignment.flow.model import load_policy

    output_dir = tmp_path / "active"
    assert main(["active-learning-study", "--output-dir", str(output_dir), "--quick", "--quiet", "--base-policy",
                 str(quick_policy)]) == 0
    assert "judgments | random | uncertainty" in capsys.readouterr().out
    result = json.loads((output_dir / "result.json").read_text())
    for strategy in ("random", "uncertainty"):
        (curve,) = result["curves"][strategy]
        assert [point["pairs"] for point in curve] == [8, 16]
        assert [point["judgments"] for point in curve] == [24, 48]  # 3 annotators a pair
        assert all(0.0 <= point["accuracy"] <= 1.0 for point in curve)
    assert result["curves"]["random"][0][0] == result["curves"]["uncertainty"][0][0]  # one shared first round

    # The held-out pairs carry the oracle's labels, decided wherever the scores differ.
    pool = read_snapshot(output_dir / "pool")
    assert {pair.split for pair in pool.pairs} == {"train", "val"}
    # The uncertainty round labelled exactly the unlabelled pairs the first model was least sure about.
    initial = {p.pair_id for p in read_snapshot(output_dir / "runs" / "r0-initial" / "snapshot").split("train")}
    after = {p.pair_id for p in read_snapshot(output_dir / "runs" / "r0-uncertainty-01" / "snapshot").split("train")}
    random_after = {p.pair_id for p in read_snapshot(output_dir / "runs" / "r0-random-01" / "snapshot").split("train")}
    assert initial < after and initial < random_after and len(after) == len(random_after) == 16
    candidates = [p for p in pool.split("train") if p.pair_id not in initial]
    policy = load_policy(quick_policy)
    cache = build_cache(policy, [p.prompt for p in candidates], [v for p in candidates for v in (p.video_a, p.video_b)],
                        cache_dir=output_dir / "cache", roots=[pool.root], progress=False)
    assert cache.encoded_videos == 0  # the study cached them all
    margins = uncertainty(output_dir / "runs" / "r0-initial" / "reward" / "final", candidates, cache, policy)
    chosen = np.array([p.pair_id in after for p in candidates])
    assert margins[chosen].max() <= margins[~chosen].min()
