"""A small video+text backbone for CPU and the toy world's 32×32 clips, read like VideoReward.

The sequence is ``[video tubelets | VQ | MQ | prompt words | TA]``: video tokens attend to each
other freely, everything after them attends causally — so, as in the VLM, the VQ and MQ queries
never see the prompt and the TA query does.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alignment.data.video import FrameSpec


def hash_words(text: str, vocab_size: int) -> list[int]:
    """Words → ids in [1, vocab_size) by CRC32 (0 is padding); stable across processes and runs."""
    return [1 + zlib.crc32(word.encode("utf-8")) % (vocab_size - 1) for word in re.findall(r"\w+", text.lower())]


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
            frames = F.interpolate(frames, size=(self.frame_size, self.frame_size), mode="bilinear",
                                   antialias=True, align_corners=False)
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


class SmallVideoBackbone(nn.Module):
    def __init__(self, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, frame_size: int = 32,
                 num_frames: int = 8, tubelet: tuple[int, int, int] = (2, 8, 8), vocab_size: int = 4096,
                 max_prompt_tokens: int = 32, fps: float | None = None):
        super().__init__()
        tube_t, tube_h, tube_w = tubelet
        if num_frames % tube_t or frame_size % tube_h or frame_size % tube_w:
            raise ValueError(f"tubelet {tubelet} must divide {num_frames} frames of {frame_size}x{frame_size}")
        self.hidden_size = hidden_size
        self.num_video_tokens = (num_frames // tube_t) * (frame_size // tube_h) * (frame_size // tube_w)
        self.max_prompt_tokens = max_prompt_tokens
        self.frame_spec = FrameSpec(fps=fps, max_frames=num_frames, size=(frame_size, frame_size), frame_multiple=1)
        self._processor = SmallVideoProcessor(frame_size, num_frames, vocab_size, max_prompt_tokens)
        self.tubelet_embedding = nn.Conv3d(3, hidden_size, kernel_size=tubelet, stride=tubelet)
        self.video_positions = nn.Parameter(torch.randn(1, self.num_video_tokens, hidden_size) * 0.02)
        self.word_embedding = nn.Embedding(vocab_size, hidden_size, padding_idx=0)
        self.text_positions = nn.Parameter(torch.randn(1, max_prompt_tokens, hidden_size) * 0.02)
        self.reward_queries = nn.Parameter(torch.randn(3, hidden_size) * 0.02)  # VQ, MQ, TA
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, 4 * hidden_size, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size, bias=False)  # a bias would cancel in r_A − r_B
        length = self.num_video_tokens + 3 + max_prompt_tokens
        blocked = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        blocked[: self.num_video_tokens, : self.num_video_tokens] = False  # video tokens see the whole clip
        self.register_buffer("attention_blocked", blocked, persistent=False)

    def processor(self) -> SmallVideoProcessor:
        return self._processor

    def forward(self, frames: torch.Tensor, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """frames ``(N, T, C, S, S)`` → hidden states ``(N, 3, hidden)`` at VQ, MQ, TA."""
        batch = frames.shape[0]
        video = self.tubelet_embedding(frames.transpose(1, 2))  # (N, hidden, T', S', S')
        video = video.flatten(2).transpose(1, 2) + self.video_positions  # (N, V, hidden)
        words = self.word_embedding(prompt_ids) + self.text_positions  # (N, P, hidden)
        queries = self.reward_queries.unsqueeze(0).expand(batch, -1, -1)
        sequence = torch.cat([video, queries[:, :2], words, queries[:, 2:]], dim=1)  # (N, V + 3 + P, hidden)
        padding = torch.zeros(sequence.shape[:2], dtype=torch.bool, device=frames.device)
        padding[:, self.num_video_tokens + 2: -1] = ~prompt_mask
        hidden = self.norm(self.encoder(sequence, mask=self.attention_blocked, src_key_padding_mask=padding))
        return torch.cat([hidden[:, self.num_video_tokens: self.num_video_tokens + 2], hidden[:, -1:]], dim=1)
