"""The real architectures wire up: Wan2.1-T2V-1.3B and Qwen2-VL-2B-Instruct at their published sizes, with random
weights (``alignment.real_size``), through the product's own code at a tiny input size, on the CPU.

Wan's text encoder (UMT5-XXL) is not built: the transformer gets random prompt embeddings of its output's shape,
(B, 512, 4096), as the trainers read them from their cache. The Wan base runs in bf16 with float32 LoRA adapters,
as ``FlowMethod`` sets up LoRA on a GPU (on a CPU it keeps the base in float32: 5.7 GB instead of 2.8 GB).
Qwen2-VL's weights are bf16 (``RewardModelConfig.dtype``), saved to a temporary folder because the reward
backbone loads from one (with a stand-in tokenizer: the real one is a checkpoint file). Each model lives in a
class-scoped fixture, freed before the next class, so the peak is one model's: about 9.5 GB of RSS for Qwen2-VL's
step, of which 4.4 GB are its weights file, mapped, and 1.3 GB the bf16 gradient of its vision tower.
About 2 minutes on 2 idle cores, 4.5–5.5 on busy ones.
"""

from __future__ import annotations

import ctypes
import gc
import math
import shutil

import pytest
import torch

from alignment.flow.config import DEFAULT_LORA_TARGETS, FlowTrainConfig
from alignment.real_size import (
    PUBLISHED,
    WAN_TEXT_LENGTH,
    WAN_TRANSFORMER_CONFIG,
    build_wan_transformer,
    build_wan_vae,
    flow_dpo_lora_loss,
    lora_wrapped_modules,
    parameter_counts,
    random_reward_batch,
    read_config,
    relative_error,
    reward_pair_loss,
    save_random_qwen2vl,
)

# A real-size step on the CPU takes minutes and swings with the machine: on a slow, page-cache-starved day one
# reward step of the 2B model went past the suite's 600 s default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def release_memory() -> None:
    """Free a model's memory back to the system before the next one is built (glibc keeps freed heap pages)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def test_parameter_counts_are_the_published_ones():
    counts = parameter_counts()  # built on the meta device
    assert set(counts) == set(PUBLISHED)
    for name, measured in counts.items():
        assert abs(relative_error(name, measured)) < 0.01, (name, measured, PUBLISHED[name].parameters)
    assert counts["qwen2vl_total"] == counts["qwen2vl_language_model"] + counts["qwen2vl_vision"]  # lm_head tied


def test_the_configs_name_only_keys_the_installed_classes_take():
    import inspect

    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from alignment.real_size import WAN_VAE_CONFIG, qwen2vl_config

    for cls, path in ((WanTransformer3DModel, WAN_TRANSFORMER_CONFIG), (AutoencoderKLWan, WAN_VAE_CONFIG)):
        keys = {key for key in read_config(path) if not key.startswith("_")}
        assert keys <= set(inspect.signature(cls.__init__).parameters), (cls.__name__, path)
    config = qwen2vl_config()  # the hub's flat layout, read into text_config and vision_config
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (1536, 8960, 28)
    assert (text.num_attention_heads, text.num_key_value_heads, text.vocab_size) == (12, 2, 151936)
    assert text.rope_parameters["rope_theta"] == 1e6 and text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (vision.depth, vision.embed_dim, vision.hidden_size, vision.num_heads) == (32, 1280, 1536, 16)
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (14, 2, 2)
    assert config.tie_word_embeddings and (config.vision_start_token_id, config.video_token_id) == (151652, 151656)


# --------------------------------------------------------------------------------------------------
# Wan2.1-T2V-1.3B
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="class")  # freed when the class ends
def wan_policy(tmp_path_factory):
    """The real-size transformer as the LoRA trainer holds it: a ``WanFlowPolicy`` whose adapters
    ``add_lora`` (the product's call) attached, trained in float32 over a bf16 base."""
    from alignment.flow.model import WanFlowPolicy

    transformer = build_wan_transformer(dtype=torch.bfloat16)
    policy = WanFlowPolicy(
        tmp_path_factory.mktemp("wan"), transformer, device=torch.device("cpu"), dtype=torch.bfloat16
    )
    policy.add_lora(rank=FlowTrainConfig.lora_rank, target_modules=DEFAULT_LORA_TARGETS)
    for parameter in transformer.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()  # as FlowMethod.setup does
    held = {"policy": policy}
    del policy, transformer
    yield held  # a holder, emptied at teardown: pytest keeps the fixture's value until its teardown has run
    held.clear()
    release_memory()


class TestWan:
    def test_lora_targets_are_found(self, wan_policy):
        policy = wan_policy["policy"]
        wrapped = lora_wrapped_modules(policy.transformer)
        layers = read_config(WAN_TRANSFORMER_CONFIG)["num_layers"]
        expected = {
            f"blocks.{block}.{attention}.{target}"
            for block in range(layers)
            for attention in ("attn1", "attn2")
            for target in DEFAULT_LORA_TARGETS
        }
        assert set(wrapped) == expected  # self- and cross-attention of all 30 blocks
        trainable = {name for name, p in policy.transformer.named_parameters() if p.requires_grad}
        assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
        rank = FlowTrainConfig.lora_rank
        # q, k, v, out of 1536 × 1536 each: 4 · 2 · 1536 · rank per attention
        assert sum(policy.transformer.get_parameter(n).numel() for n in trainable) == 2 * layers * 4 * 2 * 1536 * rank

    def test_vae_codec_encodes_and_decodes(self):
        from alignment.flow.model import WanVAECodec

        codec = WanVAECodec(build_wan_vae().eval().requires_grad_(False))
        assert codec.latent_shape(81, 480, 832) == (16, 21, 60, 104)  # what Wan2.1 generates
        pixels = torch.rand(1, 3, 5, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
        with torch.no_grad():
            latents = codec.encode(pixels)
            assert latents.shape == (1, *codec.latent_shape(5, 64, 64)) == (1, 16, 2, 8, 8)
            decoded = codec.decode(latents)
        assert decoded.shape == pixels.shape and torch.isfinite(decoded).all()
        del codec
        release_memory()

    def test_one_flow_dpo_step_changes_the_lora(self, wan_policy, tmp_path):
        """One Flow-DPO step (batch: one pair, 1 latent frame of 8×8, 512 random text embeddings of 4096) through
        ``alignment.losses``; the adapters start at the base (lora_B = 0), so the first loss is ln 2."""
        policy = wan_policy["policy"]
        model = policy.transformer
        model.train()
        generator = torch.Generator().manual_seed(0)
        latents_w, latents_l = torch.randn(2, 1, 16, 1, 8, 8, generator=generator)
        text = torch.randn(1, WAN_TEXT_LENGTH, 4096, generator=generator)  # UMT5-XXL's output, padded
        trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        before = {name: p.detach().clone() for name, p in trainable.items()}
        optimizer = torch.optim.AdamW(trainable.values(), lr=FlowTrainConfig.learning_rate)

        loss, logits = flow_dpo_lora_loss(policy, latents_w, latents_l, text, generator)
        assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and logits.abs().max() < 1e-6
        loss.backward()
        lora_b_grads = [p.grad for name, p in trainable.items() if ".lora_B." in name]
        assert all(g is not None and torch.isfinite(g).all() for g in lora_b_grads)
        assert sum(float(g.abs().sum()) for g in lora_b_grads) > 0
        optimizer.step()
        changed = {name for name, p in trainable.items() if not torch.equal(before[name], p)}
        assert {name for name in trainable if ".lora_B." in name} <= changed  # lora_A's gradient is 0 while B is 0

        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            loss_after, logits_after = flow_dpo_lora_loss(
                policy, latents_w, latents_l, text, torch.Generator().manual_seed(1)
            )
        assert torch.isfinite(loss_after) and logits_after.abs().max() > 0  # the policy now differs from the reference

        # the product's LoRA file, as a run's final/ or a checkpoint holds it, and the resume path reading it back
        trained = {name: p.detach().clone() for name, p in trainable.items()}
        assert policy.save_lora(tmp_path / "lora").is_file()
        with torch.no_grad():
            for p in trainable.values():
                p.zero_()
        policy.load_lora_into_adapter(tmp_path / "lora")
        assert all(torch.equal(p, trained[name]) for name, p in trainable.items())


# --------------------------------------------------------------------------------------------------
# Qwen2-VL-2B-Instruct
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="class")  # freed when the class ends
def qwen_reward_model(tmp_path_factory):
    """VideoReward on the real-size Qwen2-VL through the product's ``RewardModel`` (its backbone loads a folder:
    the random model and a stand-in tokenizer are saved to one first)."""
    from alignment.reward import RewardModel, RewardModelConfig

    folder = save_random_qwen2vl(tmp_path_factory.mktemp("qwen") / "qwen2-vl-2b-instruct")
    release_memory()
    model = RewardModel(RewardModelConfig(backbone="qwen2vl", backbone_path=str(folder), dtype="bfloat16"))
    held = {"model": model}
    del model
    yield held  # a holder, emptied at teardown (see wan_policy)
    held.clear()
    release_memory()
    shutil.rmtree(folder)  # 4.4 GB of random weights


class TestQwen2VL:
    def test_lora_targets_are_found(self, qwen_reward_model):
        backbone = qwen_reward_model["model"].backbone
        wrapped = lora_wrapped_modules(backbone)
        projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        assert len(wrapped) == 28 * len(projections)  # every projection of every language-model layer
        assert all(".language_model.layers." in name and name.endswith(projections) for name in wrapped)
        inner = backbone._inner()
        assert all(p.requires_grad for p in inner.visual.parameters())  # train_vision_tower (the default)
        assert not inner.get_input_embeddings().weight.requires_grad
        assert backbone.hidden_size == 1536 and backbone.vocab_rows == 151936
        assert backbone.reward_token_ids == [151657, 151658, 151659]  # after the 14 special tokens, as for the real one
        assert backbone.frame_spec.size_factor == 28 and backbone.frame_spec.frame_multiple == 2

    def test_one_reward_step(self, qwen_reward_model):
        """One step of the reward trainer on one pair of 2-frame 56×56 videos: rewards (2, 3), Bradley–Terry with
        ties, gradients into the LoRA, the vision tower, the reward tokens and the heads; then AdamW on all of them
        but the vision tower (its bf16 optimizer state, 2.7 GB, is left out on the CPU)."""
        model = qwen_reward_model["model"]
        model.train()
        batch = random_reward_batch(model, pairs=1, num_frames=2, height=56, width=56)
        inputs = batch["inputs"]
        assert inputs["video_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]  # 2 frames of 56×56: 1 × 4 × 4 patches
        assert (inputs["input_ids"] == 151656).sum(dim=1).tolist() == [4, 4]  # after the 2×2 merge
        rewards = model(**inputs)
        assert rewards.shape == (2, 3) and torch.isfinite(rewards).all()

        loss = reward_pair_loss(model, inputs, batch["labels"])
        assert torch.isfinite(loss)
        loss.backward()
        named = dict(model.named_parameters())
        grads = {name: p.grad for name, p in named.items() if p.requires_grad}
        assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None][:5]
        for part in (".lora_B.", ".visual.", "reward_token_embeddings", "head.weight"):
            part_grads = [g for name, g in grads.items() if part in name]
            assert part_grads and all(torch.isfinite(g).all() for g in part_grads), part
            assert sum(float(g.float().abs().sum()) for g in part_grads) > 0, part

        stepped = {name: p for name, p in named.items() if p.requires_grad and ".visual." not in name}
        for name, p in named.items():
            if ".visual." in name:
                p.grad = None
        before = {name: p.detach().clone() for name, p in stepped.items()}
        torch.optim.AdamW(stepped.values(), lr=2e-6).step()  # RewardTrainConfig's learning rate
        changed = {name for name, p in stepped.items() if not torch.equal(before[name], p)}
        assert {name for name in stepped if ".lora_B." in name} <= changed
        assert "head.weight" in changed
