"""A tiny random Qwen2-VL and a locally built tokenizer, saved to a folder like a real checkpoint.

For tests and CPU smoke runs: nothing is downloaded. The tokenizer is a word-level ``tokenizers``
model wrapped as ``PreTrainedTokenizerFast`` with Qwen2-VL's special tokens; the model is
``Qwen2VLForConditionalGeneration`` with a few small layers, so the production loading path
(``Qwen2VLModel.from_pretrained(folder)``) is exercised as is.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

QWEN2VL_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

BASE_WORDS = (
    "you are a helpful assistant system user rate this generated video on three separate criteria visual "
    "quality motion text alignment with the prompt clarity detail aesthetics plausibility of each frame "
    "stability naturalness smoothness and amount subjects actions scene style camera a an in at to is red "
    "green blue yellow white black circle square triangle moving left right up down fast slow small large "
    "cat dog person car ball sky sea city night day running walking flying bird tree house street water"
)


def build_tiny_tokenizer(extra_words: str = ""):
    """A word-level fast tokenizer with Qwen2-VL's special tokens (unknown words → ``[UNK]``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(re.findall(r"\w+|[^\w\s]", (BASE_WORDS + " " + extra_words).lower())))
    punctuation = [c for c in ".,:;!?\"'()-*" if c not in words]
    vocab = {token: index for index, token in enumerate(["[UNK]", *QWEN2VL_SPECIAL_TOKENS, *words, *punctuation])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    from tokenizers import normalizers

    backend.normalizer = normalizers.Lowercase()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
    )
    tokenizer.add_tokens(list(QWEN2VL_SPECIAL_TOKENS), special_tokens=True)
    return tokenizer


def build_tiny_qwen2vl(
    folder: str | Path, *, hidden_size: int = 64, num_layers: int = 2, vision_depth: int = 2, seed: int = 0
) -> Path:
    """Save a random tiny Qwen2-VL (config, safetensors weights, tokenizer) to ``folder``."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    folder = Path(folder)
    tokenizer = build_tiny_tokenizer()
    token_id = tokenizer.convert_tokens_to_ids
    heads = 4
    head_dim = hidden_size // heads
    third = head_dim // 2 // 3
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [head_dim // 2 - 2 * third, third, third],
            },
            "bos_token_id": token_id("<|endoftext|>"),
            "eos_token_id": token_id("<|im_end|>"),
            "pad_token_id": token_id("<|endoftext|>"),
        },
        vision_config={
            "depth": vision_depth,
            "embed_dim": 32,
            "hidden_size": hidden_size,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
