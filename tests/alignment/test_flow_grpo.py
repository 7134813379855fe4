"""Flow-GRPO's pieces (alignment/flow/grpo.py): the SDE step's log-probability against a direct Gaussian, the
group advantages, the clipped objective's gradient, and one real step on the tiny Wan."""

import math

import pytest
import torch

from alignment.flow.grpo import (
    group_advantages,
    grpo_loss,
    sample_trajectories,
    sde_step,
    step_log_prob,
    trainable_steps,
)

torch.set_num_threads(2)


def test_the_sde_step_is_a_gaussian_whose_log_prob_matches_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 2, 5, 5, generator=generator)
    v = torch.randn(3, 4, 2, 5, 5, generator=generator)
    sigma, sigma_next, level, sigma_max = 0.6, 0.45, 0.7, 0.95
    step = sde_step(x, v, sigma, sigma_next, noise_level=level, sigma_max=sigma_max, generator=generator)
    std = level * math.sqrt(sigma / (1 - sigma))
    dt = sigma_next - sigma
    mean = x * (1 + std**2 / (2 * sigma) * dt) + v * (1 + std**2 * (1 - sigma) / (2 * sigma)) * dt
    direct = torch.distributions.Normal(mean, std * math.sqrt(-dt)).log_prob(step.next_latents)
    torch.testing.assert_close(step.log_prob, direct.mean(dim=(1, 2, 3, 4)))
    torch.testing.assert_close(step.mean, mean)
    # scoring given next latents gives the same log-prob; a far-away point is less likely
    again = sde_step(x, v, sigma, sigma_next, noise_level=level, sigma_max=sigma_max, next_latents=step.next_latents)
    torch.testing.assert_close(again.log_prob, step.log_prob)
    far = sde_step(x, v, sigma, sigma_next, noise_level=level, sigma_max=sigma_max, next_latents=step.next_latents + 3)
    assert (far.log_prob < step.log_prob).all()
    # at σ = 1 the std uses sigma_max (no division by zero); a tiny noise level approaches Euler's step
    edge = sde_step(x, v, 1.0, 0.9, noise_level=level, sigma_max=sigma_max)
    assert torch.isfinite(edge.log_prob).all()
    assert float(edge.std[0]) == pytest.approx(level * math.sqrt(1.0 / (1 - sigma_max)))
    near_ode = sde_step(x, v, sigma, sigma_next, noise_level=1e-6, sigma_max=sigma_max, generator=generator)
    torch.testing.assert_close(near_ode.next_latents, x + dt * v, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="sigma_next must be below sigma"):
        sde_step(x, v, 0.4, 0.5, noise_level=level, sigma_max=sigma_max)


def _variance_ratios(steps: int, generator: torch.Generator) -> list[float]:
    """Var(x) / Var(x_σ) after each SDE step for unit-Gaussian data, whose exact velocity is
    E[ε − x₀ | x_σ] = x·(2σ − 1) / ((1 − σ)² + σ²) and whose marginal variance is (1 − σ)² + σ²."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    x = torch.randn(100_000, generator=generator)
    ratios = []
    for k in range(steps):
        sigma, sigma_next = float(sigmas[k]), float(sigmas[k + 1])
        velocity = x * (2 * sigma - 1) / ((1 - sigma) ** 2 + sigma**2)
        if sigma_next == 0:
            x = x + (sigma_next - sigma) * velocity
        else:
            x = sde_step(
                x[:, None],
                velocity[:, None],
                sigma,
                sigma_next,
                noise_level=0.7,
                sigma_max=float(sigmas[1]),
                generator=generator,
            ).next_latents[:, 0]
        ratios.append(float(x.var()) / ((1 - sigma_next) ** 2 + sigma_next**2))
    return ratios


def test_the_sde_keeps_the_odes_marginals_as_its_steps_shrink():
    """The SDE's marginals are the ODE's in the continuous limit: with 200 steps the variance of unit-Gaussian
    data stays within 4 % of x_σ's at every σ and ends within 2 %; with 10 steps it is off by up to ~17 %."""
    generator = torch.Generator().manual_seed(1)
    fine = _variance_ratios(200, generator)
    assert max(abs(r - 1) for r in fine[50:]) < 0.04 and abs(fine[-1] - 1) < 0.02
    coarse = _variance_ratios(10, generator)
    assert max(abs(r - 1) for r in coarse) > max(abs(r - 1) for r in fine[20:])


def test_advantages_are_standardised_within_each_prompts_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 0.5, -0.5])
    groups = ["a", "a", "a", "b", "b", "c", "c"]
    advantages = group_advantages(rewards, groups)
    for key in "abc":
        members = torch.tensor([i for i, g in enumerate(groups) if g == key])
        assert float(advantages[members].mean()) == pytest.approx(0.0, abs=1e-6)
    assert advantages[:3].tolist() == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-3)  # population std
    assert advantages[3:5].tolist() == [0.0, 0.0]  # equal rewards: nothing to learn from that prompt
    assert advantages[5:].tolist() == pytest.approx([1.0, -1.0], abs=1e-3)
    with pytest.raises(ValueError, match="7 rewards but 2 group keys"):
        group_advantages(rewards, ["a", "b"])


def test_the_clipped_objective_raises_good_samples_and_lowers_bad_ones_within_the_clip():
    old = torch.zeros(2)
    log_prob = torch.zeros(2, requires_grad=True)
    parts = grpo_loss(log_prob, old, torch.tensor([1.0, -1.0]), clip_range=0.2)
    parts.loss.backward()
    assert log_prob.grad[0] < 0 < log_prob.grad[1]  # descent raises log π of the good sample, lowers the bad one
    # outside the clip range in the advantage's direction: no gradient (the update went far enough)
    log_prob = torch.tensor([0.5, -0.5], requires_grad=True)
    parts = grpo_loss(log_prob, old, torch.tensor([1.0, -1.0]), clip_range=0.2)
    parts.loss.backward()
    assert log_prob.grad.tolist() == [0.0, 0.0] and float(parts.clip_fraction) == 1.0
    # advantages are clipped to ±adv_clip_max
    log_prob = torch.zeros(1, requires_grad=True)
    grpo_loss(log_prob, torch.zeros(1), torch.tensor([100.0]), adv_clip_max=5.0).loss.backward()
    assert float(log_prob.grad[0]) == pytest.approx(-5.0)
    # the KL term pulls the step's mean to the reference's
    mean = torch.ones(2, 3, requires_grad=True)
    parts = grpo_loss(
        torch.zeros(2),
        torch.zeros(2),
        torch.zeros(2),
        kl_weight=0.5,
        mean=mean,
        reference_mean=torch.zeros(2, 3),
        std=torch.full((2,), 0.5),
    )
    assert float(parts.kl) == pytest.approx(1.0 / (2 * 0.25))
    parts.loss.backward()
    assert (mean.grad > 0).all()
    with pytest.raises(ValueError, match="kl_weight > 0 needs"):
        grpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), kl_weight=1.0)


def test_one_real_grpo_step_on_the_tiny_wan(tmp_path):
    """Sample a group per prompt with the SDE on the tiny Wan with a LoRA, recompute each step's log π (equal to
    the sampling-time one before any update: ratio 1), reward, advantages, one optimiser step: the LoRA moves
    and log π of the best sample's steps rises."""
    from alignment.flow import load_policy
    from alignment.flow.sample import initial_noise
    from alignment.flow.tiny import build_tiny_wan_policy

    policy = load_policy(build_tiny_wan_policy(tmp_path / "wan", pixel_patch=4, num_layers=2))
    policy.add_lora(rank=4)
    prompts = ["a red circle moving left"] * 3 + ["a blue square moving up"] * 3
    text = policy.pad_text(policy.encode_prompts(prompts))
    noise = initial_noise(range(len(prompts)), policy.latent_shape())
    trajectory = sample_trajectories(policy, text, noise, steps=4, generator=torch.Generator().manual_seed(0))
    assert trajectory.latents.shape[:2] == (6, 5) and trajectory.log_probs.shape == (6, 4)
    steps = trainable_steps(trajectory)
    assert steps == [0, 1, 2]  # the last step, to σ = 0, is noise-free
    rewards = trajectory.final.mean(dim=(1, 2, 3, 4))  # any score of the samples
    advantages = group_advantages(rewards, prompts)
    trainable = [p for p in policy.transformer.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.SGD(trainable, lr=1.0)
    for k in steps:
        step = step_log_prob(policy, trajectory, k, noise_level=0.7)
        torch.testing.assert_close(step.log_prob, trajectory.log_probs[:, k], atol=1e-4, rtol=0)
        grpo_loss(step.log_prob, trajectory.log_probs[:, k], advantages, clip_range=0.2).loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable))
    best = int(torch.argmax(advantages))
    with torch.no_grad():
        after = step_log_prob(policy, trajectory, 1, noise_level=0.7).log_prob
    assert after[best] > trajectory.log_probs[best, 1]


def _small_reward_model(folder):
    from alignment.reward.config import RewardModelConfig
    from alignment.reward.model import RewardModel, save_reward_model

    torch.manual_seed(0)
    config = RewardModelConfig(
        backbone="small",
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        frame_size=32,
        num_frames=4,
        tubelet=(2, 8, 8),
        vocab_size=512,
        fps=None,
    )
    return save_reward_model(RewardModel(config), folder)


def test_flow_grpo_trains_resumes_and_writes_a_loadable_lora(tmp_path):
    """``python -m alignment flow-grpo`` on the tiny Wan with a small VideoReward: steps record the reward's mean
    and std, the KL and clip fraction; evaluations the validation reward; a run stopped at a checkpoint resumes
    to the same losses; ``final/`` loads as a policy."""
    import json

    from alignment.cli import main
    from alignment.flow import load_policy
    from alignment.flow.tiny import build_tiny_wan_policy

    policy = build_tiny_wan_policy(tmp_path / "wan", pixel_patch=4, num_layers=2)
    reward = _small_reward_model(tmp_path / "reward")
    (tmp_path / "prompts.txt").write_text("a red circle moving left\na blue square moving up\na green triangle\n")
    base = {
        "policy": str(policy),
        "reward_model": str(reward),
        "prompt_file": str(tmp_path / "prompts.txt"),
        "group_size": 3,
        "sample_steps": 3,
        "batch_size": 2,
        "lora_rank": 4,
        "learning_rate": 1e-3,
        "eval_sample_steps": 3,
        "max_eval_items": 2,
        "kl_weight": 0.04,
        "clip_range": 0.2,
        "progress": False,
    }
    (tmp_path / "grpo.json").write_text(json.dumps({**base, "output_dir": str(tmp_path / "run")}))
    assert main(["flow-grpo", "--config", str(tmp_path / "grpo.json"), "--set", "max_steps=2"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    steps = metrics["train_loss"]
    assert [s["step"] for s in steps] == [1, 2]
    assert {"reward_mean", "reward_std", "kl", "clip_fraction", "reward_vq", "reward_mq", "reward_ta"} <= set(steps[0])
    assert steps[0]["kl"] == 0.0  # the LoRA starts at zero: the policy is the reference
    assert steps[1]["kl"] > 0.0
    assert metrics["eval"][-1]["n_items"] == 2 and "reward_mean" in metrics["eval"][-1]
    trained = load_policy(tmp_path / "run" / "final")
    assert trained.transformer is not None

    # interrupted after step 1 (a checkpoint), resumed to step 2: the same losses as the straight run
    (tmp_path / "again.json").write_text(json.dumps({**base, "output_dir": str(tmp_path / "again")}))
    main(["flow-grpo", "--config", str(tmp_path / "again.json"), "--set", "max_steps=1", "--set", "save_every_steps=1"])
    main(["flow-grpo", "--config", str(tmp_path / "again.json"), "--set", "max_steps=2", "--set", "save_every_steps=1"])
    resumed = json.loads((tmp_path / "again" / "metrics.json").read_text())["train_loss"]
    assert [s["loss"] for s in resumed] == pytest.approx([s["loss"] for s in steps], rel=1e-4, abs=1e-6)


def test_flow_grpo_refuses_a_config_it_cannot_train(tmp_path):
    from alignment.flow.grpo_train import FlowGRPOConfig, check_grpo_config

    ok = {"output_dir": "x", "policy": "p", "reward_model": "r", "prompt_file": "prompts.txt"}
    with pytest.raises(ValueError, match="exactly one of `snapshot`"):
        check_grpo_config(FlowGRPOConfig(**{**ok, "snapshot": "s"}))
    with pytest.raises(ValueError, match="group_size 1: needs ≥ 2"):
        check_grpo_config(FlowGRPOConfig(**ok, group_size=1))
    with pytest.raises(ValueError, match="dimension_weights are all 0"):
        check_grpo_config(FlowGRPOConfig(**ok, dimension_weights=(0.0, 0.0, 0.0)))
