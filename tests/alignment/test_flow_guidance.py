"""Flow-NRG: the latent reward model (loss, trainer, save/load, CLI) and reward guidance (sign, no-op, CLI).

Everything runs on a tiny random Wan policy and toy-world clips built in temporary folders; nothing is
downloaded.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from alignment.cli import main
from alignment.data import write_snapshot
from alignment.flow import load_policy
from alignment.flow.config import LatentRewardConfig
from alignment.flow.guidance import parse_weights, reward_guidance
from alignment.flow.latent_reward import (
    FrameReadout,
    LatentRewardModel,
    load_latent_reward,
    pair_loss,
    save_latent_reward,
    train_latent_reward,
)
from alignment.flow.sample import initial_noise, sample_latents
from alignment.flow.tiny import build_tiny_wan_policy
from alignment.toyworld import DefectSpec, render_clip, write_mp4

torch.set_num_threads(1)
PROMPTS = [
    "a red square moving left quickly",
    "a blue circle moving up slowly",
    "a green triangle moving right quickly",
]
THETA = 5.0


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> Path:
    return build_tiny_wan_policy(tmp_path_factory.mktemp("policy") / "wan", pixel_patch=4, num_layers=2)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    """Clean clips beat noisy ones on VQ and TA, MQ tied or unjudged; both orders; the last prompt is val."""
    folder = tmp_path_factory.mktemp("snap")
    videos, rows = {}, []
    for index, prompt in enumerate(PROMPTS):
        for name, clip in (
            (f"clean{index}", render_clip(prompt, seed=index)),
            (f"noisy{index}", render_clip(prompt, DefectSpec(noise=1.0), seed=index)),
        ):
            videos[f"videos/{name}.mp4"] = write_mp4(clip, folder / "clips" / f"{name}.mp4")
        base = {"prompt": prompt, "split": "val" if index == 2 else "train"}
        rows.append(
            {
                **base,
                "pair_id": 10 * index,
                "video_a": f"videos/clean{index}.mp4",
                "video_b": f"videos/noisy{index}.mp4",
                "vq": 1,
                "mq": 0,
                "ta": 1,
            }
        )
        rows.append(
            {
                **base,
                "pair_id": 10 * index + 1,
                "video_a": f"videos/noisy{index}.mp4",
                "video_b": f"videos/clean{index}.mp4",
                "vq": -1,
                "mq": None,
                "ta": -1,
            }
        )
        rows.append(
            {
                **base,
                "pair_id": 10 * index + 2,
                "video_a": f"videos/noisy{index}.mp4",
                "video_b": f"videos/clean{index}.mp4",
                "vq": None,
                "mq": None,
                "ta": None,
            }
        )  # unjudged: dropped
    return write_snapshot(rows, folder / "s1", videos=videos)


def config_values(tmp_path, tiny_policy, snapshot, cache_dir, **overrides) -> dict:
    values = {
        "output_dir": str(tmp_path / "run"),
        "policy": str(tiny_policy),
        "snapshot": str(snapshot),
        "cache_dir": str(cache_dir),
        "num_layers": 1,
        "batch_size": 2,
        "epochs": 100,
        "max_steps": 20,
        "learning_rate": 3e-3,
        "eval_every_steps": 5,
        "save_every_steps": 10,
        "progress": False,
    }
    values.update(overrides)
    return values


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_policy, snapshot) -> dict:
    folder = tmp_path_factory.mktemp("latent")
    return train_latent_reward(LatentRewardConfig(**config_values(folder, tiny_policy, snapshot, folder / "cache")))


# --------------------------------------------------------------------------------------------------
# The model and its loss
# --------------------------------------------------------------------------------------------------


def test_body_is_a_copy_of_the_policy_blocks_and_rejects_bad_depths(tiny_policy):
    transformer = load_policy(tiny_policy).transformer
    model = LatentRewardModel.from_policy(transformer, 1)
    assert len(model.blocks) == 1
    for name, value in model.state_dict().items():
        if name.startswith(("blocks.", "patch_embedding.", "condition_embedder.")):
            assert torch.equal(value, transformer.state_dict()[name]), name
    with pytest.raises(ValueError, match="1 to 2 blocks"):
        LatentRewardModel.from_policy(transformer, 3)


def test_pairs_noised_alike_give_the_tie_loss_for_identical_videos(tiny_policy):
    """Same video on both sides, same σ and noise → Δ = 0 exactly, so a tie costs ln((θ+1)/(θ−1)) and a
    preference −log σ(−ln θ) = ln(1 + θ), at any σ."""
    policy = load_policy(tiny_policy)
    model = LatentRewardModel.from_policy(policy.transformer, 1).eval()
    latents = torch.randn(2, *policy.latent_shape())
    text = policy.pad_text(policy.encode_prompts(PROMPTS[:2]))
    noise, sigmas = torch.randn_like(latents), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        ties, _ = pair_loss(
            model,
            {
                "latents_a": latents,
                "latents_b": latents.clone(),
                "text": text,
                "labels": torch.zeros(2, 3, dtype=torch.long),
            },
            sigmas,
            noise,
            theta=THETA,
        )
        wins, stats = pair_loss(
            model,
            {
                "latents_a": latents,
                "latents_b": latents.clone(),
                "text": text,
                "labels": torch.ones(2, 3, dtype=torch.long),
            },
            sigmas,
            noise,
            theta=THETA,
        )
    assert float(ties) == pytest.approx(math.log((THETA + 1) / (THETA - 1)), abs=1e-6)
    assert float(wins) == pytest.approx(math.log(1 + THETA), abs=1e-6)
    assert stats == {"correct": 0.0, "decided": 6.0}


def test_training_lowers_the_loss_and_writes_a_run(trained):
    evals, losses = trained["eval"], [entry["loss"] for entry in trained["train_loss"]]
    assert [e["step"] for e in evals] == [5, 10, 15, 20]
    # four training pairs: the fit falls; the two validation pairs of an unseen prompt are too few to follow
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    assert set(evals[-1]["by_sigma"]) == {"0", "0.25", "0.5", "0.75"}
    assert trained["n_train"] == 4 and trained["n_val"] == 2  # unjudged pairs dropped
    final = Path(trained["final"])
    run = final.parent
    assert json.loads((run / "metrics.json").read_text())["train_loss"][-1]["step"] == 20
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000010", "step-00000020"]
    assert json.loads((final / "latent_reward.json").read_text())["noisy"] is True
    assert (final / "train_config.json").is_file()


def moving_blob_tokens(directions: torch.Tensor, *, frames: int = 5, size: int = 4, width: int = 8) -> torch.Tensor:
    """(B, frames·size·size, width) tokens of a grid on which one 'hot' token walks one cell a frame along a row,
    to the right (direction +1) or the left (−1), from a random start; every other token is background noise."""
    generator = torch.Generator().manual_seed(0)
    batch = directions.shape[0]
    tokens = 0.1 * torch.randn(batch, frames, size, size, width, generator=generator)
    rows = torch.randint(0, size, (batch,), generator=generator)
    for b in range(batch):
        start = 0 if directions[b] > 0 else size - 1
        for f in range(frames):
            col = min(max(start + int(directions[b]) * (f % size), 0), size - 1)
            tokens[b, f, rows[b], col] += torch.ones(width)
    return tokens.reshape(batch, frames * size * size, width)


def test_frame_readout_reads_where_things_move_against_what_the_prompt_asks():
    """TA here is "the blob moves the way the prompt says": which way it moves needs positions (mean-pooled tokens
    are the same for a blob and its mirror image, so the mean readout is blind to it), and whether that is right
    needs the product with the prompt (the same video is good for one prompt and bad for the other)."""
    torch.manual_seed(0)

    def batch(count: int):
        directions, wanted = torch.tensor([1, -1] * count), torch.tensor([1, 1, -1, -1] * (count // 2))
        text = torch.zeros(2 * count, 8)
        text[:, 0] = wanted.float()  # the prompt: "moving right" (+1) or "moving left" (−1)
        return moving_blob_tokens(directions), text, directions * wanted  # +1: moves as asked

    grid = (5, 4, 4)
    tokens, text, target = batch(32)
    readout = FrameReadout(8, heads=2, content=4, hidden=16, dropout=0.0)
    optimizer = torch.optim.Adam(readout.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        loss = torch.nn.functional.softplus(-target * readout(tokens, grid, text)[:, 2]).mean()
        loss.backward()
        optimizer.step()
    test_tokens, test_text, test_target = batch(16)
    with torch.no_grad():
        assert float(((readout(test_tokens, grid, test_text)[:, 2] > 0) == (test_target > 0)).float().mean()) == 1.0
    mirrored = test_tokens.reshape(-1, 5, 4, 4, 8).flip(3).reshape(test_tokens.shape)  # left ↔ right
    assert torch.allclose(test_tokens.mean(dim=1), mirrored.mean(dim=1))  # what the mean readout sees
    with torch.no_grad():
        flipped = readout(mirrored, grid, test_text)[:, 2]
    assert float(((flipped > 0) == (test_target < 0)).float().mean()) == 1.0  # the mirror image moves the other way
    with pytest.raises(ValueError, match="readout 'pooled'"):
        LatentRewardModel({}, 1, "pooled")


@pytest.mark.parametrize("readout", ["frames", "mean"])
def test_save_load_round_trip_gives_identical_rewards(tiny_policy, tmp_path, readout):
    policy = load_policy(tiny_policy)
    model = LatentRewardModel.from_policy(policy.transformer, 2, readout).eval()
    model.set_normalization(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([2.0, 0.5, 1.0]))
    save_latent_reward(model, tmp_path / "saved")
    loaded = load_latent_reward(tmp_path / "saved")
    latents, sigmas = torch.randn(2, *policy.latent_shape()), torch.tensor([0.0, 0.6])
    text = policy.pad_text(policy.encode_prompts(PROMPTS[:2]))
    with torch.no_grad():
        assert torch.equal(model(latents, sigmas, text), loaded(latents, sigmas, text))
        assert torch.equal(
            model.score(latents, sigmas, text, (1, 1, 2)), loaded.score(latents, sigmas, text, (1, 1, 2))
        )
    assert loaded.readout == readout
    with pytest.raises(FileNotFoundError, match="latent_reward.json"):
        load_latent_reward(tmp_path)


def test_resume_continues_from_the_newest_checkpoint(tiny_policy, snapshot, tmp_path):
    values = config_values(
        tmp_path, tiny_policy, snapshot, tmp_path / "cache", max_steps=2, eval_every_steps=None, save_every_steps=None
    )
    train_latent_reward(LatentRewardConfig(**values))
    resumed = train_latent_reward(LatentRewardConfig(**{**values, "max_steps": 3}))
    assert [entry["step"] for entry in resumed["train_loss"]] == [1, 2, 3]


# --------------------------------------------------------------------------------------------------
# Guidance
# --------------------------------------------------------------------------------------------------


def test_guidance_transform_is_minus_w_ratio_grad_with_a_capped_ratio(tiny_policy):
    policy = load_policy(tiny_policy)
    model = LatentRewardModel.from_policy(policy.transformer, 1).eval()  # guidance runs the reward in eval mode
    text = policy.pad_text(policy.encode_prompts(PROMPTS[:1]))
    latents, velocity = torch.randn(2, *policy.latent_shape()), torch.randn(2, *policy.latent_shape())
    sigmas = torch.tensor([0.5, 1.0])  # ratio 1, and ∞ capped at max_ratio
    x = latents.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model.score(x, sigmas, text.expand(2, -1, -1), (1, 0, 2)).sum(), x)
    guided = reward_guidance(model, text, weights=(1, 0, 2), scale=3.0, max_ratio=4.0)(latents, sigmas, velocity)
    assert torch.allclose(guided[0], velocity[0] - 3.0 * 1.0 * gradient[0], atol=1e-5)
    assert torch.allclose(guided[1], velocity[1] - 3.0 * 4.0 * gradient[1], atol=1e-5)

    # A guidance interval: steps at σ ≤ sigma_min keep the policy's velocity, the others are guided as before.
    stopped = reward_guidance(model, text, weights=(1, 0, 2), scale=3.0, max_ratio=4.0, sigma_min=0.5)
    assert torch.equal(stopped(latents, sigmas, velocity)[0], velocity[0])
    assert torch.allclose(stopped(latents, sigmas, velocity)[1], guided[1], atol=1e-5)
    assert torch.equal(stopped(latents, torch.tensor([0.2, 0.5]), velocity), velocity)
    with pytest.raises(ValueError, match="sigma_min 1.0"):
        reward_guidance(model, text, sigma_min=1.0)


def test_guidance_raises_the_reward_of_samples_and_zero_guidance_changes_nothing(trained, tiny_policy):
    """Same noise, with classifier-free guidance: w > 0 scores higher than unguided, w < 0 lower, clip by clip."""
    policy = load_policy(tiny_policy)
    latent_reward = load_latent_reward(trained["final"])
    text = policy.pad_text(policy.encode_prompts(PROMPTS[:1])).expand(3, -1, -1)
    negative = policy.pad_text(policy.encode_prompts([""])).expand(3, -1, -1)
    noise = initial_noise([0, 1, 2], policy.latent_shape())

    def sample(transform):
        return sample_latents(policy, text, negative, noise, steps=8, guidance_scale=5.0, velocity_transform=transform)

    def reward(latents):
        with torch.no_grad():
            return latent_reward.score(latents, torch.zeros(3), text, (1, 1, 1))

    unguided = sample(None)
    up = reward(sample(reward_guidance(latent_reward, text[:1], scale=10.0)))
    down = reward(sample(reward_guidance(latent_reward, text[:1], scale=-10.0)))
    base = reward(unguided)
    print(
        f"\nFlow-NRG reward of samples: guided {up.mean():.3f}, unguided {base.mean():.3f}, "
        f"anti-guided {down.mean():.3f}"
    )
    assert torch.all(up > base + 1.0) and torch.all(down < base - 1.0)
    assert torch.equal(sample(reward_guidance(latent_reward, text[:1], weights=(0, 0, 0))), unguided)
    assert torch.equal(sample(reward_guidance(latent_reward, text[:1], scale=0.0)), unguided)


def test_parse_weights():
    assert parse_weights("vq=1,mq=1,ta=2") == (1.0, 1.0, 2.0)
    assert parse_weights("TA=0.5") == (0.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="vq, mq, ta"):
        parse_weights("overall=1")
    with pytest.raises(ValueError, match="not a number"):
        parse_weights("vq=high")


# --------------------------------------------------------------------------------------------------
# CLIs
# --------------------------------------------------------------------------------------------------


def test_latent_reward_train_cli_runs_two_steps(tiny_policy, snapshot, tmp_path, capsys):
    config_file = tmp_path / "latent.json"
    config_file.write_text(
        json.dumps(
            config_values(
                tmp_path,
                tiny_policy,
                snapshot,
                tmp_path / "cache",
                max_steps=None,
                eval_every_steps=None,
                save_every_steps=None,
            )
        )
    )
    progress = tmp_path / "progress.json"
    assert (
        main(
            [
                "latent-reward-train",
                "--config",
                str(config_file),
                "--set",
                "max_steps=2",
                "--set",
                "noisy=false",
                "--output-dir",
                str(tmp_path / "cli-run"),
                "--progress-file",
                str(progress),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "cli-run" / "metrics.json").read_text())
    assert len(metrics["train_loss"]) == 2 and metrics["noisy"] is False
    assert json.loads(progress.read_text())["step"] == 2
    assert "latent-reward: 2 steps on 4 pairs (clean latents" in capsys.readouterr().out


def test_generate_cli_writes_videos_and_a_listing(trained, tiny_policy, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n\n")
    out = tmp_path / "out"
    assert (
        main(
            [
                "generate",
                "--policy",
                str(tiny_policy),
                "--prompts",
                str(prompts),
                "--weights",
                "vq=1,mq=1,ta=2",
                "--latent-reward",
                trained["final"],
                "--scale",
                "10",
                "--max-ratio",
                "2",
                "--seeds",
                "3",
                "4",
                "--steps",
                "3",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in (out / "videos.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["seed"]) for r in records] == [(p, s) for p in PROMPTS[:2] for s in (3, 4)]
    assert records[0]["weights"] == {"VQ": 1.0, "MQ": 1.0, "TA": 2.0} and records[0]["scale"] == 10.0
    assert records[0]["max_ratio"] == 2.0
    assert all((out / r["file"]).stat().st_size > 0 for r in records)
    assert "generate: 4 videos (2 prompts × 2 seeds, reward-guided" in capsys.readouterr().out

    assert (
        main(
            [
                "generate",
                "--policy",
                str(tiny_policy),
                "--prompts",
                str(prompts),
                "--weights",
                "vq=1",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "--weights needs --latent-reward" in capsys.readouterr().err
    assert (
        main(
            [
                "generate",
                "--policy",
                str(tiny_policy),
                "--prompts",
                str(prompts),
                "--max-ratio",
                "1",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "--max-ratio needs --latent-reward" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0 and "--latent-reward DIR" in capsys.readouterr().out
