"""Loading KwaiVGI's VideoAlign checkpoint format, on a tiny replica written exactly as VideoAlign saves one.

The frame-math expectations below were derived by hand from reading VideoAlign's ``vision_process.py``
(``smart_nframes``, ``smart_resize``, ``fetch_video``): its code needs qwen_vl_utils/torchvision and was not run.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alignment.data.video import write_mp4
from alignment.reward import load_reward_model
from alignment.reward.qwen2vl import REWARD_TOKENS
from alignment.reward.tiny import build_tiny_qwen2vl
from alignment.reward.videoalign import (
    DETAILED_SPECIAL_TEMPLATE,
    VideoAlignRewardModel,
    build_text,
    is_videoalign_folder,
    load_videoalign_model,
    read_videoalign_frames,
    sample_indices,
    smart_nframes,
    smart_resize,
    video_frame_size,
    video_max_pixels,
)

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]
NORMALIZATION = {"VQ_mean": 0.5, "VQ_std": 2.0, "MQ_mean": -1.0, "MQ_std": 0.5, "TA_mean": 0.25, "TA_std": 4.0}


# --- frame math, expected values worked out by hand from vision_process.py ----------------------------------------


@pytest.mark.parametrize(
    ("total", "video_fps", "fps", "nframes", "expected"),
    [
        (48, 24, 2.0, None, 4),  # 48/24·2 = 4
        (121, 24, 2.0, None, 10),  # 10.083 → round(5.04)·2 = 10
        (30, 30, 2.0, None, 4),  # 2 → raised to FPS_MIN_FRAMES 4
        (3, 8, 2.0, None, 2),  # 0.75 → min 4, but max floor(3/2)·2 = 2 wins
        (5, 8, 2.0, None, 4),  # 1.25 → 4 (max floor(5/2)·2 = 4)
        (90, 10, 1.0, None, 8),  # 9 → round(4.5) = 4 (Python rounds halves to even) → 8
        (2000, 1, 2.0, None, 768),  # 4000 → FPS_MAX_FRAMES 768
        (100, 24, None, 7, 8),  # nframes 7 → round(3.5)·2 = 8
        (100, 24, None, 5, 4),  # nframes 5 → round(2.5)·2 = 4
        (5, 24, None, 9, 5),  # 8 > total 5 → 5 (odd: VideoAlign does not round it again)
    ],
)
def test_smart_nframes_matches_videoalign(total, video_fps, fps, nframes, expected):
    assert smart_nframes(total, video_fps, fps=fps, nframes=nframes) == expected


def test_smart_nframes_rejects_both_and_too_few():
    with pytest.raises(ValueError):
        smart_nframes(10, 10, fps=2.0, nframes=4)
    with pytest.raises(ValueError):
        smart_nframes(1, 10, fps=2.0)  # max floor(1/2)·2 = 0 < FRAME_FACTOR


def test_uniform_indices_are_torch_linspace_rounded():
    # 121 frames at 24 fps, fps 2 → 10 frames: linspace(0, 120, 10) = 0, 13.3, 26.7, 40, ... rounded
    assert sample_indices(121, 24, fps=2.0) == [0, 13, 27, 40, 53, 67, 80, 93, 107, 120]


@pytest.mark.parametrize(
    ("height", "width", "nframes", "max_pixels", "expected"),
    [
        # 476·644 > 200,704 → β = √(307200/200704) = 1.2372; ⌊388.0/28⌋·28 = 364, ⌊517.3/28⌋·28 = 504
        (480, 640, 8, 200704, (364, 504)),
        # 56·56 < 100,352 → β = √(100352/4096) = 4.950; ⌈316.8/28⌉·28 = 336
        (64, 64, 4, 200704, (336, 336)),
        # no max_pixels, 16 frames: cap = min(602,112, 24576·784/16·2) = 602,112; 448·644 fits, kept
        (448, 644, 16, None, (448, 644)),
        # 768 frames: cap = max(min(602112, 50,176), int(100352·1.05) = 105,369); 728·1288 > cap →
        # β = √(921600/105369) = 2.9574; ⌊243.5/28⌋·28 = 224, ⌊432.8/28⌋·28 = 420 (below min pixels: not rechecked)
        (720, 1280, 768, None, (224, 420)),
    ],
)
def test_video_frame_size_matches_videoalign(height, width, nframes, max_pixels, expected):
    assert video_frame_size(height, width, nframes, max_pixels=max_pixels) == expected


def test_pixel_caps_and_smart_resize_bounds():
    assert video_max_pixels(16) == 768 * 28 * 28
    assert video_max_pixels(768) == int(128 * 28 * 28 * 1.05) == 105369
    assert video_max_pixels(768, max_pixels=200704) == 200704
    assert smart_resize(20, 3000) == (28, 2996)  # max(28, round(20/28)·28), round(107.1)·28; area within bounds
    with pytest.raises(ValueError):
        smart_resize(10, 2010)  # aspect ratio 201 > 200


def test_prompt_is_videoaligns_detailed_special_template():
    # sha256 of prompt_template.DETAILED_PROMPT_WITH_SPECIAL_TOKEN in KwaiVGI/VideoAlign
    assert hashlib.sha256(DETAILED_SPECIAL_TEMPLATE.encode()).hexdigest() == (
        "fdb6309bac618dd0c8b1b589d3a0970a974f7856eecbb355a190b2dce54af700"
    )
    text = build_text("a red ball", "detailed_special", 2)
    assert text.startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|video_pad|><|vision_end|>\nYou are tasked"
    )
    assert "Textual prompt - a red ball\nPlease provide the ratings of Text Alignment: <|TA_reward|>\nEND\n" in text
    assert text.endswith("END\n<|im_end|>\n<|im_start|>assistant\n")
    assert text.index("<|VQ_reward|>") < text.index("<|MQ_reward|>") < text.index("a red ball")


# --- a tiny replica in VideoAlign's format -----------------------------------------------------------------------


def _old_layout(key: str) -> str:
    """transformers 5 names → the 4.4x names VideoAlign's checkpoints carry (``model.layers``, ``visual``)."""
    key = key.replace("base_model.model.model.language_model.", "base_model.model.model.")
    return key.replace("base_model.model.model.visual.", "base_model.model.visual.")


def write_videoalign_replica(base: Path, folder: Path, *, step: int = 40):
    """Write ``folder`` as VideoAlign's trainer does; returns the live peft model (with ``rm_head``)."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.add_special_tokens({"additional_special_tokens": list(REWARD_TOKENS)})  # create_model_and_processor
    model = Qwen2VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    model.rm_head = torch.nn.Linear(model.config.text_config.hidden_size, 3, bias=False)  # Qwen2VLRewardModelBT
    model.resize_token_embeddings(len(tokenizer))
    targets = [  # find_target_linear_names with lora_namespan_exclude ['lm_head', 'rm_head', 'embed_tokens', 'visual']
        name
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding))
        and not any(ex in name for ex in ("lm_head", "rm_head", "embed_tokens", "visual"))
    ]
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.05, target_modules=targets, bias="none", task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # a "trained" state: non-zero LoRA B, changed embeddings, vision, head
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.2)
        inner = peft_model.base_model.model
        inner.model.language_model.embed_tokens.weight[-3:].normal_(0, 1)
        inner.rm_head.weight.normal_(0, 0.5)
        inner.model.visual.merger.mlp[0].weight.mul_(1.5)
        inner.model.language_model.layers[0].mlp.down_proj.base_layer.weight.mul_(0.5)
    for name, parameter in peft_model.named_parameters():  # train_reward.py: LLM (freeze_llm False), vision, head
        parameter.requires_grad_("lora_" in name or "language_model" in name or "visual" in name or "rm_head" in name)
    peft_model.base_model.model.lm_head.weight.requires_grad_(False)

    checkpoint = folder / f"checkpoint-{step}"
    peft_model.save_pretrained(checkpoint)  # adapter_config.json + adapter_model.safetensors
    adapter = load_file(checkpoint / "adapter_model.safetensors")
    save_file({_old_layout(k): v for k, v in adapter.items()}, checkpoint / "adapter_model.safetensors")
    adapter_config = json.loads((checkpoint / "adapter_config.json").read_text())
    adapter_config["target_modules"] = sorted(
        name.replace("model.language_model.", "model.") for name in adapter_config["target_modules"]
    )
    (checkpoint / "adapter_config.json").write_text(json.dumps(adapter_config))
    non_lora = {  # get_peft_state_non_lora_maybe_zero_3(named_parameters, require_grad_only=True)
        _old_layout(k): v.detach().clone()
        for k, v in peft_model.named_parameters()
        if "lora_" not in k and v.requires_grad
    }
    assert "base_model.model.rm_head.weight" in non_lora and "base_model.model.model.embed_tokens.weight" in non_lora
    torch.save(non_lora, checkpoint / "non_lora_state_dict.pth")
    (folder / "checkpoint-10").mkdir()  # an older checkpoint: the newest one is loaded
    sections = {
        "data_config": {
            "meta_data": "/data/train.csv",
            "data_dir": "/data",
            "meta_data_test": None,
            "max_frame_pixels": 200704,
            "num_frames": None,
            "fps": 2.0,
            "p_shuffle_frames": 0.0,
            "p_color_jitter": 0.0,
            "eval_dim": ["VQ", "MQ", "TA"],
            "prompt_template_type": "detailed_special",
            "add_noise": False,
            "sample_type": "uniform",
            "use_tied_data": True,
        },
        "training_args": {"output_dir": "rm_output", "bf16": True},
        "model_config": {
            "model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct",
            "output_dim": 3,
            "use_special_tokens": True,
            "torch_dtype": "bfloat16",
            "reward_token": "special",
            "loss_type": "btt",
        },
        "peft_lora_config": {"lora_enable": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.05},
        "inference_config": NORMALIZATION,
    }
    (folder / "model_config.json").write_text(json.dumps(sections, indent=4))
    return peft_model.eval(), tokenizer


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    root = tmp_path_factory.mktemp("videoalign")
    base = build_tiny_qwen2vl(root / "base")
    folder = root / "VideoReward"
    peft_model, tokenizer = write_videoalign_replica(base, folder)
    rng = np.random.default_rng(0)
    videos = []
    for index, frames in enumerate((12, 9)):
        clip = rng.integers(0, 255, size=(frames, 40, 56, 3), dtype=np.uint8)
        videos.append(write_mp4(clip, root / f"clip{index}.mp4", fps=8, min_side=40))
    return {"base": base, "folder": folder, "peft_model": peft_model, "tokenizer": tokenizer, "videos": videos}


def reference_rewards(peft_model, video_token_id, reward_ids, inputs):
    """Base + LoRA merged by peft + rm_head, read as VideoAlign's Qwen2VLRewardModelBT.forward does."""
    import copy

    merged = copy.deepcopy(peft_model).merge_and_unload()
    ids = inputs["input_ids"]
    embeds = merged.model.language_model.embed_tokens(ids)
    video = torch.cat(
        list(merged.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output)
    )
    embeds = embeds.masked_scatter((ids == video_token_id).unsqueeze(-1).expand_as(embeds), video)
    hidden = merged.model.language_model(
        inputs_embeds=embeds, attention_mask=inputs["attention_mask"]
    ).last_hidden_state
    logits = merged.rm_head(hidden)  # (B, L, 3)
    special = torch.zeros_like(ids, dtype=torch.bool)
    for token_id in reward_ids:
        special |= ids == token_id
    return logits[special].view(ids.shape[0], 3, -1).diagonal(dim1=1, dim2=2)


def test_format_is_detected(replica, tmp_path):
    assert is_videoalign_folder(replica["folder"])
    assert not is_videoalign_folder(tmp_path)
    model = load_reward_model(replica["folder"], base_model=replica["base"])
    assert isinstance(model, VideoAlignRewardModel)
    assert model.checkpoint.name == "checkpoint-40"
    assert model.tokenizer.convert_tokens_to_ids(list(REWARD_TOKENS)) == [
        len(model.tokenizer) - 3 + i for i in range(3)
    ]


def test_scores_equal_reference_forward_and_videoalign_normalisation(replica):
    model = load_videoalign_model(replica["folder"], base_model=replica["base"], device="cpu")
    assert len(model.lora_modules) > 0
    frames = [model.read_video(path) for path in replica["videos"]]
    # 12 frames at 8 fps, fps 2 → 3 → 4 frames; 9 frames → 2.25 → 4; 40×56 → 280×392 (min pixels 100,352)
    assert [tuple(f.shape) for f in frames] == [(4, 3, 280, 392), (4, 3, 280, 392)]
    inputs = model.processor()(frames, ["a red ball moving left", "a cat"])
    with torch.no_grad():
        raw = model(**inputs)
        expected = reference_rewards(
            replica["peft_model"], model.video_token_id, model.processor().reward_token_ids, inputs
        )
    torch.testing.assert_close(raw, expected, rtol=1e-4, atol=1e-5)
    assert raw.abs().min() > 1e-4  # the LoRA and head are live: a zero reward would hide miswiring
    mean = torch.tensor([NORMALIZATION[f"{d}_mean"] for d in ("VQ", "MQ", "TA")])
    std = torch.tensor([NORMALIZATION[f"{d}_std"] for d in ("VQ", "MQ", "TA")])
    torch.testing.assert_close(model.normalize(raw), (raw - mean) / std)

    # batch order and padding do not change a video's reward (right padding, positions 0, 1, 2, …)
    alone = model(**model.processor()(frames[1:], ["a cat"]))
    torch.testing.assert_close(alone[0], raw[1], rtol=1e-4, atol=1e-5)


def test_reward_score_cli_end_to_end(replica):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "alignment", "reward-score", "--model", str(replica["folder"])]
    command += ["--base-model", str(replica["base"]), "--video", str(replica["videos"][0]), "--prompt", "a red ball"]
    result = subprocess.run(command + ["--quiet"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(row) >= {"VQ", "MQ", "TA", "Overall"}
    assert row["Overall"] == pytest.approx(row["VQ"] + row["MQ"] + row["TA"])

    model = load_videoalign_model(replica["folder"], base_model=replica["base"], device="cpu")
    with torch.no_grad():
        raw = model(**model.processor()([model.read_video(replica["videos"][0])], ["a red ball"]))
    expected = model.normalize(raw)[0].tolist()
    assert [row["VQ"], row["MQ"], row["TA"]] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_missing_base_model_is_a_clear_error(replica, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Qwen/Qwen2-VL-2B-Instruct.*--base-model"):
        load_reward_model(replica["folder"])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_reward_model(replica["folder"], base_model=tmp_path)


def test_read_frames_even_count_and_uniform_sampling(replica):
    frames = read_videoalign_frames(replica["videos"][0], fps=None, nframes=6, max_pixels=200704)
    assert frames.dtype == torch.uint8 and frames.shape[0] == 6


def test_base_model_hint_file_next_to_the_checkpoint(replica, tmp_path):
    import shutil

    folder = shutil.copytree(replica["folder"], tmp_path / "VideoReward")
    (folder / "vidpref_base_model.json").write_text(json.dumps({"base_model": str(replica["base"])}))
    model = load_reward_model(folder)  # as generation and pipelines load a registered version: by path only
    assert isinstance(model, VideoAlignRewardModel) and model.base_path == Path(replica["base"])


def test_evaluate_pairs_with_loader_workers(replica):
    from alignment.data import PairRecord
    from alignment.reward.evaluate import evaluate_pairs, score_videos

    model = load_videoalign_model(replica["folder"], base_model=replica["base"], device="cpu")
    a, b = (str(path) for path in replica["videos"])
    rewards = score_videos(model, [(a, "a cat"), (b, "a cat")], progress=False)
    margin = rewards[0] - rewards[1]
    labels = [1 if m > 0 else -1 for m in margin.tolist()]
    pairs = [PairRecord(pair_id=1, prompt="a cat", video_a=a, video_b=b, vq=labels[0], mq=labels[1], ta=labels[2])]
    table = evaluate_pairs(model, pairs, num_workers=1, progress=False)
    assert all(table[d]["accuracy_without_ties"] == 1.0 for d in ("VQ", "MQ", "TA"))


# --- fine-tuning from a VideoAlign checkpoint (reward-train init_from) ----------------------------------------------


def test_reward_train_fine_tunes_a_videoalign_checkpoint_in_its_own_format(replica, tmp_path):
    """``init_from``: the checkpoint's tensors train (and only they), the result is a VideoAlign folder that
    VidPref loads by path (the base-model hint) with the validation normalisation, and a killed run resumes."""
    from alignment.config import config_from_dict
    from alignment.reward.train import RewardTrainConfig, train_reward_model
    from alignment.reward.videoalign import videoalign_key
    from tests.alignment.test_reward_train import brightness_snapshot

    snapshot = brightness_snapshot(tmp_path / "snapshot", n_videos=6, n_pairs=8)

    def config(output: str, **overrides) -> RewardTrainConfig:
        values = {
            "output_dir": str(tmp_path / output),
            "snapshot": str(snapshot),
            "init_from": str(replica["folder"]),
            "init_from_base_model": str(replica["base"]),
            "learning_rate": 1e-3,
            "batch_size": 2,
            "epochs": 1,
            "num_workers": 0,
            "progress": False,
            **overrides,
        }
        return config_from_dict(RewardTrainConfig, values)

    source = load_videoalign_model(replica["folder"], base_model=replica["base"], device="cpu")
    assert all(videoalign_key(name) for name in source.checkpoint_names)  # every trained tensor has a VideoAlign name
    metrics = train_reward_model(config("run", max_steps=3))
    assert [entry["step"] for entry in metrics["train_loss"]] == [1, 2, 3]
    model_dir = tmp_path / "run" / "model"
    assert is_videoalign_folder(model_dir)
    assert sorted(p.name for p in model_dir.glob("checkpoint-*")) == ["checkpoint-3"]
    tuned = load_reward_model(model_dir)  # by path: vidpref_base_model.json names the base
    assert isinstance(tuned, VideoAlignRewardModel) and tuned.base_path == Path(replica["base"])

    before, after = source.state_dict(), tuned.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert "rm_head.weight" in changed and any(".lora_B." in name for name in changed)
    assert changed <= source.checkpoint_names | {"reward_mean", "reward_std"}  # frozen tensors stay as loaded
    saved = json.loads((model_dir / "model_config.json").read_text())["inference_config"]
    norm = metrics["normalization"]
    assert saved["VQ_mean"] == pytest.approx(norm["VQ"]["mean"]) and saved["TA_std"] == pytest.approx(norm["TA"]["std"])

    # the frames are VideoAlign's (min pixels 100,352), not the VidPref backbone's
    frames = tuned.read_video(snapshot / "videos" / "0.mp4")
    assert frames.shape[-2] * frames.shape[-1] >= 100_352

    # a run stopped after a checkpoint resumes from it and ends where an uninterrupted one does
    interrupted = config("resumed", max_steps=2, save_every_steps=1)
    train_reward_model(interrupted)
    interrupted.max_steps = 3
    resumed = train_reward_model(interrupted)
    assert [e["loss"] for e in resumed["train_loss"]] == pytest.approx(
        [e["loss"] for e in metrics["train_loss"]], rel=1e-4
    )
