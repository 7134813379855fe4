"""The flow toy-world study end to end (``python -m studies flow-toy --quick``): a quick base policy
pretrained on toy clips, base-policy pairs judged by simulated annotators, a snapshot, a Flow-DPO LoRA,
and the oracle's verdict on held-out prompts. About three to four minutes on one CPU thread."""

import json

import numpy as np
import pytest
import torch

from alignment.data import read_snapshot
from studies.cli import main
from studies.flow_toy import win_rates
from studies.toy_policy import TOY_POLICY_FILE, ToyPolicyConfig, ensure_toy_base_policy

pytestmark = [pytest.mark.study, pytest.mark.usefixtures("one_thread")]  # one_thread: tests/studies/conftest.py


def test_win_rates_count_ties_half_and_bootstrap_over_prompts():
    aligned = np.array([[1.0, 0, 0, 1], [0, 0, 0, 0], [2, 2, 2, 2], [0, 1, 0, 0]])
    base = np.array([[0.0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    rates = win_rates(aligned, base, np.array([0, 0, 1, 1]), bootstrap=500, rng=np.random.default_rng(0))
    assert rates["vq"]["win_rate"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert rates["vq"]["tie_rate"] == pytest.approx(0.25)
    assert rates["overall"]["win_rate"] == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)
    for name in ("vq", "mq", "ta", "overall"):
        assert rates[name]["ci_low"] <= rates[name]["win_rate"] <= rates[name]["ci_high"]
    # MQ: prompt 0 wins 0.25, prompt 1 wins 1.0; resampling two prompts gives only those and their mean
    assert rates["mq"]["win_rate"] == pytest.approx(0.625)
    assert rates["mq"]["ci_low"] == pytest.approx(0.25) and rates["mq"]["ci_high"] == pytest.approx(1.0)


def test_toy_policy_refuses_a_foreign_folder_and_too_narrow_a_network(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="no toy_policy.json"):
        ensure_toy_base_policy(tmp_path / "taken", quick=True)
    from studies.toy_policy import pretrain_toy_policy

    with pytest.raises(ValueError, match="below the 32 values of a token \\(conv codec\\)"):
        pretrain_toy_policy(tmp_path / "narrow", ToyPolicyConfig.quick(num_heads=2, head_dim=8))
    with pytest.raises(ValueError, match="below the 192 values of a token \\(pixel codec\\)"):
        pretrain_toy_policy(tmp_path / "narrow", ToyPolicyConfig.quick(codec="pixel"))
    with pytest.raises(ValueError, match="codec 'vae': choose 'conv' or 'pixel'"):
        pretrain_toy_policy(tmp_path / "narrow", ToyPolicyConfig.quick(codec="vae"))


@pytest.mark.slow
def test_quick_flow_toy_study(tmp_path, capsys):
    output_dir = tmp_path / "study"
    assert main(["flow-toy", "--output-dir", str(output_dir), "--quick", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Flow-DPO, constant β |" in printed and "flow-toy: flow-dpo wins" in printed

    result = json.loads((output_dir / "result.json").read_text())
    policy_record = json.loads((output_dir / "base-policy" / TOY_POLICY_FILE).read_text())
    assert policy_record["config"] == json.loads(json.dumps(vars(ToyPolicyConfig.quick())))
    snapshot = read_snapshot(output_dir / "snapshot")
    assert {pair.split for pair in snapshot.pairs} == {"train", "val"}  # held-out prompts never reach training
    assert result["prompts"]["test"] * result["config"]["eval_seeds"] == result["eval_clips"]

    dpo = result["methods"]["flow-dpo"]
    assert 0.0 <= dpo["vs_base"]["overall"]["ci_low"] <= dpo["vs_base"]["overall"]["win_rate"] <= 1.0
    # The quick study's 64 held-out clips are too few for the oracle win rate to clear 50 % reliably (it
    # ranged 48-58 % in trial runs), so the test asserts what cannot happen by chance instead: measured
    # here, independently of the trainer's loss code, the aligned policy fits the annotators' winners
    # better, relative to the base, than their losers.
    assert implicit_preference_accuracy(output_dir) >= 0.65


def implicit_preference_accuracy(output_dir) -> float:
    """Share of (train pair, σ) draws where the Flow-DPO policy lowered the winner's flow-matching error,
    relative to the base, more than the loser's — on shared noise, three noise levels per pair."""
    from alignment.flow import load_policy
    from alignment.flow.cache import build_cache, sha256_text
    from alignment.flow.model import pad_text_embeds
    from alignment.flow.preference import preference_pairs
    from alignment.flow.train import noised
    from alignment.losses import flow_matching_error

    snapshot = read_snapshot(output_dir / "snapshot")
    pairs = preference_pairs(snapshot.split("train"))
    base = load_policy(output_dir / "base-policy")
    aligned = load_policy(output_dir / "runs" / "flow-dpo" / "final")
    cache = build_cache(
        base,
        [pair.prompt for pair in pairs],
        [v for pair in pairs for v in (pair.winner, pair.loser)],
        cache_dir=output_dir / "cache",
        roots=[snapshot.root],
        progress=False,
    )
    sigma_levels = (0.25, 0.5, 0.75)
    text = pad_text_embeds([cache.text.get(sha256_text(pair.prompt)) for pair in pairs], base.max_sequence_length)
    text = text.repeat(len(sigma_levels), 1, 1)  # (S·N, L, D)
    winners = torch.stack([cache.latents.get(cache.video_keys[pair.winner]) for pair in pairs]).repeat(
        len(sigma_levels), 1, 1, 1, 1
    )  # (S·N, C, t, h, w)
    losers = torch.stack([cache.latents.get(cache.video_keys[pair.loser]) for pair in pairs]).repeat(
        len(sigma_levels), 1, 1, 1, 1
    )
    sigmas = torch.tensor(sigma_levels).repeat_interleave(len(pairs))
    noise = torch.randn(winners.shape, generator=torch.Generator().manual_seed(0))
    gains = {}
    with torch.no_grad():
        for name, latents in (("winner", winners), ("loser", losers)):
            x, target = noised(latents, noise, sigmas)
            errors = [flow_matching_error(policy.velocity(x, sigmas, text), target) for policy in (aligned, base)]
            gains[name] = errors[0] - errors[1]  # < 0: the aligned policy fits this video better than the base
    return float((gains["winner"] < gains["loser"]).float().mean())
