"""Qwen2-VL's video input without torchvision: resize, normalise, patchify.

Qwen2-VL's vision tower takes a video as ``pixel_values_videos`` of shape
``(grid_t · grid_h · grid_w, C · temporal_patch · patch · patch)`` plus ``video_grid_thw = (grid_t,
grid_h, grid_w)``. Rows are ordered temporal patch → merge block row → merge block column → row in
block → column in block, so the tower's 2×2 ``PatchMerger`` sees the four patches of a block
consecutively; each row flattens (C, temporal_patch, patch, patch) as its ``PatchEmbed`` expects.
The language model then holds ``grid_t · grid_h · grid_w / merge²`` ``<|video_pad|>`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignment.data.video import fit_frame_size

QWEN2VL_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP statistics, as Qwen2-VL was trained
QWEN2VL_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 or float ``(T, C, H, W)`` → float ``(T, C, height, width)`` in 0..255 (bicubic, antialiased)."""
    frames = frames.float()
    if frames.shape[-2:] == (height, width):
        return frames
    return F.interpolate(frames, size=(height, width), mode="bicubic", antialias=True, align_corners=False).clamp_(
        0, 255
    )


def patchify_video(
    frames: torch.Tensor, *, patch_size: int = 14, temporal_patch_size: int = 2, merge_size: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, C, H, W)`` → ``(patches (grid_t·grid_h·grid_w, C·tp·p·p), grid_thw (3,))``.

    H and W must be multiples of ``patch_size · merge_size``; T is padded to a multiple of
    ``temporal_patch_size`` by repeating the last frame.
    """
    num_frames, channels, height, width = frames.shape
    if height % (patch_size * merge_size) or width % (patch_size * merge_size):
        raise ValueError(f"frame size {height}x{width} is not a multiple of {patch_size * merge_size}")
    if pad := -num_frames % temporal_patch_size:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
        num_frames += pad
    grid_t, grid_h, grid_w = num_frames // temporal_patch_size, height // patch_size, width // patch_size
    patches = frames.reshape(
        grid_t,
        temporal_patch_size,
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    # → (grid_t, block_row, block_col, row_in_block, col_in_block, C, tp, p, p)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    return patches, torch.tensor([grid_t, grid_h, grid_w], dtype=torch.long)


@dataclass(frozen=True)
class Qwen2VLVideoPreprocessor:
    """uint8 frames ``(T, C, H, W)`` → ``(pixel_values_videos rows, video_grid_thw)`` for one video."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 448 * 448
    mean: tuple[float, float, float] = QWEN2VL_MEAN
    std: tuple[float, float, float] = QWEN2VL_STD

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = fit_frame_size(
            frames.shape[-2],
            frames.shape[-1],
            factor=self.patch_size * self.merge_size,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
        )
        pixels = resize_frames(frames, height, width) / 255.0
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        pixels = (pixels - mean) / std
        return patchify_video(
            pixels, patch_size=self.patch_size, temporal_patch_size=self.temporal_patch_size, merge_size=self.merge_size
        )

    def num_video_tokens(self, grid_thw: torch.Tensor) -> int:
        return int(grid_thw.prod()) // (self.merge_size**2)
