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
def test_quick_flow_toy_study(quick_toy_policy, tmp_path, capsys):
    output_dir = tmp_path / "study"
    argv = ["flow-toy", "--output-dir", str(output_dir), "--quick", "--quiet", "--base-policy", str(quick_toy_policy)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Flow-DPO, constant β |" in printed and "flow-toy: flow-dpo wins" in printed

    result = json.loads((output_dir / "result.json").read_text())
    policy_record = json.loads((quick_toy_policy / TOY_POLICY_FILE).read_text())
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
    assert implicit_preference_accuracy(output_dir, quick_toy_policy) >= 0.65


def implicit_preference_accuracy(output_dir, base_policy) -> float:
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
    base = load_policy(base_policy)
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


def _fake_result(seed: int, config) -> dict:
    """A finished seed's result.json as run_flow_toy_study writes it, with win rates that depend on the seed."""
    rates = {"sft": 0.5 + 0.01 * seed, "flow-rwr": 0.55, "flow-dpo": 0.6 + 0.02 * seed, "flow-dpo-time": 0.52}
    return {
        "methods": {
            name: {
                "description": name,
                "vs_base": {
                    score: {"win_rate": rate, "ci_low": rate - 0.05, "ci_high": rate + 0.05, "tie_rate": 0.1}
                    for score in ("vq", "mq", "ta", "overall")
                },
            }
            for name, rate in rates.items()
            if name in config.methods
        },
        "base_scores_mean": {"overall": 0.4},
        "seconds": 1.0,
    }


def test_seeds_are_whole_studies_resumed_by_seed_and_summarised_across_seeds(tmp_path):
    """``--seeds``: one study per seed (its own base policy seed), finished seeds read back rather than rerun,
    an unfinished seed's folder cleared but for its base policy, and a t-interval across seeds."""
    from scipy import stats

    from studies.flow_toy import FlowToyStudyConfig, format_seeds_table, run_flow_toy_seeds

    ran = []

    def run_one(config, *, log=print):
        ran.append((config.seed, config.base_policy_seed, config.output_dir))
        result = _fake_result(config.seed, config)
        (tmp_path / "out" / f"seed-{config.seed}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / f"seed-{config.seed}" / "result.json").write_text(json.dumps(result))
        return result

    config = FlowToyStudyConfig(output_dir=str(tmp_path / "out"), seeds=(0, 1, 2))
    summary = run_flow_toy_seeds(config, run_one=run_one, log=lambda *_: None)
    assert [(seed, policy_seed) for seed, policy_seed, _ in ran] == [(0, 0), (1, 1), (2, 2)]
    dpo = summary["methods"]["flow-dpo"]["across"]["overall"]
    values = [0.6, 0.62, 0.64]
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
    assert dpo["mean"] == pytest.approx(0.62) and dpo["ci_high"] - dpo["mean"] == pytest.approx(half)
    lead = summary["leads"]["flow-dpo − sft"]
    assert lead["mean"] == pytest.approx(np.mean([0.1, 0.11, 0.12])) and lead["seeds_ahead"] == 3
    assert "seed 2" in format_seeds_table(summary) and "62.0 [" in format_seeds_table(summary)

    # more seeds extend the table; finished ones are read back, an interrupted one restarts (base policy kept)
    (tmp_path / "out" / "seed-3" / "base-policy").mkdir(parents=True)
    (tmp_path / "out" / "seed-3" / "snapshot").mkdir()
    ran.clear()
    summary = run_flow_toy_seeds(
        FlowToyStudyConfig(output_dir=str(tmp_path / "out"), seeds=(3,)),
        run_one=run_one,
        log=lambda *_: None,
    )
    assert [seed for seed, _, _ in ran] == [3] and summary["seeds"] == [0, 1, 2, 3]
    assert (tmp_path / "out" / "seed-3" / "base-policy").is_dir() and not (
        tmp_path / "out" / "seed-3" / "snapshot"
    ).exists()
    assert json.loads((tmp_path / "out" / "seeds.json").read_text())["seeds"] == [0, 1, 2, 3]

    with pytest.raises(ValueError, match="other settings \\(steps differ\\)"):
        run_flow_toy_seeds(FlowToyStudyConfig(output_dir=str(tmp_path / "out"), seeds=(4,), steps=10), run_one=run_one)
    with pytest.raises(ValueError, match="drop --base-policy"):
        run_flow_toy_seeds(FlowToyStudyConfig(output_dir=str(tmp_path / "b"), seeds=(0,), base_policy="x"))
    with pytest.raises(ValueError, match="distinct seeds"):
        run_flow_toy_seeds(FlowToyStudyConfig(output_dir=str(tmp_path / "b"), seeds=(0, 0)))
