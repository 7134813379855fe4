"""Toy clips to and from browser-safe MP4 files.

``write_mp4`` encodes raw RGB frames in-process with PyAV's libx264 (H.264, yuv420p, constant frame
rate, ``+faststart``), first enlarging small clips by an integer factor with nearest-neighbour sampling
so that a browser shows crisp pixels rather than a 32-px smudge. In-process encoding writes toy clips
about 16× faster than starting an ``ffmpeg`` process per clip (a 9-frame clip costs less to encode
than ffmpeg costs to start), which is what makes studies on tens of thousands of clips practical.
``read_mp4`` decodes with PyAV and can shrink the frames back (block means undo the enlargement
exactly), so the oracle can score a file.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np

CRF = 12  # near-lossless: toy clips are tiny, so file size does not matter but pixel fidelity does


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
    import av

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
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    target = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: not a video file (no video stream found)")
            frames = [_decode(frame, target) for frame in container.decode(video=0)]
    except av.FFmpegError as error:
        raise ValueError(f"{path}: could not decode ({error})") from error
    if not frames:
        raise ValueError(f"{path}: the video stream has no frames")
    return np.stack(frames)


def _decode(frame, target: tuple[int, int] | None) -> np.ndarray:
    if target is None:
        return frame.to_ndarray(format="rgb24")
    height, width = target
    if frame.height % height == 0 and frame.width % width == 0:
        pixels = frame.to_ndarray(format="rgb24").astype(np.float32)
        blocks = pixels.reshape(height, frame.height // height, width, frame.width // width, 3)
        return np.clip(np.rint(blocks.mean(axis=(1, 3))), 0, 255).astype(np.uint8)
    return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
