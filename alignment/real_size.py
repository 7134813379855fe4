"""The real architectures without their weights: Wan2.1-T2V-1.3B and Qwen2-VL-2B-Instruct with random weights.

Every test builds tiny models; this module builds the real sizes from their published configs, copied into
``alignment/configs/`` (nothing is downloaded), so a CPU test can show that the product's code wires up with
them — LoRA targets, the Flow-DPO step, the reward step — and a GPU benchmark can measure them:

    alignment/configs/wan2.1-t2v-1.3b/transformer.json  Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json
    alignment/configs/wan2.1-t2v-1.3b/vae.json          its vae/config.json (the AutoencoderKLWan defaults)
    alignment/configs/qwen2-vl-2b-instruct.json         Qwen/Qwen2-VL-2B-Instruct's config.json (the flat layout
                                                        of the hub's file; transformers reads it into text_config)

Wan's text encoder, UMT5-XXL (d_model 4096; its encoder alone outweighs the transformer), is not built: the
transformer reads its output, ``(B, 512, 4096)`` embeddings, which the trainers read from their cache; the checks
feed random ones. Qwen2-VL's tokenizer is a file of the checkpoint, not a config: ``build_qwen2vl_tokenizer``
makes a stand-in with a word-level vocabulary and Qwen2-VL's special tokens at their published ids
(151643–151656), so ``video_token_id`` and friends in the config point at the right tokens and ids added later
(the reward tokens) land at 151657+, as with the real tokenizer.

Weights are random and built directly in the requested dtype (the default dtype is switched while the
modules are made), on the requested device; ``device="meta"`` builds without memory, for counting.

    .venv/bin/python -m alignment.real_size    parameter counts (built on the meta device) against the published
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from alignment.losses import flow_dpo_beta, flow_dpo_loss, flow_matching_error

if TYPE_CHECKING:
    from alignment.flow.model import FlowPolicy

CONFIGS = Path(__file__).resolve().parent / "configs"
WAN_T2V_1_3B = CONFIGS / "wan2.1-t2v-1.3b"
WAN_TRANSFORMER_CONFIG = WAN_T2V_1_3B / "transformer.json"
WAN_VAE_CONFIG = WAN_T2V_1_3B / "vae.json"
QWEN2VL_2B_CONFIG = CONFIGS / "qwen2-vl-2b-instruct.json"

WAN_TEXT_LENGTH = 512  # UMT5 tokens WanPipeline pads every prompt to (its max_sequence_length)
WAN_SIZE = {"num_frames": 81, "height": 480, "width": 832, "fps": 16}  # what Wan2.1-T2V-1.3B generates (480p)
QWEN2VL_FIRST_SPECIAL_ID = 151643  # <|endoftext|>; the 14 special tokens follow in QWEN2VL_SPECIAL_TOKENS' order


@dataclass(frozen=True)
class Published:
    """A published parameter count and where it comes from."""

    parameters: int
    source: str


PUBLISHED: dict[str, Published] = {
    "wan_transformer": Published(
        1_420_000_000,
        "Wan2.1-T2V-1.3B's transformer weights take 2.84 GB in bf16 (2 bytes a parameter), a third-party "
        "listing; Wan's report and model card round it to '1.3B'. Not checked against the hub's file itself",
    ),
    "wan_vae": Published(127_000_000, "Wan 2.1 report: Wan-VAE has 127M parameters"),
    "qwen2vl_total": Published(2_210_000_000, "Qwen/Qwen2-VL-2B-Instruct model card: 2.21B params"),
    "qwen2vl_language_model": Published(
        1_540_000_000, "Qwen2-VL report, Table 1: the 2B's LLM is Qwen2-1.5B (1.54B params, tied embeddings)"
    ),
    "qwen2vl_vision": Published(
        675_000_000 - 5120 * (3584 - 1536),
        "Qwen2-VL report, Table 1: a 675M ViT for every size — with the 7B's merger, whose last layer maps "
        "5120 → 3584; the 2B's maps 5120 → 1536, 10.5M parameters fewer, which this count takes off",
    ),
}


def read_config(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


@contextmanager
def _building(dtype: torch.dtype, device: str | torch.device) -> Iterator[None]:
    """Make modules in ``dtype`` on ``device``: parameters are born there, no float32 copy first."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _keep_in_float32(model: nn.Module) -> nn.Module:
    """What ``from_pretrained(torch_dtype=half)`` does for a diffusers model: its ``_keep_in_fp32_modules``
    (Wan: the rope, time embedder, modulation tables and norms) stay in float32."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():
        if any(part in keep for part in name.split(".")):
            module.float()
    return model


def build_wan_transformer(
    *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0, **overrides
) -> nn.Module:
    """``WanTransformer3DModel`` of Wan2.1-T2V-1.3B (``overrides``: config keys, e.g. ``num_layers=2``)."""
    from diffusers import WanTransformer3DModel

    config = {key: value for key, value in read_config(WAN_TRANSFORMER_CONFIG).items() if not key.startswith("_")}
    config.update(overrides)
    torch.manual_seed(seed)
    with _building(dtype, device):
        model = WanTransformer3DModel.from_config(config)
    return _keep_in_float32(model) if dtype != torch.float32 else model


def build_wan_vae(
    *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0
) -> nn.Module:
    """``AutoencoderKLWan`` of Wan 2.1 (4× temporal, 8× spatial, 16 latent channels)."""
    from diffusers import AutoencoderKLWan

    config = {key: value for key, value in read_config(WAN_VAE_CONFIG).items() if not key.startswith("_")}
    torch.manual_seed(seed)
    with _building(dtype, device):
        return AutoencoderKLWan.from_config(config)


def qwen2vl_config(**text_overrides):
    """``Qwen2VLConfig`` of Qwen2-VL-2B-Instruct, read from the hub's flat layout (``text_overrides``: language
    model keys such as ``num_hidden_layers``; ``vision_depth=`` for the vision tower's blocks)."""
    from transformers import Qwen2VLConfig

    values = read_config(QWEN2VL_2B_CONFIG)
    vision_depth = text_overrides.pop("vision_depth", None)
    values.update(text_overrides)
    if vision_depth is not None:
        values["vision_config"] = {**values["vision_config"], "depth": vision_depth}
    return Qwen2VLConfig(**values)


def build_qwen2vl(
    *, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu", seed: int = 0, **overrides
) -> nn.Module:
    """``Qwen2VLForConditionalGeneration`` of Qwen2-VL-2B-Instruct with random weights."""
    from transformers import Qwen2VLForConditionalGeneration

    config = qwen2vl_config(**overrides)
    torch.manual_seed(seed)
    with _building(dtype, device):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model


def build_qwen2vl_tokenizer():
    """A stand-in for Qwen2-VL's tokenizer (a checkpoint file, not a config): word-level, with the special tokens
    at their published ids and filler tokens below them, so ``len(tokenizer)`` is 151657 as the real one's."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from alignment.reward.tiny import QWEN2VL_SPECIAL_TOKENS, build_tiny_tokenizer

    tiny = build_tiny_tokenizer().get_vocab()  # [UNK], the tiny model's words and punctuation, the special tokens
    regular = [token for token in sorted(tiny, key=tiny.__getitem__) if token not in QWEN2VL_SPECIAL_TOKENS]
    regular += [f"<|filler_{index}|>" for index in range(QWEN2VL_FIRST_SPECIAL_ID - len(regular))]
    vocab = {token: index for index, token in enumerate([*regular, *QWEN2VL_SPECIAL_TOKENS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="<|endoftext|>", eos_token="<|im_end|>"
    )
    tokenizer.add_tokens(list(QWEN2VL_SPECIAL_TOKENS), special_tokens=True)
    return tokenizer


def save_random_qwen2vl(
    folder: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **overrides,
) -> Path:
    """A Qwen2-VL-2B-Instruct folder with random weights and the stand-in tokenizer, as the reward backbone
    loads one (``RewardModelConfig(backbone_path=folder)``); the model is freed before returning."""
    folder = Path(folder)
    model = build_qwen2vl(dtype=dtype, device=device, seed=seed, **overrides)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    del model
    build_qwen2vl_tokenizer().save_pretrained(folder)
    return folder


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def parameter_counts() -> dict[str, int]:
    """The real architectures' parameter counts, built on the meta device (no memory, no time)."""
    transformer = build_wan_transformer(device="meta")
    vae = build_wan_vae(device="meta")
    qwen = build_qwen2vl(device="meta")
    inner: Any = qwen.model
    return {
        "wan_transformer": parameter_count(transformer),
        "wan_vae": parameter_count(vae),
        "qwen2vl_total": parameter_count(qwen),  # lm_head is tied to the embeddings: counted once
        "qwen2vl_language_model": parameter_count(inner.language_model),
        "qwen2vl_vision": parameter_count(inner.visual),
    }


def relative_error(name: str, measured: int) -> float:
    return measured / PUBLISHED[name].parameters - 1.0


def lora_wrapped_modules(model: nn.Module) -> list[str]:
    """Names of the modules a peft LoRA adapter wraps (those holding ``lora_A``)."""
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A)]


# --------------------------------------------------------------------------------------------------
# One training step's loss, as the trainers compute it (shared by tests/alignment/test_real_size.py and
# bench/gpu.py)
# --------------------------------------------------------------------------------------------------


def flow_dpo_lora_loss(
    policy: FlowPolicy,
    latents_w: torch.Tensor,
    latents_l: torch.Tensor,
    text: torch.Tensor,
    generator: torch.Generator,
    *,
    beta: float = 500.0,
    sigma_shift: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow-DPO's ``(loss, logits)`` on (winner, loser) latents ``(B, C, t, h, w)`` and text ``(B, L, D)`` for a
    policy with a LoRA adapter, built from the trainer's own pieces (``alignment.flow.train``: ``sample_sigmas``,
    ``noised``, ``reference_velocity``; winner and loser share σ and noise; the reference is the same network with
    its adapters disabled) and ``alignment.losses`` — the Flow-DPO branch of ``step_loss``, with the per-pair
    logits kept (``step_loss`` reports only their mean)."""
    from alignment.flow.train import noised, reference_velocity, sample_sigmas

    model: Any = policy.transformer
    device = latents_w.device
    sigmas = sample_sigmas(latents_w.shape[0], generator, sigma_shift).to(device)
    noise = torch.randn(latents_w.shape, generator=generator).to(device)  # shared by winner and loser
    x_w, target_w = noised(latents_w, noise, sigmas)
    x_l, target_l = noised(latents_l, noise, sigmas)
    latents, targets = torch.cat([x_w, x_l]), torch.cat([target_w, target_l])  # (2B, …)
    both_sigmas, both_text = torch.cat([sigmas, sigmas]), torch.cat([text, text])
    policy_w, policy_l = flow_matching_error(policy.velocity(latents, both_sigmas, both_text), targets).chunk(2)
    reference = reference_velocity(policy, latents, both_sigmas, both_text, lora_model=model)
    reference_w, reference_l = flow_matching_error(reference, targets).chunk(2)
    return flow_dpo_loss(policy_w, policy_l, reference_w, reference_l, flow_dpo_beta(sigmas, beta))


def random_reward_batch(
    model: nn.Module, *, pairs: int = 1, num_frames: int = 2, height: int = 56, width: int = 56, seed: int = 0
) -> dict:
    """A batch of ``pairs`` pairs of random uint8 videos ``(T, 3, H, W)`` through the reward model's own
    processor and ``RewardBatchCollator``, as the training loader makes it (labels: VQ A, MQ tie, TA B)."""
    from alignment.reward.model import RewardBatchCollator

    generator = torch.Generator().manual_seed(seed)

    def video() -> torch.Tensor:
        return torch.randint(0, 256, (num_frames, 3, height, width), dtype=torch.uint8, generator=generator)

    processor: Any = model.processor()
    items = [
        {
            "pair_id": index,
            "prompt": "a red circle moving left on a blue background",
            "video_a": video(),
            "video_b": video(),
            "labels": torch.tensor([1, 0, -1], dtype=torch.int8),
        }
        for index in range(pairs)
    ]
    return RewardBatchCollator(processor)(items)


def reward_pair_loss(
    model: nn.Module, inputs: dict, labels: torch.Tensor, *, kind: str = "bt_ties", theta: float = 5.0
) -> torch.Tensor:
    """The reward trainer's own loss (``alignment.reward.train.pair_loss``): rewards of the A videos then the B
    videos, the margins r_A − r_B per dimension, Bradley–Terry with ties (``kind``)."""
    from alignment.reward.train import pair_loss

    return pair_loss(model, {"inputs": inputs, "labels": labels}, kind=kind, theta=theta)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    counts = parameter_counts()
    print(f"{'model':<24}{'measured':>15}{'published':>15}{'error':>9}")
    for name, measured in counts.items():
        print(f"{name:<24}{measured:>15,}{PUBLISHED[name].parameters:>15,}{relative_error(name, measured):>+9.2%}")
    print("\nsources:")
    for name, published in PUBLISHED.items():
        print(f"  {name}: {published.source}")


if __name__ == "__main__":
    main()
