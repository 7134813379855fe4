"""The velocity-model adapter: a diffusers flow-matching video transformer, its codec and text encoder.

A *policy folder* is a diffusers-format folder (what ``WanPipeline.save_pretrained`` writes)::

    model_index.json
    transformer/        WanTransformer3DModel (config.json + safetensors)
    text_encoder/       UMT5EncoderModel
    tokenizer/
    scheduler/          scheduler_config.json (its ``shift`` / ``flow_shift`` is the sampling shift)
    vae/                AutoencoderKLWan                          ─┐ one of the two: the codec
    codec/              codec_config.json (+ weights): PixelCodec or ConvCodec, toy world ─┘
    vidpref_policy.json optional: num_frames, height, width, fps, max_sequence_length of the videos

A *trained policy folder* (a run's ``final/`` or a checkpoint) holds ``flow_policy.json`` naming its
base folder and either ``pytorch_lora_weights.safetensors`` (LoRA, loadable by
``WanPipeline.load_lora_weights``) or ``transformer/`` (full fine-tune). ``load_policy`` reads both kinds.

Time convention — diffusers' FlowMatch schedulers: σ ∈ [0, 1], σ = 1 is pure noise,

    x_σ = (1 − σ) · x₀ + σ · ε,    velocity v = dx_σ/dσ = ε − x₀,

and sampling integrates from σ = 1 down to σ = 0. The transformer's ``timestep`` is σ · 1000.

The text encoder and the codec load lazily, on first use: training reads their outputs from the cache
(``alignment.flow.cache``) and never needs them in memory.
"""

from __future__ import annotations

import abc
import json
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from alignment.flow.config import DEFAULT_LORA_TARGETS

log = logging.getLogger(__name__)

POLICY_DEFAULTS_FILE = "vidpref_policy.json"
TRAINED_POLICY_FILE = "flow_policy.json"
LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"
CODEC_CONFIG_FILE = "codec_config.json"
CONV_CODEC_WEIGHTS_FILE = "codec.safetensors"
NUM_TRAIN_TIMESTEPS = 1000


# --------------------------------------------------------------------------------------------------
# Codecs: pixels (B, 3, T, H, W) in [-1, 1]  ↔  normalised latents (B, C, t, h, w)
# --------------------------------------------------------------------------------------------------


class VideoCodec(Protocol):
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, T, H, W) in [-1, 1] → latents (B, C, t, h, w), normalised for the transformer."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, t, h, w) → pixels (B, 3, T, H, W) in [-1, 1]."""

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, t, h, w) of a video of ``num_frames`` × ``height`` × ``width``."""

    def fingerprint(self) -> dict:
        """What determines the latents (for the cache key)."""


class PixelCodec(nn.Module):
    """The toy world's codec: pixels folded space-to-depth by ``patch`` (identity when 1), times ``scale``.

    Exact and invertible, with no weights: (B, 3, T, H, W) → (B, 3·p², T, H/p, W/p).
    """

    def __init__(self, patch: int = 1, scale: float = 1.0):
        super().__init__()
        if patch < 1:
            raise ValueError(f"PixelCodec patch must be ≥ 1, got {patch}")
        self.patch, self.scale = int(patch), float(scale)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = pixels.shape
        p = self.patch
        if height % p or width % p:
            raise ValueError(f"frames of {height}x{width} are not divisible by the codec's patch {p}")
        folded = pixels.reshape(batch, channels, frames, height // p, p, width // p, p)
        folded = folded.permute(0, 1, 4, 6, 2, 3, 5).reshape(batch, channels * p * p, frames, height // p, width // p)
        return folded * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        batch, latent_channels, frames, h, w = latents.shape
        p = self.patch
        unfolded = (latents / self.scale).reshape(batch, latent_channels // (p * p), p, p, frames, h, w)
        unfolded = unfolded.permute(0, 1, 4, 5, 2, 6, 3)  # (B, 3, T, h, p, w, p)
        return unfolded.reshape(batch, latent_channels // (p * p), frames, h * p, w * p)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return (3 * self.patch**2, num_frames, height // self.patch, width // self.patch)

    def fingerprint(self) -> dict:
        return {"kind": "pixel", "patch": self.patch, "scale": self.scale}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CODEC_CONFIG_FILE).write_text(json.dumps(self.fingerprint(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> PixelCodec:
        config = json.loads((Path(folder) / CODEC_CONFIG_FILE).read_text())
        if config.get("kind") != "pixel":
            raise ValueError(f"{folder}/{CODEC_CONFIG_FILE}: kind {config.get('kind')!r}, expected 'pixel'")
        return cls(patch=config["patch"], scale=config["scale"])


class ConvCodec(nn.Module):
    """The toy world's learned codec: a small per-frame convolutional autoencoder, 4× smaller per side.

    (B, 3, T, H, W) → (B, ``latent_channels``, T, H/4, W/4), normalised per channel by the statistics of
    the clips it was fitted to (``fit_conv_codec``). A latent diffusion model in miniature: the transformer
    models 8×8-pixel tokens of ``4 · latent_channels`` smooth values instead of 192 raw pixel values, and
    the decoder's convolutions join neighbouring tokens, so a tiny transformer trained for minutes on a
    CPU makes clean clips instead of a patchwork of blocks. Pixel noise finer than the latent grid does
    not survive the round trip; everything else the toy world shows (the gradient, the shape, its colour
    and its track) does. Saved as ``codec/codec_config.json`` + ``codec/codec.safetensors``.
    """

    factor = 4

    def __init__(self, latent_channels: int = 8, width: int = 32):
        super().__init__()
        if latent_channels < 1 or width < 1:
            raise ValueError(f"ConvCodec latent_channels and width must be ≥ 1, got {latent_channels}, {width}")
        self.latent_channels, self.width = int(latent_channels), int(width)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * width, latent_channels, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, 2 * width, 3, padding=1),
            nn.SiLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 3, 3, padding=1),
        )
        self.register_buffer("latent_mean", torch.zeros(latent_channels))
        self.register_buffer("latent_std", torch.ones(latent_channels))

    def _frames(self, videos: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = videos.shape
        return videos.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)

    def _videos(self, frames: torch.Tensor, batch: int) -> torch.Tensor:
        _, channels, height, width = frames.shape
        return frames.reshape(batch, -1, channels, height, width).permute(0, 2, 1, 3, 4)

    def encode_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        """Un-normalised latents (B, C, T, H/4, W/4) of pixels (B, 3, T, H, W), with gradients."""
        _, _, _, height, width = pixels.shape
        if height % self.factor or width % self.factor:
            raise ValueError(f"frames of {height}x{width} are not divisible by the codec's factor {self.factor}")
        return self._videos(self.encoder(self._frames(pixels)), pixels.shape[0])

    def decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels of un-normalised latents, with gradients."""
        return self._videos(self.decoder(self._frames(latents)), latents.shape[0])

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        z = self.encode_raw(pixels.float())
        return (z - self.latent_mean.view(1, -1, 1, 1, 1)) / self.latent_std.view(1, -1, 1, 1, 1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.float() * self.latent_std.view(1, -1, 1, 1, 1) + self.latent_mean.view(1, -1, 1, 1, 1)
        return self.decode_raw(z)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return (self.latent_channels, num_frames, height // self.factor, width // self.factor)

    def fingerprint(self) -> dict:
        return {"kind": "conv", "latent_channels": self.latent_channels, "width": self.width}

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, folder / CONV_CODEC_WEIGHTS_FILE
        )
        (folder / CODEC_CONFIG_FILE).write_text(json.dumps(self.fingerprint(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> ConvCodec:
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / CODEC_CONFIG_FILE).read_text())
        if config.get("kind") != "conv":
            raise ValueError(f"{folder}/{CODEC_CONFIG_FILE}: kind {config.get('kind')!r}, expected 'conv'")
        weights = folder / CONV_CODEC_WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: the conv codec's weights are missing; rebuild the policy folder")
        codec = cls(latent_channels=config["latent_channels"], width=config["width"])
        codec.load_state_dict(load_file(weights))
        return codec.eval().requires_grad_(False)


def fit_conv_codec(
    codec: ConvCodec,
    clips: np.ndarray,
    *,
    steps: int,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fit ``codec`` to reconstruct the frames of uint8 ``clips`` (N, T, H, W, 3) (mean squared error,
    AdamW, cosine decay), then set its latent normalisation from them; returns the loss per step."""
    from tqdm.auto import tqdm

    frames = torch.from_numpy(clips.reshape(-1, 1, *clips.shape[2:]))  # (N·T, 1, H, W, 3): one-frame clips
    generator = torch.Generator().manual_seed(seed)
    codec.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(codec.parameters(), lr=learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps), eta_min=learning_rate / 20)
    losses = []
    bar = tqdm(range(steps), desc="fit codec", disable=not progress)
    for _ in bar:
        chosen = torch.randint(len(frames), (batch_size,), generator=generator)
        pixels = pixels_from_uint8_clips(frames[chosen])  # (B, 3, 1, H, W)
        loss = torch.nn.functional.mse_loss(codec.decode_raw(codec.encode_raw(pixels)), pixels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.5f}")
    bar.close()
    codec.eval().requires_grad_(False)
    with torch.no_grad():
        chosen = torch.randperm(len(frames), generator=generator)[:4096]
        z = codec.encode_raw(pixels_from_uint8_clips(frames[chosen])).transpose(0, 1).flatten(1)  # (C, n·h·w)
        codec.latent_mean.copy_(z.mean(dim=1))
        codec.latent_std.copy_(z.std(dim=1).clamp_min(1e-4))
    return losses


class WanVAECodec(nn.Module):
    """``AutoencoderKLWan`` with the per-channel normalisation ``WanPipeline`` uses:
    latents = (z − latents_mean) / latents_std, with z the mean of the encoder's distribution."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        z_dim = vae.config.z_dim
        self.register_buffer(
            "latents_mean", torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1), persistent=False
        )
        self.register_buffer(
            "latents_std", torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1), persistent=False
        )

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        z = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mean
        return (z.float() - self.latents_mean) / self.latents_std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.float() * self.latents_std + self.latents_mean
        return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0].float()

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        temporal, spatial = self.vae.config.scale_factor_temporal, self.vae.config.scale_factor_spatial
        if (num_frames - 1) % temporal:
            raise ValueError(f"num_frames={num_frames}: the Wan VAE needs {temporal}·k + 1 frames (e.g. 9, 17, 81)")
        if height % spatial or width % spatial:
            raise ValueError(f"{height}x{width}: the Wan VAE needs sides divisible by {spatial}")
        return (self.vae.config.z_dim, (num_frames - 1) // temporal + 1, height // spatial, width // spatial)

    def fingerprint(self) -> dict:
        return {"kind": "wan_vae", "config": {k: v for k, v in dict(self.vae.config).items() if not k.startswith("_")}}


def load_codec(folder: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """The codec of a policy folder: ``codec/`` (PixelCodec or ConvCodec) or ``vae/`` (AutoencoderKLWan)."""
    folder = Path(folder)
    config_path = folder / "codec" / CODEC_CONFIG_FILE
    if config_path.is_file():
        if json.loads(config_path.read_text()).get("kind") == "conv":
            return ConvCodec.load(folder / "codec").to(device)
        return PixelCodec.load(folder / "codec")
    if (folder / "vae").is_dir():
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.from_pretrained(folder / "vae", torch_dtype=dtype).to(device).eval()
        return WanVAECodec(vae).to(device)
    raise FileNotFoundError(f"{folder}: no codec/{CODEC_CONFIG_FILE} and no vae/ folder; a policy folder needs one")


# --------------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------------


def pixels_from_uint8(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (T, C, H, W) → float pixels (C, T, H, W) in [-1, 1]."""
    return frames.permute(1, 0, 2, 3).float() / 127.5 - 1.0


def pixels_from_uint8_clips(clips: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3) → float pixels (B, 3, T, H, W) in [-1, 1]; the inverse of ``uint8_from_pixels``."""
    clips = torch.as_tensor(clips)
    return clips.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def uint8_from_pixels(pixels: torch.Tensor) -> np.ndarray:
    """Pixels (B, 3, T, H, W) in [-1, 1] → uint8 clips (B, T, H, W, 3)."""
    clips = ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return clips.permute(0, 2, 3, 4, 1).cpu().numpy()


def pad_text_embeds(embeds: list[torch.Tensor], length: int) -> torch.Tensor:
    """Trimmed embeddings (L_i, D) → (B, length, D), zero-padded as the diffusers pipelines pad them (the
    transformer's cross-attention has no mask, so the padding length is part of the conditioning)."""
    out = torch.zeros(len(embeds), length, embeds[0].shape[-1], dtype=embeds[0].dtype)
    for row, embed in enumerate(embeds):
        out[row, : min(length, embed.shape[0])] = embed[:length]
    return out


class FlowPolicy(abc.ABC):
    """A flow-matching video model: ``transformer`` (what training changes), plus its codec and text
    encoder, loaded lazily from ``folder``. One subclass per architecture implements ``velocity``,
    ``encode_prompts`` and ``save_lora``; everything else is shared."""

    transformer_class_name: str

    def __init__(
        self,
        folder: Path,
        transformer: nn.Module,
        *,
        device: torch.device,
        dtype: torch.dtype,
        encoder_dtype: torch.dtype | None = None,
    ):
        self.folder, self.transformer, self.device, self.dtype = folder, transformer, device, dtype
        self.encoder_dtype = encoder_dtype or dtype  # the text encoder's and codec's
        defaults_path = folder / POLICY_DEFAULTS_FILE
        defaults = json.loads(defaults_path.read_text()) if defaults_path.is_file() else {}
        self.num_frames: int = defaults.get("num_frames", 81)
        self.height: int = defaults.get("height", 480)
        self.width: int = defaults.get("width", 832)
        self.fps: float = defaults.get("fps", 16)
        self.max_sequence_length: int = defaults.get("max_sequence_length", 512)
        scheduler_path = folder / "scheduler" / "scheduler_config.json"
        scheduler = json.loads(scheduler_path.read_text()) if scheduler_path.is_file() else {}
        self.sampling_shift: float = float(scheduler.get("flow_shift") or scheduler.get("shift") or 1.0)
        self._codec: Any = None
        self._text_encoder: Any = None
        self._tokenizer: Any = None

    # ---- the architecture-specific part -----------------------------------------------------------

    @abc.abstractmethod
    def velocity(
        self,
        latents: torch.Tensor,
        sigmas: torch.Tensor,
        text_embeds: torch.Tensor,
        transformer: nn.Module | None = None,
    ) -> torch.Tensor:
        """v_θ(x_σ, σ, y): latents (B, C, t, h, w), sigmas (B,) in [0, 1], text_embeds (B, L, D) →
        velocity (B, C, t, h, w) in float32. ``transformer`` overrides ``self.transformer`` (a wrapped
        training copy, or a frozen reference)."""

    @abc.abstractmethod
    def encode_prompts(self, prompts: list[str]) -> list[torch.Tensor]:
        """Text embeddings of each prompt, trimmed to its tokens: a list of (L_i, D) on the CPU."""

    @abc.abstractmethod
    def save_lora(self, folder: str | Path, transformer: nn.Module | None = None) -> Path:
        """Write the LoRA of ``transformer`` (default ``self.transformer``) as the architecture's diffusers
        pipeline loads it (``<Pipeline>.load_lora_weights(folder)``); returns the weights file."""

    # ---- shared ------------------------------------------------------------------------------------

    @property
    def codec(self):
        if self._codec is None:
            self._codec = load_codec(self.folder, device=self.device, dtype=self.encoder_dtype)
        return self._codec

    @property
    def text_encoder_loaded(self) -> bool:
        return self._text_encoder is not None

    def release_encoders(self) -> None:
        """Free the text encoder and codec (after caching their outputs)."""
        self._codec = self._text_encoder = self._tokenizer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def latent_shape(
        self, num_frames: int | None = None, height: int | None = None, width: int | None = None
    ) -> tuple[int, int, int, int]:
        return self.codec.latent_shape(num_frames or self.num_frames, height or self.height, width or self.width)

    def pad_text(self, embeds: list[torch.Tensor]) -> torch.Tensor:
        return pad_text_embeds(embeds, self.max_sequence_length)

    @torch.no_grad()
    def encode_videos(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, T, H, W) in [-1, 1] → latents (B, C, t, h, w) float32."""
        return self.codec.encode(pixels.to(self.device)).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, C, t, h, w) → uint8 clips (B, T, H, W, 3)."""
        return uint8_from_pixels(self.codec.decode(latents.to(self.device)))

    def add_lora(
        self, *, rank: int, alpha: float | None = None, target_modules=DEFAULT_LORA_TARGETS, dropout: float = 0.0
    ) -> None:
        """Add a trainable LoRA adapter (peft) to the transformer; everything else is frozen."""
        from peft import LoraConfig

        self.transformer.requires_grad_(False)
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha if alpha is not None else rank,
            lora_dropout=dropout,
            init_lora_weights=True,
            target_modules=list(target_modules),
        )
        try:
            self.transformer.add_adapter(config)
        except ValueError as error:
            raise ValueError(
                f"LoRA target modules {list(target_modules)} do not match the transformer's layers "
                f"({error}); name linear layers such as to_q, to_k, to_v, to_out.0, ffn.net.0.proj"
            ) from error

    def lora_state_dict(self, transformer: nn.Module | None = None) -> dict[str, torch.Tensor]:
        from peft.utils import get_peft_model_state_dict

        return get_peft_model_state_dict(transformer or self.transformer)

    def load_lora_into_adapter(self, folder: str | Path) -> None:
        """Set the existing adapter's weights from a saved LoRA folder (resuming)."""
        from diffusers.utils import convert_unet_state_dict_to_peft
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = load_file(Path(folder) / LORA_WEIGHTS_FILE)
        state = convert_unet_state_dict_to_peft({k.removeprefix("transformer."): v for k, v in state.items()})
        result = set_peft_model_state_dict(self.transformer, state, adapter_name="default")
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{folder}: LoRA keys {result.unexpected_keys[:3]}… do not fit this transformer")


class WanFlowPolicy(FlowPolicy):
    """Wan 2.1 (``WanTransformer3DModel`` + UMT5 + ``AutoencoderKLWan``), as ``WanPipeline`` runs it."""

    transformer_class_name = "WanTransformer3DModel"

    def velocity(self, latents, sigmas, text_embeds, transformer=None):
        model = transformer if transformer is not None else self.transformer
        timestep = (sigmas * NUM_TRAIN_TIMESTEPS).to(latents.device)
        dtype = next(model.parameters()).dtype  # the base weights' (a bf16 reference copy runs in bf16)
        return model(
            hidden_states=latents.to(dtype),
            timestep=timestep,
            encoder_hidden_states=text_embeds.to(dtype),
            return_dict=False,
        )[0].float()

    def _load_text_encoder(self) -> None:
        from transformers import AutoTokenizer, UMT5EncoderModel

        self._tokenizer = AutoTokenizer.from_pretrained(self.folder / "tokenizer")
        self._text_encoder = UMT5EncoderModel.from_pretrained(
            self.folder / "text_encoder", torch_dtype=self.encoder_dtype
        )
        self._text_encoder.to(self.device).eval()

    @torch.no_grad()
    def encode_prompts(self, prompts):
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        if self._text_encoder is None:
            self._load_text_encoder()
        inputs = self._tokenizer(
            [prompt_clean(p) for p in prompts],
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        mask = inputs.attention_mask.to(self.device)
        hidden = self._text_encoder(inputs.input_ids.to(self.device), mask).last_hidden_state
        lengths = mask.gt(0).sum(dim=1).tolist()
        return [row[:length].float().cpu() for row, length in zip(hidden, lengths)]

    def save_lora(self, folder, transformer=None):
        from diffusers import WanPipeline

        model = transformer or self.transformer
        WanPipeline.save_lora_weights(
            folder,
            transformer_lora_layers=self.lora_state_dict(model),
            transformer_lora_adapter_metadata=model.peft_config["default"].to_dict(),
        )
        return Path(folder) / LORA_WEIGHTS_FILE


POLICY_CLASSES: dict[str, type[FlowPolicy]] = {WanFlowPolicy.transformer_class_name: WanFlowPolicy}
"""transformer ``_class_name`` → adapter. LTX-Video follows by adding ``LTXFlowPolicy`` here."""


def _transformer_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def load_policy(
    folder: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    encoder_dtype: torch.dtype | None = None,
) -> FlowPolicy:
    """Load a policy folder, or a trained one (``flow_policy.json``: its base plus LoRA or transformer).

    ``dtype`` is the transformer's; ``encoder_dtype`` (default ``dtype``) the text encoder's and codec's,
    which load on first use."""
    folder = Path(folder)
    trained = folder / TRAINED_POLICY_FILE
    if trained.is_file():
        info = json.loads(trained.read_text())
        policy = load_policy(info["base"], device=device, dtype=dtype, encoder_dtype=encoder_dtype)
        if info["finetune"] == "lora":
            policy.transformer.load_lora_adapter(str(folder), weight_name=LORA_WEIGHTS_FILE, prefix="transformer")
            policy.transformer.to(policy.device)
        else:
            transformer_class = type(policy.transformer)
            policy.transformer = transformer_class.from_pretrained(folder / "transformer", torch_dtype=dtype).to(device)
            policy.transformer.eval()
        return policy
    config_path = folder / "transformer" / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder}: no transformer/config.json; give a diffusers-format policy folder "
            f"(e.g. one written by alignment.flow.tiny.build_tiny_wan_policy) or a run's final/"
        )
    class_name = json.loads(config_path.read_text()).get("_class_name")
    if class_name not in POLICY_CLASSES:
        raise ValueError(
            f"{config_path}: transformer {class_name!r} has no flow adapter; supported: {sorted(POLICY_CLASSES)}"
        )
    device = torch.device(device)
    transformer = _transformer_class(class_name).from_pretrained(folder / "transformer", torch_dtype=dtype)
    transformer.to(device).eval()
    return POLICY_CLASSES[class_name](folder, transformer, device=device, dtype=dtype, encoder_dtype=encoder_dtype)
