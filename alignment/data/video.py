"""Video decoding for training and scoring: PyAV, frames sampled at a target fps, resized in swscale.

Frames come back as uint8 tensors ``(T, C, H, W)`` (RGB), the cheapest form to pass between
DataLoader workers; normalisation and patchifying belong to the model's processor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import torch


class VideoDecodeError(RuntimeError):
    """A video could not be found or decoded; the message names the file."""


@dataclass(frozen=True)
class FrameSpec:
    """How to sample and size the frames of one video.

    ``fps`` None keeps every frame (then ``max_frames`` subsamples uniformly). The frame count is
    rounded down to a multiple of ``frame_multiple`` (Qwen2-VL: its temporal patch, 2). With
    ``size`` set, frames are resized to exactly (height, width); otherwise the aspect ratio is kept,
    both sides divisible by ``size_factor`` and the area within [min_pixels, max_pixels].
    """

    fps: float | None = 2.0
    max_frames: int = 32
    max_pixels: int = 448 * 448
    min_pixels: int = 56 * 56
    size_factor: int = 28
    frame_multiple: int = 2
    size: tuple[int, int] | None = None


def fit_frame_size(height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) divisible by ``factor``, area within [min_pixels, max_pixels], aspect kept.

    The same rule as Qwen2-VL's ``smart_resize``, so frames resized here need no second resize.
    """
    if min(height, width) <= 0:
        raise ValueError(f"frame size {height}x{width} is empty")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {height}x{width} is above 200")
    new_h = max(factor, round(height / factor) * factor)
    new_w = max(factor, round(width / factor) * factor)
    if new_h * new_w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        new_h = max(factor, math.floor(height / beta / factor) * factor)
        new_w = max(factor, math.floor(width / beta / factor) * factor)
    elif new_h * new_w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * beta / factor) * factor
        new_w = math.ceil(width * beta / factor) * factor
    return new_h, new_w


def sample_frame_indices(num_frames: int, source_fps: float, spec: FrameSpec) -> np.ndarray:
    """Indices of the frames to keep: evenly spread, about ``spec.fps`` per second of video."""
    if num_frames <= 0:
        raise ValueError("a video without frames")
    if spec.fps is None:
        wanted = num_frames
    else:
        wanted = round(num_frames / source_fps * spec.fps) if source_fps > 0 else num_frames
    wanted = max(1, min(wanted, spec.max_frames, num_frames))
    multiple = max(1, spec.frame_multiple)
    wanted = max(multiple, wanted // multiple * multiple)
    return np.linspace(0, num_frames - 1, wanted).round().astype(np.int64)


def resolve_video_path(uri: str, roots: Sequence[str | Path] = ()) -> Path:
    """A local path for a snapshot's video URI: absolute, ``file://``, or relative to one of ``roots``."""
    text = str(uri)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if "://" in text:
        raise VideoDecodeError(f"{uri}: only local files are supported here; sync the bucket to a folder first")
    path = Path(text)
    if path.is_absolute():
        if path.is_file():
            return path
        raise VideoDecodeError(f"{uri}: no such video file")
    for root in roots:
        candidate = Path(root) / path
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(Path(root) / path) for root in roots) or "no roots given"
    raise VideoDecodeError(f"{uri}: video not found (tried {tried}); pass the media root that holds it")


def read_video_frames(path: str | Path, spec: FrameSpec, *, threads: int = 0,
                      skip_nonreference: bool = True) -> tuple[torch.Tensor, float]:
    """Decode ``path`` and return ``(frames uint8 (T, C, H, W), sampled fps)``.

    Decoding stops after the last wanted frame; only kept frames are converted (and resized) to RGB.
    Frames that no other frame refers to (most B-frames) are not decoded at all unless wanted: a packet's
    presentation time says which frame it holds before it is decoded, so the decoder skips non-reference
    frames everywhere but at the sampled ones (about half the frames of a typical H.264 clip).
    ``skip_nonreference=False`` decodes every frame up to the last wanted one (the baseline of
    ``bench/reward.py``).
    """
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise VideoDecodeError(f"{path}: cannot open ({error})") from error
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: not a video file (no video stream)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        rate = stream.average_rate or stream.guessed_rate
        source_fps = float(rate) if rate else 0.0
        num_frames = stream.frames
        if not num_frames and stream.duration and stream.time_base and source_fps:
            num_frames = int(round(float(stream.duration * stream.time_base) * source_fps))
        if not num_frames:
            raise VideoDecodeError(f"{path}: the container reports no frame count or duration")
        indices = sample_frame_indices(num_frames, source_fps, spec)
        height, width = stream.codec_context.height, stream.codec_context.width
        if spec.size is not None:
            out_h, out_w = spec.size
        else:
            out_h, out_w = fit_frame_size(
                height, width, factor=spec.size_factor, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels
            )
        resize = (out_h, out_w) != (height, width)
        slots: dict[int, list[int]] = {}  # frame index → output positions (a short clip repeats frames)
        for slot, index in enumerate(indices.tolist()):
            slots.setdefault(index, []).append(slot)
        # Filled frame by frame in the layout returned: a stack and a permuted copy afterwards would
        # each cost a pass over every pixel (the permute alone triples the time at 720p).
        frames = np.empty((len(indices), 3, out_h, out_w), dtype=np.uint8)  # (T, C, H, W)
        filled = np.zeros(len(indices), dtype=bool)
        last_wanted = int(indices[-1])
        try:
            decoded = (_decoded_frames(container, stream, source_fps, wanted=slots) if skip_nonreference
                       else enumerate(container.decode(stream)))
            for index, frame in decoded:
                if index in slots:
                    image = (frame.to_ndarray(width=out_w, height=out_h, format="rgb24", interpolation="BICUBIC")
                             if resize else frame.to_ndarray(format="rgb24"))  # (H, W, C)
                    for slot in slots[index]:
                        frames[slot] = image.transpose(2, 0, 1)
                        filled[slot] = True
                if index >= last_wanted:
                    break
        except av.error.FFmpegError as error:
            raise VideoDecodeError(f"{path}: decoding failed ({error})") from error
    if not filled.any():
        raise VideoDecodeError(f"{path}: no frame could be decoded")
    # Containers can over-report their frame count, and a variable frame rate can leave a wanted index
    # without a frame: such positions repeat the nearest decoded frame before them (after, at the start).
    first = int(filled.argmax())
    frames[:first] = frames[first]
    for slot in range(first + 1, len(indices)):
        if not filled[slot]:
            frames[slot] = frames[slot - 1]
    duration = num_frames / source_fps if source_fps else 0.0
    sampled_fps = len(indices) / duration if duration else float(len(indices))
    return torch.from_numpy(frames), sampled_fps


def _decoded_frames(container, stream, source_fps: float, *, wanted: dict[int, list[int]]):
    """``(frame index, frame)`` in presentation order. With timestamps, a frame's index is its time × the
    frame rate, and packets of unwanted frames are decoded with non-reference frames skipped; without
    them, every frame is decoded and counted."""
    time_base, start = stream.time_base, stream.start_time or 0
    context = stream.codec_context
    if not (time_base and source_fps):
        yield from enumerate(container.decode(stream))
        return

    def index_of(pts: int) -> int:
        return round(float((pts - start) * time_base) * source_fps)

    counted = 0  # frames without a timestamp follow the one before them
    for packet in container.demux(stream):
        if packet.pts is not None:
            context.skip_frame = "DEFAULT" if index_of(packet.pts) in wanted else "NONREF"
        elif packet.size:
            context.skip_frame = "DEFAULT"
        for frame in packet.decode():
            counted = index_of(frame.pts) if frame.pts is not None else counted + 1
            yield counted, frame
