"""Find the ffmpeg and ffprobe binaries the media pipeline runs."""

from __future__ import annotations

import shutil


class MissingToolError(RuntimeError):
    pass


def find_ffmpeg(ffmpeg_setting: str = "", ffprobe_setting: str = "") -> tuple[str, str | None]:
    """Return (ffmpeg, ffprobe-or-None).

    Order: the explicit setting, the system's binary on PATH, then the binary inside the imageio-ffmpeg
    wheel. There is no ffprobe in that wheel; None tells the prober to read the container with PyAV.
    """
    ffmpeg = ffmpeg_setting or shutil.which("ffmpeg")
    if not ffmpeg:
        try:
            import imageio_ffmpeg

            ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError):
            ffmpeg = ""
    ffprobe = ffprobe_setting or shutil.which("ffprobe")
    return ffmpeg, ffprobe


def require_ffmpeg(binary: str) -> str:
    if not binary:
        raise MissingToolError(
            "ffmpeg was not found: install it (`apt-get install ffmpeg`), or `pip install imageio-ffmpeg`, "
            "or set FFMPEG_BINARY to its path."
        )
    return binary
