"""A small video+text backbone for CPU and the toy world's 32×32 clips, read like VideoReward.

Three readings of one clip, as in the VLM: VQ and MQ are read by two query tokens that attend to
the video and never see the prompt; TA is read from the video *and* the prompt.

- **Video.** Each frame carries, besides its pixels, its change from the previous frame and to the
  next one: motion quality is about how the picture changes (a jitter, a held frame, a jump), and a
  difference shows that inside one tubelet, where comparing two distant tokens took more data than
  the toy study has. Tubelets get fixed sinusoidal (y, x) positions — learned ones start from noise,
  and the object's track is what MQ and a direction of motion are read from. A spatial encoder pools
  each time step's tubelets into a frame token, a temporal encoder relates the frame tokens, and the
  VQ/MQ queries read frame and tubelet tokens through a small decoder.
- **Text alignment** is the product of a bag of the prompt's words and a projection of the frame
  tokens in time order: a bilinear match, additive over words. A TA token that attended to both the
  video and the words learned a prompt-free prior instead — on held-out prompts it preferred clips
  that looked like the training prompts' (a clip turned more than 54° off the prompt's direction
  beat the right one in 86 % of such pairs) and its score hardly moved when the prompt was changed.
  The product scores a clip only through the words, and a new prompt reuses what each word learned.
  With ``frame_cnn_channels`` the frames are also read by a small CNN at full resolution, max-pooled
  over positions: a shape is an outline a few pixels wide that 8×8 tubelets cut apart (in the toy
  study, pairs that differ by a wrong shape were judged at chance without it).
  With ``ta_time_basis`` = K the frames are read through K orthonormal polynomials of time (their
  mean, trend, curvature, ...) instead of one weight per time step: colour and shape need only the
  mean and a direction the trend, and the readout has K/T' of the weights. In the toy study (3,584
  training pairs) held-out TA went from 78.3 to 81.5 % with K = 3, its fit to the training pairs to 92.4 %.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alignment.data.video import FrameSpec

# Input channels per frame: RGB, change from the previous frame, change to the next one.
FRAME_CHANNELS = 9


def hash_words(text: str, vocab_size: int) -> list[int]:
    """Words → ids in [1, vocab_size) by CRC32 (0 is padding); stable across processes and runs."""
    return [1 + zlib.crc32(word.encode("utf-8")) % (vocab_size - 1) for word in re.findall(r"\w+", text.lower())]


def orthonormal_time_basis(steps: int, count: int) -> torch.Tensor:
    """(count, steps): the first ``count`` orthonormal polynomials of time over ``steps`` evenly spaced steps
    (the mean, the trend, the curvature, …). Not saved with a model but rebuilt, so fixed by convention: each
    function is positive at the first step."""
    times = torch.linspace(-1.0, 1.0, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.stack([times**k for k in range(count)], dim=1))  # (steps, count)
    return (basis * basis[0].sign()).T.float().contiguous()


@dataclass
class SmallVideoProcessor:
    """Videos + prompts → ``frames (N, T, C, S, S)`` in [−1, 1], ``prompt_ids``/``prompt_mask`` ``(N, P)``."""

    frame_size: int = 32
    num_frames: int = 8
    vocab_size: int = 4096
    max_prompt_tokens: int = 32

    def _frames(self, frames: torch.Tensor) -> torch.Tensor:
        count = frames.shape[0]
        if count != self.num_frames:  # spread (or repeat) frames evenly over the clip
            frames = frames[torch.linspace(0, count - 1, self.num_frames).round().long()]
        frames = frames.float()
        if frames.shape[-2:] != (self.frame_size, self.frame_size):
            frames = F.interpolate(
                frames, size=(self.frame_size, self.frame_size), mode="bilinear", antialias=True, align_corners=False
            )
        return frames / 127.5 - 1.0

    def __call__(self, videos: list[torch.Tensor], prompts: list[str]) -> dict[str, torch.Tensor]:
        prompt_ids = torch.zeros((len(prompts), self.max_prompt_tokens), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids = hash_words(prompt, self.vocab_size)[: self.max_prompt_tokens]
            prompt_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return {
            "frames": torch.stack([self._frames(video) for video in videos]),
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_ids != 0,
        }


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``(L,)`` integer positions → ``(L, dim)`` sines and cosines, wavelengths from 4 to 400 steps."""
    wavelengths = 4 * 100 ** (torch.arange(dim // 2, dtype=torch.float32) / max(1, dim // 2 - 1))
    angles = positions.float()[:, None] * (2 * math.pi / wavelengths)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def with_motion(frames: torch.Tensor) -> torch.Tensor:
    """``(N, T, 3, S, S)`` → ``(N, T, 9, S, S)``: each frame, its change from the previous frame and
    to the next one (zero at the ends)."""
    step = frames.diff(dim=1)  # (N, T − 1, 3, S, S)
    still = torch.zeros_like(frames[:, :1])
    return torch.cat([frames, torch.cat([still, step], 1), torch.cat([step, still], 1)], dim=2)


def _encoder(hidden_size: int, num_heads: int, num_layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        hidden_size, num_heads, 4 * hidden_size, dropout=0.0, batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)


class SmallVideoBackbone(nn.Module):
    def __init__(
        self,
        *,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        frame_size: int = 32,
        num_frames: int = 8,
        tubelet: tuple[int, int, int] = (2, 8, 8),
        vocab_size: int = 4096,
        max_prompt_tokens: int = 32,
        fps: float | None = None,
        frame_cnn_channels: int = 0,
        ta_time_basis: int = 0,
    ):
        super().__init__()
        tube_t, tube_h, tube_w = tubelet
        if num_frames % tube_t or frame_size % tube_h or frame_size % tube_w or tube_h % 2 or tube_w % 2:
            raise ValueError(
                f"tubelet {tubelet} must divide {num_frames} frames of {frame_size}x{frame_size} "
                "and have even height and width"
            )
        self.hidden_size = hidden_size
        self.tubelet = tubelet
        self.grid = (num_frames // tube_t, frame_size // tube_h, frame_size // tube_w)  # (T', S', S')
        self.frame_spec = FrameSpec(fps=fps, max_frames=num_frames, size=(frame_size, frame_size), frame_multiple=1)
        self._processor = SmallVideoProcessor(frame_size, num_frames, vocab_size, max_prompt_tokens)
        # A 2×2 pixel stage with a nonlinearity first: where the object is, and its colour, is not a
        # linear function of the pixels against a grey background.
        self.tubelet_embedding = nn.Sequential(
            nn.Conv2d(FRAME_CHANNELS * tube_t, hidden_size // 2, kernel_size=2, stride=2),
            nn.GELU(),
            nn.Conv2d(
                hidden_size // 2, hidden_size, kernel_size=(tube_h // 2, tube_w // 2), stride=(tube_h // 2, tube_w // 2)
            ),
        )
        # Unit-scale content next to unit-scale positions: added to the small raw embedding, the
        # positions drowned what a tubelet shows (noise, blur and banding were learned far worse).
        self.tubelet_norm = nn.LayerNorm(hidden_size)
        grid_t, grid_h, grid_w = self.grid
        rows, columns = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
        half = hidden_size // 2
        tubelet_positions = torch.cat(
            [sinusoidal_positions(rows.flatten(), half), sinusoidal_positions(columns.flatten(), hidden_size - half)],
            dim=-1,
        )
        self.register_buffer("tubelet_positions", tubelet_positions, persistent=False)  # (S'·S', H)
        self.register_buffer(
            "frame_positions", sinusoidal_positions(torch.arange(grid_t), hidden_size), persistent=False
        )  # (T', H)
        self.frame_query = nn.Parameter(torch.randn(hidden_size) * 0.02)
        self.spatial_encoder = _encoder(hidden_size, num_heads, num_layers)
        self.temporal_encoder = _encoder(hidden_size, num_heads, num_layers)
        self.video_norm = nn.LayerNorm(hidden_size)
        self.reward_queries = nn.Parameter(torch.randn(2, hidden_size) * 0.02)  # VQ, MQ
        query_layer = nn.TransformerDecoderLayer(
            hidden_size, num_heads, 4 * hidden_size, dropout=0.0, batch_first=True, norm_first=True
        )
        self.query_decoder = nn.TransformerDecoder(query_layer, num_layers)
        self.norm = nn.LayerNorm(hidden_size, bias=False)  # a bias would cancel in r_A − r_B
        self.word_embedding = nn.Embedding(vocab_size, hidden_size, padding_idx=0)
        self.text_projection = nn.Linear(hidden_size, hidden_size, bias=False)
        # Shape is a matter of outlines a few pixels wide, which 8×8 tubelets cut apart: a CNN over each
        # frame at full resolution, max-pooled over positions (where the object is does not matter).
        self.frame_cnn = None
        frame_features = hidden_size
        if frame_cnn_channels:
            width = frame_cnn_channels
            self.frame_cnn = nn.Sequential(
                nn.Conv2d(FRAME_CHANNELS, width, 3, padding=1),
                nn.GELU(),
                nn.Conv2d(width, width, 3, padding=1, stride=2),
                nn.GELU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.GELU(),
                nn.Conv2d(width, width, 3, padding=1, stride=2),
                nn.GELU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.GELU(),  # receptive field 21 px: a whole toy shape
                nn.AdaptiveMaxPool2d(1),
                nn.Flatten(),
                nn.LayerNorm(width),
            )
            frame_features += width
        # TA reads the frame features in time order: with one weight per time step, or (ta_time_basis = K)
        # through K smooth functions of time shared by all steps (orthonormal polynomials: the mean, the
        # trend, ...), K/T' of the weights to learn from the same pairs.
        time_inputs = grid_t
        self.register_buffer("time_basis", None, persistent=False)
        if ta_time_basis:
            if not 0 < ta_time_basis <= grid_t:
                raise ValueError(f"ta_time_basis {ta_time_basis} must lie in [1, {grid_t}] (the time steps)")
            self.register_buffer("time_basis", orthonormal_time_basis(grid_t, ta_time_basis), persistent=False)
            time_inputs = ta_time_basis
        self.video_projection = nn.Linear(time_inputs * frame_features, hidden_size, bias=False)

    def processor(self) -> SmallVideoProcessor:
        return self._processor

    def forward(self, frames: torch.Tensor, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """frames ``(N, T, C, S, S)`` → hidden states ``(N, 3, hidden)`` for VQ, MQ, TA."""
        batch, _, _, height, width = frames.shape
        grid_t, tube_t = self.grid[0], self.tubelet[0]
        steps = with_motion(frames).reshape(batch * grid_t, tube_t * FRAME_CHANNELS, height, width)
        tubelets = self.tubelet_embedding(steps).flatten(2).transpose(1, 2)  # (N·T', S'·S', H)
        tubelets = self.tubelet_norm(tubelets) + self.tubelet_positions
        query = self.frame_query.expand(batch * grid_t, 1, -1)
        spatial = self.spatial_encoder(torch.cat([query, tubelets], dim=1))  # (N·T', 1 + S'², H)
        frame_tokens = spatial[:, 0].reshape(batch, grid_t, -1) + self.frame_positions
        frame_tokens = self.temporal_encoder(frame_tokens)  # (N, T', H)
        video = self.video_norm(torch.cat([frame_tokens, spatial[:, 1:].reshape(batch, -1, self.hidden_size)], 1))
        quality = self.query_decoder(self.reward_queries.expand(batch, -1, -1), video)  # (N, 2, H): VQ, MQ

        words = self.word_embedding(prompt_ids) * prompt_mask.unsqueeze(-1)  # (N, P, H)
        frame_features = video[:, :grid_t]  # (N, T', H)
        if self.frame_cnn is not None:
            # channels-last: oneDNN's convolutions on the CPU run this CNN, forward and backward, 1.6× as fast
            pooled = self.frame_cnn(with_motion(frames).flatten(0, 1).contiguous(memory_format=torch.channels_last))
            pooled = pooled.reshape(batch, grid_t, tube_t, -1).mean(2)  # (N, T', C): per time step of the tubelets
            frame_features = torch.cat([frame_features, pooled], dim=-1)
        if self.time_basis is not None:
            frame_features = torch.einsum("kt,ntf->nkf", self.time_basis, frame_features)  # (N, K, F)
        seen = self.video_projection(frame_features.flatten(1))  # (N, H): the frames in time order
        alignment = self.text_projection(words.sum(1)) * seen  # (N, H)
        return torch.cat([self.norm(quality), alignment.unsqueeze(1)], dim=1)
