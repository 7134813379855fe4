"""A tiny random Wan 2.1 policy folder, built locally: for tests, CPU smoke runs and the toy world.

``build_tiny_wan_policy(folder)`` writes what ``WanPipeline.save_pretrained`` writes — a
``WanTransformer3DModel`` with a few small layers, a small random ``UMT5EncoderModel``, a word-level
tokenizer built from the toy world's vocabulary (nothing downloaded), a ``FlowMatchEulerDiscreteScheduler``
config — plus the codec: ``codec/`` (``PixelCodec``, exact and weightless; or ``ConvCodec``, a small
per-frame autoencoder the toy world's base policy fits to its clips) or a tiny random ``AutoencoderKLWan``
in ``vae/`` (exercises the production codec path), and
``vidpref_policy.json`` with the clip size the policy is built for (32×32, 9 frames by default).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import torch

from alignment.flow.model import POLICY_DEFAULTS_FILE, PixelCodec

T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")

_BASE_WORDS = (
    "a an the in on at to of with and is are moving slowly quickly left right up down red green blue yellow "
    "magenta cyan white black grey square circle triangle ball shape video clip scene background bright dark "
    "small large fast slow smooth cat dog person car bird tree house street water sky sea city night day"
)


def build_tiny_umt5_tokenizer(extra_words: str = ""):
    """A word-level fast tokenizer with T5's special tokens that appends ``</s>`` like UMT5's."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from alignment.toyworld.prompts import COLOURS, DIRECTIONS, SHAPES, SPEEDS

    toy_words = " ".join([*COLOURS, *SHAPES, *DIRECTIONS, *SPEEDS])
    words = sorted(set(re.findall(r"\w+|[^\w\s]", f"{_BASE_WORDS} {toy_words} {extra_words}".lower())))
    punctuation = [c for c in ".,:;!?\"'()-*" if c not in words]
    vocab = {token: index for index, token in enumerate([*T5_SPECIAL_TOKENS, *words, *punctuation])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_tiny_wan_policy(
    folder: str | Path,
    *,
    num_frames: int = 9,
    height: int = 32,
    width: int = 32,
    fps: float = 8,
    codec: str = "pixel",
    pixel_patch: int = 2,
    conv_codec=None,
    num_layers: int = 2,
    num_heads: int = 2,
    head_dim: int = 16,
    text_dim: int = 32,
    text_layers: int = 2,
    max_sequence_length: int = 16,
    sampling_shift: float = 1.0,
    seed: int = 0,
) -> Path:
    """Save a random tiny Wan policy to ``folder`` (written to a temporary name, then renamed); returns it.

    ``codec``: ``"pixel"`` (PixelCodec folding ``pixel_patch``² pixels into channels), ``"conv"`` (the
    ``ConvCodec`` given as ``conv_codec``, fitted or not) or ``"wan_vae"`` (a tiny random AutoencoderKLWan:
    4× temporal, 8× spatial compression, so ``num_frames`` must be 4k + 1).
    The transformer's attention width is ``num_heads × head_dim``; its patch is (1, 2, 2).
    """
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import UMT5Config, UMT5EncoderModel

    if codec not in ("pixel", "conv", "wan_vae"):
        raise ValueError(f"codec {codec!r}: choose 'pixel', 'conv' or 'wan_vae'")
    if (codec == "conv") != (conv_codec is not None):
        raise ValueError("codec='conv' takes its ConvCodec as conv_codec (and only then)")
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder}: already exists; pick a new folder for the tiny policy")
    torch.manual_seed(seed)
    tokenizer = build_tiny_umt5_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=text_dim,
            d_kv=text_dim // 4,
            d_ff=2 * text_dim,
            num_layers=text_layers,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            dropout_rate=0.0,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=0,
        )
    )
    if codec == "pixel":
        video_codec, vae, latent_channels = PixelCodec(patch=pixel_patch), None, 3 * pixel_patch**2
    elif codec == "conv":
        video_codec, vae, latent_channels = conv_codec, None, conv_codec.latent_channels
    else:
        vae = AutoencoderKLWan(
            base_dim=8,
            z_dim=4,
            dim_mult=[1, 2, 2, 2],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=[0.0] * 4,
            latents_std=[1.0] * 4,
        )
        video_codec, latent_channels = None, vae.config.z_dim
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=num_heads,
        attention_head_dim=head_dim,
        in_channels=latent_channels,
        out_channels=latent_channels,
        text_dim=text_dim,
        freq_dim=32,
        ffn_dim=4 * num_heads * head_dim,
        num_layers=num_layers,
        rope_max_seq_len=64,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=sampling_shift)
    pipeline = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer
    )
    temp = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.tmp"
    folder.parent.mkdir(parents=True, exist_ok=True)
    verbosity = diffusers_logging.get_verbosity()
    try:
        diffusers_logging.set_verbosity_error()  # "vae=None cannot be saved": the pixel codec is saved below
        from transformers.utils import logging as transformers_logging

        bars = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()  # a "Writing model shards" bar per save: noise in a worker's log
        try:
            pipeline.save_pretrained(temp)
        finally:
            if bars:
                transformers_logging.enable_progress_bar()
        diffusers_logging.set_verbosity(verbosity)
        if video_codec is not None:
            video_codec.save(temp / "codec")
        defaults = {
            "num_frames": num_frames,
            "height": height,
            "width": width,
            "fps": fps,
            "max_sequence_length": max_sequence_length,
        }
        (temp / POLICY_DEFAULTS_FILE).write_text(json.dumps(defaults, indent=2) + "\n")
        os.rename(temp, folder)
    finally:
        diffusers_logging.set_verbosity(verbosity)
        shutil.rmtree(temp, ignore_errors=True)
    return folder
