"""The Flow-NRG guidance study end to end, at its quick size, on a quick toy base policy; and its reporting on
hand-made results. A few minutes on one CPU thread."""

import json

import pytest

from studies.cli import main
from studies.guidance_toy import GuidanceStudyConfig, goals

SETTINGS = GuidanceStudyConfig("unused").weight_settings


pytestmark = [pytest.mark.study, pytest.mark.usefixtures("one_thread")]  # one_thread: tests/studies/conftest.py


def _rate(win: float, low: float) -> dict:
    return {"win_rate": win, "ci_low": low, "ci_high": min(1.0, win + 0.1)}


def test_goals_read_the_noisy_rows_only():
    def row(reward, weights, vq, mq, ta):
        return {"reward": reward, "weights": weights, "vs_unguided": {"vq": vq, "mq": mq, "ta": ta}}

    good = _rate(0.7, 0.6)
    result = {
        "rows": [
            row("noisy", "vq=0,mq=0,ta=1", _rate(0.5, 0.4), _rate(0.5, 0.4), _rate(0.62, 0.51)),
            row("noisy", "vq=1,mq=1,ta=0", good, _rate(0.49, 0.4), good),
            row("clean", "vq=1,mq=1,ta=0", good, good, good),
        ]
    }
    assert goals(result) == {"ta_only_raises_ta": True, "vq_mq_raises_vq_and_mq": False}
    result["rows"][0]["vs_unguided"]["ta"] = _rate(0.62, 0.49)  # the interval reaches below 50 %
    assert goals(result)["ta_only_raises_ta"] is False


@pytest.mark.slow
def test_quick_guidance_study(quick_toy_policy, tmp_path, capsys):
    output_dir = tmp_path / "guidance"
    assert (
        main(
            [
                "guidance-toy",
                "--output-dir",
                str(output_dir),
                "--quick",
                "--quiet",
                "--base-policy",
                str(quick_toy_policy),
                "--reward-steps",
                "30",
                "--scales",
                "10",
                "30",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "noisy | 0:0:1 | " in printed and "clean | 1:1:1 |" in printed and "guidance-toy:" in printed

    result = json.loads((output_dir / "result.json").read_text())
    assert {(row["reward"], row["weights"]) for row in result["rows"]} == {
        (reward, setting) for reward in ("noisy", "clean") for setting in SETTINGS
    }
    assert result["eval_clips"] == 8 * 4
    for row in result["rows"]:
        assert row["scale"] == result["chosen"][row["reward"]]["scale"] and row["scale"] in (10.0, 30.0)
        assert row["sigma_min"] == 0.0 and row["max_ratio"] == 10.0
        for rate in row["vs_unguided"].values():
            assert 0.0 <= rate["ci_low"] <= rate["win_rate"] <= rate["ci_high"] <= 1.0
    assert set(result["validation_gains"]["noisy"]) == {"w=10,cap=10,sigma_min=0", "w=30,cap=10,sigma_min=0"}
    assert set(result["goals"]) == {"ta_only_raises_ta", "vq_mq_raises_vq_and_mq"}
    noisy, clean = (
        json.loads((output_dir / "rewards" / kind / "metrics.json").read_text()) for kind in ("noisy", "clean")
    )
    assert noisy["noisy"] is True and clean["noisy"] is False
    assert set(result["latent_rewards"]["noisy"]["val_accuracy_by_sigma"]) == {"0", "0.25", "0.5", "0.75"}

    with pytest.raises(FileExistsError, match="already holds a finished study"):
        main(["guidance-toy", "--output-dir", str(output_dir), "--quick", "--quiet"])
