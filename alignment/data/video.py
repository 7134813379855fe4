"""Video files: decoding for training and scoring, and clips to and from browser-safe MP4s.

``read_video_frames`` samples frames at a target fps, resized in swscale; they come back as uint8 tensors
``(T, C, H, W)`` (RGB), the cheapest form to pass between DataLoader workers; normalisation and
patchifying belong to the model's processor.

``write_mp4`` encodes raw RGB frames in-process with PyAV's libx264 (H.264, yuv420p, constant frame
rate, ``+faststart``), first enlarging small clips by an integer factor with nearest-neighbour sampling
so that a browser shows crisp pixels rather than a 32-px smudge. In-process encoding writes small clips
about 16× faster than starting an ``ffmpeg`` process per clip (a 9-frame clip costs less to encode
than ffmpeg costs to start). ``read_mp4`` decodes every frame with PyAV and can shrink the frames back
(block means undo the enlargement exactly), so the toy world's oracle can score a file. Torch is
imported only by ``read_video_frames``: the toy world and the torch-free workers write and read MP4s here.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

if TYPE_CHECKING:
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
        text = text[len("file://") :]
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


@contextmanager
def opened_video(path: str | Path) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """``(container, its first video stream)``, closed on exit; ``VideoDecodeError`` naming ``path`` when it cannot
    be opened or holds no video stream."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise VideoDecodeError(f"{path}: cannot open ({error})") from error
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: not a video file (no video stream)")
        yield container, container.streams.video[0]


def read_video_frames(
    path: str | Path, spec: FrameSpec, *, threads: int = 0, skip_nonreference: bool = True
) -> tuple[torch.Tensor, float]:
    """Decode ``path`` and return ``(frames uint8 (T, C, H, W), sampled fps)``.

    Decoding stops after the last wanted frame; only kept frames are converted (and resized) to RGB.
    Frames that no other frame refers to (most B-frames) are not decoded at all unless wanted: a packet's
    presentation time says which frame it holds before it is decoded, so the decoder skips non-reference
    frames everywhere but at the sampled ones (about half the frames of a typical H.264 clip).
    ``skip_nonreference=False`` decodes every frame up to the last wanted one (the baseline of
    ``bench/reward.py``).
    """
    with opened_video(path) as (container, stream):
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
            decoded = (
                _decoded_frames(container, stream, source_fps, wanted=slots)
                if skip_nonreference
                else enumerate(container.decode(stream))
            )
            for index, frame in decoded:
                if index in slots:
                    image = (
                        frame.to_ndarray(width=out_w, height=out_h, format="rgb24", interpolation="BICUBIC")
                        if resize
                        else frame.to_ndarray(format="rgb24")
                    )  # (H, W, C)
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
    import torch

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


# --------------------------------------------------------------------------------------------------
# Clips (uint8 (T, H, W, 3) arrays) to and from MP4 files
# --------------------------------------------------------------------------------------------------

CRF = 12  # near-lossless: the clips are tiny, so file size does not matter but pixel fidelity does


def upscale_factor(height: int, width: int, min_side: int) -> int:
    """Smallest integer factor that brings the short side to ``min_side`` and keeps both sides even
    (yuv420p needs even sizes)."""
    factor = max(1, math.ceil(min_side / min(height, width)))
    while (height * factor) % 2 or (width * factor) % 2:
        factor += 1
    return factor


def write_mp4(clip: np.ndarray, path: str | os.PathLike, fps: int = 8, *, min_side: int = 64) -> Path:
    """Write a ``uint8`` clip ``(T, H, W, 3)`` to ``path`` as H.264 MP4; returns the path.

    The file appears atomically (written to a temporary name in the same folder, then renamed). One
    encoder thread per clip: callers write many clips at once from a thread pool.
    """
    clip = np.asarray(clip)
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
        raise ValueError(f"clip must be uint8 (T, H, W, 3); got {clip.dtype} {clip.shape}")
    path = Path(path)
    factor = upscale_factor(clip.shape[1], clip.shape[2], min_side)
    frames = clip.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else clip
    height, width = frames.shape[1:3]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        with av.open(str(partial), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(CRF), "preset": "medium"}
            stream.thread_count = 1
            for image in np.ascontiguousarray(frames):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
    except (av.FFmpegError, av.codec.codec.UnknownCodecError) as error:
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"{path}: encoding with libx264 failed ({error}); PyAV's wheels include libx264 — reinstall av "
            "(pip install --force-reinstall av) if this build lacks it"
        ) from error
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return path


def read_mp4(path: str | os.PathLike, *, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Decode every frame of a video file to ``uint8`` ``(T, H, W, 3)`` RGB.

    ``size`` (an int for square frames, or (height, width)) shrinks the frames: by block means when
    the decoded size is a whole multiple of it (undoing ``write_mp4``'s enlargement), otherwise by
    ffmpeg's area resampling.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    target = None if size is None else (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: not a video file (no video stream found)")
            frames = [_frame_array(frame, target) for frame in container.decode(video=0)]
    except av.FFmpegError as error:
        raise ValueError(f"{path}: could not decode ({error})") from error
    if not frames:
        raise ValueError(f"{path}: the video stream has no frames")
    return np.stack(frames)


def _frame_array(frame, target: tuple[int, int] | None) -> np.ndarray:
    """One decoded frame as uint8 (H, W, 3), shrunk to ``target`` (block means when it divides the size)."""
    if target is None:
        return frame.to_ndarray(format="rgb24")
    height, width = target
    if frame.height % height == 0 and frame.width % width == 0:
        pixels = frame.to_ndarray(format="rgb24").astype(np.float32)
        blocks = pixels.reshape(height, frame.height // height, width, frame.width // width, 3)
        return np.clip(np.rint(blocks.mean(axis=(1, 3))), 0, 255).astype(np.uint8)
    return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
