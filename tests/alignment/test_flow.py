"""alignment.flow: losses, preference data, the Wan adapter, LoRA round trips, the cache, the trainers and CLIs.

Everything runs on a tiny random Wan policy built in a temporary folder from toy-world clips; nothing
is downloaded.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from alignment.cli import main
from alignment.config import config_from_dict
from alignment.data import read_snapshot, write_snapshot
from alignment.data.records import PairRecord
from alignment.flow import PixelCodec, load_policy, sample_videos, write_clips
from alignment.flow.cache import build_cache, sha256_text
from alignment.flow.model import pixels_from_uint8_clips, uint8_from_pixels
from alignment.flow.preference import (
    consensus_score,
    consensus_video_rewards,
    preference_pairs,
    relabelled_pairs,
)
from alignment.flow.tiny import build_tiny_wan_policy
from alignment.flow.train import (
    TRAINERS,
    CachedPairs,
    FlowDPOConfig,
    PadTextCollator,
    checkpoints,
    step_loss,
    train_flow,
)
from alignment.labels import LABEL_MISSING
from alignment.losses import (
    flow_dpo_beta,
    flow_dpo_loss,
    flow_matching_error,
    flow_matching_loss,
    flow_rwr_loss,
    flow_rwr_weights,
)
from alignment.toyworld import DefectSpec, render_clip, write_mp4

torch.set_num_threads(2)
LN2 = math.log(2.0)
PROMPTS = [
    "a red square moving left quickly",
    "a blue circle moving up slowly",
    "a green triangle moving right quickly",
]


# --------------------------------------------------------------------------------------------------
# Fixtures: a tiny Wan policy (pixel codec, 4×4 patches → 9×4×4 tokens) and a toy snapshot
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> Path:
    return build_tiny_wan_policy(tmp_path_factory.mktemp("policy") / "wan", pixel_patch=4, num_layers=2)


def toy_snapshot(folder: Path) -> Path:
    """Clean clips beat noisy ones on VQ (and overall); some ties and unjudged pairs to be dropped."""
    videos, rows = {}, []
    for index, prompt in enumerate(PROMPTS):
        clean = render_clip(prompt, seed=index)
        noisy = render_clip(prompt, DefectSpec(noise=1.0), seed=index)
        for name, clip in ((f"clean{index}", clean), (f"noisy{index}", noisy)):
            videos[f"videos/{name}.mp4"] = write_mp4(clip, folder.parent / "clips" / f"{name}.mp4")
        split = "val" if index == 2 else "train"
        base = {"prompt": prompt, "split": split}
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
                "ta": 0,
            }
        )
        rows.append(
            {
                **base,
                "pair_id": 10 * index + 2,
                "video_a": f"videos/noisy{index}.mp4",
                "video_b": f"videos/clean{index}.mp4",
                "vq": 0,
                "mq": 0,
                "ta": 0,
            }
        )  # a tie: dropped
        rows.append(
            {
                **base,
                "pair_id": 10 * index + 3,
                "video_a": f"videos/clean{index}.mp4",
                "video_b": f"videos/noisy{index}.mp4",
                "vq": None,
                "mq": None,
                "ta": None,
            }
        )  # unjudged
    return write_snapshot(rows, folder, videos=videos)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return toy_snapshot(tmp_path_factory.mktemp("snap") / "s1")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def config_values(tmp_path, tiny_policy, snapshot, shared_cache, **overrides) -> dict:
    values = {
        "output_dir": str(tmp_path / "run"),
        "policy": str(tiny_policy),
        "snapshot": str(snapshot),
        "cache_dir": str(shared_cache),
        "lora_rank": 4,
        "learning_rate": 1e-3,
        "batch_size": 2,
        "epochs": 5,
        "max_steps": 2,
        "progress": False,
    }
    values.update(overrides)
    return values


# --------------------------------------------------------------------------------------------------
# Losses, hand-checked
# --------------------------------------------------------------------------------------------------


def test_flow_dpo_loss_is_ln2_at_the_reference_and_has_the_right_sign():
    errors = torch.tensor([0.3, 1.2])
    loss, logits = flow_dpo_loss(errors, errors.flip(0), errors, errors.flip(0), beta=500.0)
    assert float(loss) == pytest.approx(LN2) and torch.all(logits == 0)
    # the policy fits the winner better than the reference does (error 0.2 < 0.3), the loser unchanged
    better, _ = flow_dpo_loss(
        torch.tensor([0.2]), torch.tensor([0.5]), torch.tensor([0.3]), torch.tensor([0.5]), beta=10.0
    )
    worse, _ = flow_dpo_loss(
        torch.tensor([0.4]), torch.tensor([0.5]), torch.tensor([0.3]), torch.tensor([0.5]), beta=10.0
    )
    assert float(better) == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))))  # logit −(10/2)(−0.1) = 0.5
    assert float(better) < LN2 < float(worse)
    # fitting the loser better is as bad as fitting the winner worse
    loser_fit, _ = flow_dpo_loss(
        torch.tensor([0.3]), torch.tensor([0.4]), torch.tensor([0.3]), torch.tensor([0.5]), beta=10.0
    )
    assert float(loser_fit) == pytest.approx(float(worse))


def test_flow_dpo_beta_schedules():
    sigma = torch.tensor([0.0, 0.5, 1.0])
    assert flow_dpo_beta(sigma, 500.0).tolist() == [500.0, 500.0, 500.0]
    assert flow_dpo_beta(sigma, 500.0, "time").tolist() == pytest.approx([500.0, 125.0, 0.0])
    with pytest.raises(ValueError, match="constant, time"):
        flow_dpo_beta(sigma, 500.0, "linear")


def test_flow_matching_and_rwr_losses():
    pred, target = torch.zeros(3, 2, 2), torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1).expand(3, 2, 2)
    assert flow_matching_error(pred, target).tolist() == [1.0, 4.0, 9.0]
    assert float(flow_matching_loss(pred, target)) == pytest.approx(14 / 3)
    weights = flow_rwr_weights(torch.tensor([0.0, math.log(2.0), math.log(5.0)]), temperature=1.0)
    assert weights.tolist() == pytest.approx([1.0, 2.0, 5.0])  # exp(r / τ), each from its own reward
    assert flow_rwr_weights(torch.tensor([0.0, 2 * math.log(2.0)]), temperature=2.0).tolist() == pytest.approx([1, 2])
    assert float(flow_rwr_loss(pred, target, torch.zeros(3))) == pytest.approx(float(flow_matching_loss(pred, target)))
    assert float(flow_rwr_loss(pred, target, torch.tensor([0.0, math.log(2.0), math.log(5.0)]))) == pytest.approx(
        (1 * 1 + 2 * 4 + 5 * 9) / 3
    )  # the batch mean of w_i · e_i
    assert torch.isfinite(flow_rwr_weights(torch.tensor([1e6]))).all()  # clamped, never inf
    with pytest.raises(ValueError, match="temperature"):
        flow_rwr_weights(torch.zeros(2), temperature=0.0)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_rwr_weights_do_not_depend_on_how_a_batch_is_split(temperature):
    """Gradient accumulation or several GPUs split a batch into micro-batches: the loss (a mean over equal
    micro-batches) and its gradient are those of the whole batch. With the old softmax over each micro-batch, a
    micro-batch of one gave every sample weight 1."""
    torch.manual_seed(0)
    target = torch.randn(8, 3, 2, 4, 4)
    rewards = torch.randn(8)
    whole_pred = torch.randn(8, 3, 2, 4, 4, requires_grad=True)
    whole = flow_rwr_loss(whole_pred, target, rewards, temperature)
    whole.backward()
    for micro in (1, 2, 4):
        pred = whole_pred.detach().clone().requires_grad_(True)
        parts = [
            flow_rwr_loss(pred[i : i + micro], target[i : i + micro], rewards[i : i + micro], temperature)
            for i in range(0, 8, micro)
        ]
        total = sum(parts) / len(parts)
        total.backward()
        assert float(total) == pytest.approx(float(whole), rel=1e-5), micro
        assert torch.allclose(pred.grad, whole_pred.grad, rtol=1e-4, atol=1e-7), micro


@pytest.mark.parametrize("batch", [1, 2, 8])
@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_rwr_winner_and_loser_weigh_e_to_the_two_over_tau_apart_at_any_batch_size(batch, temperature):
    """Same error, rewards +1 and −1: the loss's gradient on the winner is e^{2/τ} times the loser's, whether they
    share a micro-batch or each sits in its own."""
    pred = torch.zeros(2, 1, 1, 2, 2, requires_grad=True)
    target = torch.ones(2, 1, 1, 2, 2)
    rewards = torch.tensor([1.0, -1.0])
    if batch == 1:
        grads = []
        for i in range(2):
            p = pred.detach()[i : i + 1].clone().requires_grad_(True)
            flow_rwr_loss(p, target[i : i + 1], rewards[i : i + 1], temperature).backward()
            grads.append(p.grad.abs().sum())
        ratio = float(grads[0] / grads[1])
    else:
        filler = batch - 2  # pad the batch with zero-error samples of other rewards
        p = torch.cat([pred.detach(), torch.ones(filler, 1, 1, 2, 2)]).requires_grad_(True)
        t = torch.cat([target, torch.ones(filler, 1, 1, 2, 2)])
        r = torch.cat([rewards, torch.randn(filler)])
        flow_rwr_loss(p, t, r, temperature).backward()
        ratio = float(p.grad[0].abs().sum() / p.grad[1].abs().sum())
    assert ratio == pytest.approx(math.exp(2 / temperature), rel=1e-4)


def test_rwr_rewards_are_standardised_over_the_training_set():
    from alignment.flow.preference import RewardedVideo, standardised_rewards

    train = [RewardedVideo("p", f"v{i}", r) for i, r in enumerate([1.0, 2.0, 3.0, 6.0])]
    out = standardised_rewards(train)
    values = [v.reward for v in out]
    assert sum(values) == pytest.approx(0.0, abs=1e-9)
    assert (sum(x * x for x in values) / len(values)) == pytest.approx(1.0)
    assert [(v.prompt, v.video) for v in out] == [(v.prompt, v.video) for v in train]
    val = standardised_rewards([RewardedVideo("q", "w", 3.0)], reference=train)  # by the training set's statistics
    assert val[0].reward == pytest.approx((3.0 - 3.0) / math.sqrt(3.5))
    assert [v.reward for v in standardised_rewards([RewardedVideo("p", "a", 2.0)] * 3)] == [0.0, 0.0, 0.0]


# --------------------------------------------------------------------------------------------------
# Preference data
# --------------------------------------------------------------------------------------------------


def pair(pair_id, vq, mq, ta, a="a.mp4", b="b.mp4"):
    return PairRecord(pair_id=pair_id, prompt="p", video_a=a, video_b=b, vq=vq, mq=mq, ta=ta)


def test_preference_pairs_weighting_ties_and_undecided():
    m = LABEL_MISSING
    pairs = [pair(1, 1, 1, -1), pair(2, -1, 0, 0), pair(3, 1, -1, 0), pair(4, m, m, m), pair(5, m, -1, m)]
    assert consensus_score(pairs[0]) == pytest.approx(1 / 3)
    assert consensus_score(pairs[0], (0, 0, 1)) == -1.0
    assert consensus_score(pairs[3]) is None and consensus_score(pairs[4]) == -1.0  # only judged dimensions count
    decided = preference_pairs(pairs)
    assert [(p.winner, p.loser, round(p.margin, 4)) for p in decided] == [
        ("a.mp4", "b.mp4", 0.3333),
        ("b.mp4", "a.mp4", 0.3333),
        ("b.mp4", "a.mp4", 1.0),
    ]  # pair 3 ties overall
    assert len(preference_pairs(pairs, weights=(2, 1, 0))) == 4  # pair 3: (2 − 1)/3 > 0: A wins
    assert len(preference_pairs(pairs, min_margin=0.5)) == 1
    with pytest.raises(ValueError, match="dimension_weights"):
        preference_pairs(pairs, weights=(1, 1))
    rewards = {r.video: r.reward for r in consensus_video_rewards(pairs)}
    assert rewards["a.mp4"] == pytest.approx((1 / 3 - 1 / 3 + 0 - 1) / 4) and rewards["b.mp4"] == -rewards["a.mp4"]


def test_relabelling_with_a_reward_model(tmp_path, snapshot):
    from alignment.reward import RewardModel, RewardModelConfig, save_reward_model

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
    save_reward_model(RewardModel(config), tmp_path / "reward")
    loaded = read_snapshot(snapshot)
    relabelled = relabelled_pairs(loaded.pairs, tmp_path / "reward", roots=[snapshot], progress=False)
    assert len(relabelled) == len(loaded.pairs)  # a reward model decides every pair, ties included
    by_videos = {frozenset((p.winner, p.loser)): p.winner for p in relabelled}
    assert len(by_videos) == len(PROMPTS)  # the same two videos always get the same winner
    assert all(p.margin > 0 for p in relabelled)
    only_vq = relabelled_pairs(loaded.pairs, tmp_path / "reward", roots=[snapshot], weights=(1, 0, 0), progress=False)
    assert len(only_vq) == len(loaded.pairs)


# --------------------------------------------------------------------------------------------------
# The adapter: codecs, the Wan velocity, LoRA round trips
# --------------------------------------------------------------------------------------------------


def test_pixel_codec_is_exact():
    codec = PixelCodec(patch=4, scale=2.0)
    pixels = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    latents = codec.encode(pixels)
    assert latents.shape == (2, 48, 9, 8, 8) == (2, *codec.latent_shape(9, 32, 32))
    assert torch.equal(codec.decode(latents), pixels)
    assert torch.equal(latents[0, ::16, 0, 0, 0], 2 * pixels[0, :, 0, 0, 0])  # channel-major, then the 4×4 block
    with pytest.raises(ValueError, match="not divisible"):
        codec.encode(torch.zeros(1, 3, 9, 30, 32))


def test_policy_folder_loads_in_wan_pipeline(tiny_policy):
    from diffusers import WanPipeline

    policy = load_policy(tiny_policy)
    assert (policy.num_frames, policy.height, policy.width, policy.max_sequence_length) == (9, 32, 32, 16)
    pipeline = WanPipeline.from_pretrained(tiny_policy, vae=None)
    ours = policy.pad_text(policy.encode_prompts(PROMPTS[:2]))
    theirs = pipeline.encode_prompt(PROMPTS[:2], do_classifier_free_guidance=False, max_sequence_length=16)[0]
    assert torch.allclose(ours, theirs.float(), atol=1e-6)
    assert policy.text_encoder_loaded and policy.encode_prompts(["a cat"])[0].shape == (3, 32)  # "a cat </s>"
    with pytest.raises(FileNotFoundError, match="transformer/config.json"):
        load_policy(tiny_policy / "scheduler")


def test_wan_vae_codec_policy(tmp_path):
    folder = build_tiny_wan_policy(tmp_path / "wan-vae", codec="wan_vae")
    policy = load_policy(folder)
    assert policy.latent_shape() == (4, 3, 4, 4)
    clip = torch.from_numpy(render_clip(PROMPTS[0])).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # (1, 3, 9, 32, 32)
    latents = policy.encode_videos(clip)
    assert latents.shape == (1, 4, 3, 4, 4)
    assert policy.decode_latents(latents).shape == (1, 9, 32, 32, 3)
    with pytest.raises(ValueError, match="4·k \\+ 1"):
        policy.latent_shape(num_frames=8)


def test_conv_codec_fits_toy_clips_normalises_its_latents_and_round_trips_through_a_policy_folder(tmp_path):
    from alignment.flow.model import ConvCodec, fit_conv_codec, load_codec
    from alignment.toyworld import DefectSpec

    rng = np.random.default_rng(0)
    clips = np.stack(
        [render_clip(PROMPTS[i % len(PROMPTS)], DefectSpec.random(rng, p_clean=0.5), seed=i) for i in range(32)]
    )  # (32, 9, 32, 32, 3)
    torch.manual_seed(0)
    codec = ConvCodec(latent_channels=8, width=16)
    losses = fit_conv_codec(codec, clips, steps=300, batch_size=32, progress=False)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])

    pixels = pixels_from_uint8_clips(clips)  # (32, 3, 9, 32, 32)
    latents = codec.encode(pixels)
    assert latents.shape == (32, 8, 9, 8, 8) == (32, *codec.latent_shape(9, 32, 32))
    per_channel = latents.transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 0.2 and (per_channel.std(1) - 1).abs().max() < 0.2  # normalised
    flat = pixels.mean(dim=(2, 3, 4), keepdim=True)  # each clip's mean colour: the trivial reconstruction
    assert (codec.decode(latents) - pixels).abs().mean() < 0.5 * (flat - pixels).abs().mean()

    folder = build_tiny_wan_policy(tmp_path / "wan-conv", codec="conv", conv_codec=codec, num_heads=2, head_dim=16)
    policy = load_policy(folder)
    assert policy.latent_shape() == (8, 9, 8, 8)
    assert isinstance(load_codec(folder), ConvCodec)
    assert torch.equal(policy.encode_videos(pixels[:2]), latents[:2])  # the saved weights and statistics
    assert np.array_equal(policy.decode_latents(latents[:2]), uint8_from_pixels(codec.decode(latents[:2])))
    (folder / "codec" / "codec.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="codec.safetensors"):
        load_codec(folder)
    with pytest.raises(ValueError, match="conv_codec"):
        build_tiny_wan_policy(tmp_path / "no-codec", codec="conv")


def randomise_lora(transformer, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def test_saved_lora_reloads_with_identical_velocity(tmp_path, tiny_policy):
    from diffusers import WanPipeline

    policy = load_policy(tiny_policy)
    policy.add_lora(rank=4, alpha=8)  # alpha ≠ rank: the saved metadata must carry the scale
    randomise_lora(policy.transformer)
    weights = policy.save_lora(tmp_path / "lora")
    assert weights.name == "pytorch_lora_weights.safetensors"

    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, *policy.latent_shape(), generator=generator)
    sigmas, text = torch.tensor([0.3, 0.8]), policy.pad_text(policy.encode_prompts(PROMPTS[:2]))
    with torch.no_grad():
        expected = policy.velocity(latents, sigmas, text)
        base = policy.velocity(latents, sigmas, text, transformer=load_policy(tiny_policy).transformer)
    assert not torch.allclose(expected, base, atol=1e-4)

    pipeline = WanPipeline.from_pretrained(tiny_policy, vae=None)
    pipeline.load_lora_weights(tmp_path / "lora")
    with torch.no_grad():
        reloaded = policy.velocity(latents, sigmas, text, transformer=pipeline.transformer)
    torch.testing.assert_close(reloaded, expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Training: the first DPO loss, the loss falls, every LoRA parameter moves
# --------------------------------------------------------------------------------------------------


def fixed_dpo_batch(policy, snapshot, cache_dir):
    from alignment.flow.preference import preference_pairs as pairs_of

    items = pairs_of(read_snapshot(snapshot).pairs)
    cache = build_cache(
        policy,
        [p.prompt for p in items],
        [v for p in items for v in (p.winner, p.loser)],
        cache_dir=cache_dir,
        roots=[snapshot],
        progress=False,
    )
    dataset = CachedPairs(items, cache)
    return PadTextCollator(policy.max_sequence_length)([dataset[i] for i in range(len(dataset))])


def test_dpo_starts_at_ln2_loss_falls_and_every_lora_parameter_changes(tiny_policy, snapshot, shared_cache):
    policy = load_policy(tiny_policy)
    config = FlowDPOConfig(output_dir="unused", policy=str(tiny_policy), snapshot=str(snapshot), beta=500.0)
    batch = fixed_dpo_batch(policy, snapshot, shared_cache)
    policy.add_lora(rank=4)
    lora = {name: p for name, p in policy.transformer.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in name for name in lora)
    before = {name: p.detach().clone() for name, p in lora.items()}
    optimizer = torch.optim.AdamW(lora.values(), lr=1e-2)
    losses = []
    for step in range(6):
        generator = torch.Generator().manual_seed(0)  # the same σ and noise every step: a fixed batch
        loss, stats = step_loss(config, policy, policy.transformer, batch, generator, lora_model=policy.transformer)
        if step == 0:
            assert loss.item() == pytest.approx(LN2, abs=1e-6) and stats["logits"] == 0.0  # LoRA B starts at 0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step == 1:  # lora_A has no gradient while lora_B is 0, so it moves from the second step on
            unchanged = [name for name, p in lora.items() if torch.equal(p, before[name])]
            assert not unchanged, unchanged
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.5 * LN2, losses
    assert stats["accuracy"] == 1.0


def test_cache_is_reused_without_loading_the_encoders(tmp_path, tiny_policy, snapshot):
    pairs = read_snapshot(snapshot).pairs
    prompts, videos = [p.prompt for p in pairs], [p.video_a for p in pairs] + [p.video_b for p in pairs]
    first = build_cache(load_policy(tiny_policy), prompts, videos, cache_dir=tmp_path, roots=[snapshot], progress=False)
    assert (first.encoded_prompts, first.encoded_videos) == (3, 6)
    fresh = load_policy(tiny_policy)
    second = build_cache(fresh, prompts, videos, cache_dir=tmp_path, roots=[snapshot], progress=False)
    assert (second.encoded_prompts, second.encoded_videos) == (0, 0)
    assert not fresh.text_encoder_loaded and fresh._codec is None
    key = second.video_keys["videos/clean0.mp4"]
    assert torch.equal(second.latents.get(key), first.latents.get(key)) and second.latents.get(key).shape == (
        48,
        9,
        8,
        8,
    )
    other_size = build_cache(
        fresh, prompts[:1], videos[:1], cache_dir=tmp_path, roots=[snapshot], num_frames=5, progress=False
    )
    assert other_size.encoded_videos == 1 and other_size.latents.folder != second.latents.folder


def test_text_encoder_weights_written_again_with_the_same_shapes_are_a_new_cache(tmp_path, tiny_policy, snapshot):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    policy_folder = shutil.copytree(tiny_policy, tmp_path / "policy")
    prompts = sorted({pair.prompt for pair in read_snapshot(snapshot).pairs})
    first = build_cache(load_policy(policy_folder), prompts, [], cache_dir=tmp_path / "cache", progress=False)
    weights = next((policy_folder / "text_encoder").glob("*.safetensors"))
    size = weights.stat().st_size
    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(
        {name: tensor + 0.01 for name, tensor in load_file(weights).items()}, str(weights), metadata=metadata
    )  # fine-tuned in place
    assert weights.stat().st_size == size
    second = build_cache(load_policy(policy_folder), prompts, [], cache_dir=tmp_path / "cache", progress=False)
    assert second.text.folder != first.text.folder and second.encoded_prompts == len(prompts) == 3
    key = sha256_text(prompts[0])
    assert not torch.equal(second.text.get(key), first.text.get(key))


def test_resume_continues_the_step_count_and_matches_a_straight_run(tmp_path, tiny_policy, snapshot, shared_cache):
    def config(name, **overrides):
        return config_from_dict(
            FlowDPOConfig, config_values(tmp_path / name, tiny_policy, snapshot, shared_cache, **overrides)
        )

    straight = train_flow(config("a", max_steps=3))
    interrupted = config("b", max_steps=2, save_every_steps=1)
    train_flow(interrupted)
    run = tmp_path / "b" / "run"
    assert [p.name for p in checkpoints(run)] == ["step-00000001", "step-00000002"]
    interrupted.max_steps = 3
    resumed = train_flow(interrupted)
    assert [e["step"] for e in resumed["train_loss"]] == [1, 2, 3]
    assert [e["loss"] for e in resumed["train_loss"]] == pytest.approx(
        [e["loss"] for e in straight["train_loss"]], rel=1e-5
    )
    from safetensors.torch import load_file

    a = load_file(tmp_path / "a" / "run" / "final" / "pytorch_lora_weights.safetensors")
    b = load_file(run / "final" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_full_finetune_uses_a_frozen_copy(tmp_path, tiny_policy, snapshot, shared_cache):
    metrics = train_flow(
        config_from_dict(
            FlowDPOConfig,
            config_values(
                tmp_path, tiny_policy, snapshot, shared_cache, finetune="full", learning_rate=1e-4, beta_schedule="time"
            ),
        )
    )
    assert metrics["train_loss"][0]["loss"] == pytest.approx(LN2, abs=1e-6)
    final = tmp_path / "run" / "final"
    assert (final / "transformer" / "config.json").is_file() and not (
        final / "pytorch_lora_weights.safetensors"
    ).exists()
    trained, base = load_policy(final), load_policy(tiny_policy)
    changed = [not torch.equal(a, b) for a, b in zip(trained.transformer.parameters(), base.transformer.parameters())]
    assert any(changed)


# --------------------------------------------------------------------------------------------------
# The CLIs, 2 steps each, and sampling from the result
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sft", "flow-dpo", "flow-rwr"])
def test_cli_runs_two_steps(command, tmp_path, tiny_policy, snapshot, shared_cache, capsys):
    path = tmp_path / f"{command}.json"
    path.write_text(json.dumps(config_values(tmp_path, tiny_policy, snapshot, shared_cache)))
    assert main([command, "--config", str(path), "--set", "lora_rank=2", "--output-dir", str(tmp_path / "out")]) == 0
    run = tmp_path / "out"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == command and [e["step"] for e in metrics["train_loss"]] == [1, 2]
    assert all(np.isfinite(e["loss"]) for e in metrics["train_loss"])
    assert metrics["n_train"] == {"sft": 2, "flow-dpo": 4, "flow-rwr": 4}[command]
    assert metrics["eval"][-1]["n_items"] > 0 and np.isfinite(metrics["eval"][-1]["loss"])
    final = run / "final"
    assert {"pytorch_lora_weights.safetensors", "flow_policy.json", "train_config.json"} <= {
        p.name for p in final.iterdir()
    }
    assert json.loads((final / "train_config.json").read_text())["lora_rank"] == 2
    assert json.loads((final / "flow_policy.json").read_text())["method"] == command
    out = capsys.readouterr().out
    assert f"{command}: 2 steps" in out and str(final) in out
    if command == "flow-dpo":
        assert "accuracy" in metrics["train_loss"][0] and metrics["train_loss"][0]["loss"] == pytest.approx(
            LN2, abs=1e-6
        )

        policy = load_policy(final)
        clips = sample_videos(
            policy,
            PROMPTS[:2] + PROMPTS[:1],
            seeds=[0, 1, 0],
            steps=3,
            guidance_scale=3.0,
            batch_size=2,
            progress=False,
        )
        assert clips.shape == (3, 9, 32, 32, 3) and clips.dtype == np.uint8
        assert np.array_equal(clips[0], clips[2])  # a clip depends on its seed, not on its batch
        seen = []
        edited = sample_videos(
            policy,
            PROMPTS[:1],
            seeds=[0],
            steps=3,
            guidance_scale=1.0,
            progress=False,
            velocity_transform=lambda x, s, v: seen.append(float(s[0])) or torch.zeros_like(v),
        )
        assert seen == pytest.approx([1.0, 2 / 3, 1 / 3]) and not np.array_equal(edited[0], clips[0])
        paths = write_clips(clips[:1], tmp_path / "samples", ["first"], fps=policy.fps)
        assert paths[0].stat().st_size > 0


def test_rwr_from_reward_model_scores(tmp_path, tiny_policy, snapshot, shared_cache):
    from alignment.reward import RewardModel, RewardModelConfig, save_reward_model

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
    save_reward_model(RewardModel(config), tmp_path / "reward")
    metrics = train_flow(
        config_from_dict(
            TRAINERS["flow-rwr"],
            config_values(
                tmp_path,
                tiny_policy,
                snapshot,
                shared_cache,
                label_source="reward_model",
                reward_model=str(tmp_path / "reward"),
                max_steps=1,
                temperature=0.5,
            ),
        )
    )
    assert metrics["n_train"] == 4 and len(metrics["train_loss"]) == 1
    with pytest.raises(ValueError, match="needs `reward_model`"):
        train_flow(
            config_from_dict(
                TRAINERS["flow-rwr"],
                config_values(tmp_path / "x", tiny_policy, snapshot, shared_cache, label_source="reward_model"),
            )
        )
