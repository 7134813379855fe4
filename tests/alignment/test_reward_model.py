import copy

import pytest
import torch

from alignment.reward import RewardModel, RewardModelConfig, load_reward_model, save_reward_model
from alignment.reward.preprocess import QWEN2VL_MEAN, QWEN2VL_STD, Qwen2VLVideoPreprocessor, patchify_video
from alignment.reward.qwen2vl import REWARD_TOKENS
from alignment.reward.tiny import build_tiny_qwen2vl

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_qwen_folder(tmp_path_factory):
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


def qwen_config(folder, **overrides):
    values = dict(
        backbone="qwen2vl",
        backbone_path=str(folder),
        lora_rank=4,
        lora_alpha=8,
        lora_dropout=0.0,
        max_pixels=56 * 84,
        min_pixels=28 * 28,
        max_frames=4,
        fps=None,
    )
    values.update(overrides)
    return RewardModelConfig(**values)


def small_config(**overrides):
    values = dict(
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
    values.update(overrides)
    return RewardModelConfig(**values)


def random_videos(count, frames=4, height=56, width=84, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, 256, (frames, 3, height, width), dtype=torch.uint8, generator=generator) for _ in range(count)
    ]


def test_patchify_rows_hold_the_right_pixels():
    t, c, h, w, p, m, tp = 4, 3, 56, 84, 14, 2, 2
    frames = torch.randn(t, c, h, w)
    patches, grid = patchify_video(frames, patch_size=p, temporal_patch_size=tp, merge_size=m)
    grid_t, grid_h, grid_w = grid.tolist()
    assert (grid_t, grid_h, grid_w) == (2, 4, 6) and patches.shape == (2 * 4 * 6, c * tp * p * p)
    row = 0
    for gt in range(grid_t):  # Qwen2-VL order: time, merge-block row, block column, row in block, column in block
        for block_row in range(grid_h // m):
            for block_col in range(grid_w // m):
                for in_row in range(m):
                    for in_col in range(m):
                        y, x = (block_row * m + in_row) * p, (block_col * m + in_col) * p
                        expected = frames[gt * tp : (gt + 1) * tp, :, y : y + p, x : x + p].permute(
                            1, 0, 2, 3
                        )  # (C, tp, p, p)
                        assert torch.equal(patches[row].view(c, tp, p, p), expected)  # as PatchEmbed views it
                        row += 1


def test_patchify_pads_odd_frame_counts_with_the_last_frame():
    frames = torch.randn(3, 3, 28, 28)
    patches, grid = patchify_video(frames)
    assert grid.tolist() == [2, 2, 2]
    second = patches[4].view(3, 2, 14, 14)
    assert torch.equal(second[:, 0], frames[2, :, :14, :14]) and torch.equal(second[:, 1], frames[2, :, :14, :14])
    with pytest.raises(ValueError, match="multiple of 28"):
        patchify_video(torch.randn(2, 3, 30, 28))


def test_preprocessor_resizes_within_budget_and_normalizes():
    grey = torch.full((2, 3, 100, 150), 128, dtype=torch.uint8)
    patches, grid = Qwen2VLVideoPreprocessor(max_pixels=448 * 448)(grey)
    assert grid.tolist() == [1, 100 // 28 * 28 // 14, 150 // 28 * 28 // 14] or grid.tolist()[0] == 1
    channel_values = patches.view(-1, 3, 2, 14, 14).mean(dim=(0, 2, 3, 4))
    expected = [(128 / 255 - mean) / std for mean, std in zip(QWEN2VL_MEAN, QWEN2VL_STD)]
    assert channel_values.tolist() == pytest.approx(expected, abs=1e-4)
    big = torch.zeros((2, 3, 752, 1360), dtype=torch.uint8)
    _, grid = Qwen2VLVideoPreprocessor(max_pixels=448 * 448)(big)
    assert grid.tolist() == [1, 22, 42] and (22 * 14) * (42 * 14) <= 448 * 448


def test_processor_places_reward_tokens_around_the_prompt(tiny_qwen_folder):
    model = RewardModel(qwen_config(tiny_qwen_folder))
    processor = model.processor()
    inputs = processor(random_videos(2), ["a red circle moving left", "blue square"])
    tokenizer = processor.tokenizer
    ids = inputs["input_ids"][0].tolist()
    token = tokenizer.convert_tokens_to_ids
    vq, mq, ta = (ids.index(token(name)) for name in REWARD_TOKENS)
    prompt_start = next(i for i in range(mq, len(ids)) if tokenizer.convert_ids_to_tokens(ids[i]) == "circle") - 2
    video_positions = [i for i, x in enumerate(ids) if x == token("<|video_pad|>")]
    grid = inputs["video_grid_thw"][0]
    assert len(video_positions) == int(grid.prod()) // 4
    assert ids[video_positions[0] - 1] == token("<|vision_start|>") and ids[video_positions[-1] + 1] == token(
        "<|vision_end|>"
    )
    assert video_positions[-1] < vq < mq < prompt_start < ta
    assert inputs["reward_positions"][0].tolist() == [vq, mq, ta]
    assert inputs["mm_token_type_ids"][0].sum().item() == 2 * len(video_positions)
    assert inputs["pixel_values_videos"].shape[0] == int(inputs["video_grid_thw"].prod(1).sum())
    assert inputs["attention_mask"][1].sum() < inputs["attention_mask"][0].sum()  # shorter prompt is padded


def test_qwen_vq_and_mq_do_not_read_the_prompt_but_ta_does(tiny_qwen_folder):
    torch.manual_seed(0)
    model = RewardModel(qwen_config(tiny_qwen_folder)).eval()
    video = random_videos(1)[0]
    inputs = model.processor()([video, video], ["a red circle moving left fast", "blue square"])
    with torch.no_grad():
        rewards = model(**inputs)
    assert torch.allclose(rewards[0, :2], rewards[1, :2], atol=1e-5)  # VQ, MQ: context-agnostic
    assert not torch.allclose(rewards[0, 2], rewards[1, 2], atol=1e-4)  # TA depends on the prompt


def test_small_backbone_vq_and_mq_do_not_read_the_prompt():
    torch.manual_seed(0)
    model = RewardModel(small_config()).eval()
    video = random_videos(1, height=32, width=32)[0]
    with torch.no_grad():
        rewards = model(**model.processor()([video, video], ["a red circle moving left", "blue square"]))
    assert torch.allclose(rewards[0, :2], rewards[1, :2], atol=1e-5)
    assert not torch.allclose(rewards[0, 2], rewards[1, 2], atol=1e-4)


def test_small_backbone_reads_time_for_ta_through_smooth_functions():
    """ta_time_basis = K: TA sees the frame features through K orthonormal polynomials of time, so a
    feature that changes linearly over the clip is seen whole with K = 2 and only as its mean with K = 1."""
    backbone = RewardModel(small_config(num_frames=8, tubelet=(1, 8, 8), ta_time_basis=2)).backbone
    basis = backbone.time_basis  # (K, T')
    assert basis.shape == (2, 8) and torch.allclose(basis @ basis.T, torch.eye(2), atol=1e-6)
    assert torch.allclose(basis[0], torch.full((8,), 8**-0.5))  # the first reads the mean
    ramp = torch.linspace(-3.0, 5.0, 8)
    assert torch.allclose(basis.T @ (basis @ ramp), ramp, atol=1e-5)
    assert torch.allclose(basis[:1].T @ (basis[:1] @ ramp), torch.full((8,), 1.0), atol=1e-5)
    assert backbone.video_projection.in_features == 2 * backbone.hidden_size
    with pytest.raises(ValueError, match="ta_time_basis 9 must lie in"):
        RewardModel(small_config(num_frames=8, tubelet=(1, 8, 8), ta_time_basis=9))


def test_what_trains_in_the_qwen_model(tiny_qwen_folder):
    model = RewardModel(qwen_config(tiny_qwen_folder))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in name and "language_model" in name for name in trainable)
    assert not any("lora" in name and "visual" in name for name in trainable)
    assert any(".visual." in name and "lora" not in name for name in trainable)  # the vision tower trains fully
    assert not any("embed_tokens" in name or ("language_model" in name and "lora" not in name) for name in trainable)
    assert {"head.weight", "backbone.reward_token_embeddings"} <= trainable
    frozen_vision = RewardModel(qwen_config(tiny_qwen_folder, train_vision_tower=False))
    assert not any(".visual." in n for n, p in frozen_vision.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("backbone", ["qwen2vl", "small", "small-shared-head", "small-time-basis"])
def test_every_trainable_parameter_changes_after_two_steps(backbone, tiny_qwen_folder):
    torch.manual_seed(0)
    if backbone == "qwen2vl":
        model = RewardModel(qwen_config(tiny_qwen_folder))
        videos = random_videos(4)
    else:
        model = RewardModel(
            small_config(
                shared_head=backbone.endswith("shared-head"), ta_time_basis=2 if backbone.endswith("time-basis") else 0
            )
        )
        videos = random_videos(4, height=32, width=32)
    if backbone.endswith("shared-head"):
        assert model.head.weight.shape[0] == 1
    inputs = model.processor()(videos, ["a red circle", "a blue square moving", "a red circle", "a blue square moving"])
    labels = torch.tensor([[1, 0, -1], [-1, 1, 0]])
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    from alignment.losses import reward_loss

    for _ in range(2):  # LoRA's B starts at zero, so A first gets a gradient on the second step
        rewards_a, rewards_b = model(**inputs).chunk(2)
        loss = reward_loss((rewards_a - rewards_b).flatten(), labels.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert unchanged == []


@pytest.mark.parametrize("backbone", ["qwen2vl", "small", "small-time-basis"])
def test_save_and_load_round_trip(backbone, tiny_qwen_folder, tmp_path):
    torch.manual_seed(0)
    model = RewardModel(
        qwen_config(tiny_qwen_folder)
        if backbone == "qwen2vl"
        else small_config(ta_time_basis=2 if backbone == "small-time-basis" else 0)
    )
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01 * torch.randn_like(parameter))
    model.set_normalization(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 3.0, 4.0]))
    save_reward_model(model, tmp_path / "m")
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "m" / "model.safetensors")
    if backbone == "qwen2vl":
        assert not any("embed_tokens" in key or "base_layer" in key for key in saved)  # frozen base stays in its folder
    loaded = load_reward_model(tmp_path / "m")
    videos = random_videos(2, height=32, width=32)
    inputs = model.processor()(videos, ["a red circle", "blue"])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**inputs), loaded(**inputs), atol=1e-6)
    assert loaded.reward_mean.tolist() == [1.0, 2.0, 3.0]
    assert torch.allclose(loaded.normalize(torch.tensor([[3.0, 2.0, 7.0]])), torch.tensor([[1.0, 0.0, 1.0]]))
    wrong = copy.deepcopy(saved)
    wrong["head.extra"] = torch.zeros(1)
    from safetensors.torch import save_file

    save_file(wrong, tmp_path / "m" / "model.safetensors")
    with pytest.raises(ValueError, match="do not belong to this model"):
        load_reward_model(tmp_path / "m")


def test_missing_backbone_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        RewardModel(RewardModelConfig(backbone="qwen2vl", backbone_path=str(tmp_path)))
    with pytest.raises(ValueError, match="backbone_path"):
        RewardModel(RewardModelConfig(backbone="qwen2vl"))
