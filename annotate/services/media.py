"""Probe, transcode and poster-frame videos with ffmpeg; browser-safe output every time.

Output: H.264 / yuv420p, constant frame rate, `+faststart` (the index first, so playback starts before
the whole file arrives), even dimensions, the long side at most ``MAX_LONG_SIDE``.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from django.conf import settings

from config.tools import require_ffmpeg


class MediaError(ValueError):
    """A file that cannot become a playable video; the message is the reason, in plain words."""


# The demuxers ffmpeg may pick for an uploaded file (ffmpeg's `format_whitelist`). Anything else is refused
# before it is read: a PNG or an image-sequence pattern is not a video, and a playlist (HLS, concat) renamed
# `.mp4` would make ffmpeg open the files or URLs it names.
CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "mpegts", "flv", "ogg", "gif")
CONTAINER_WHITELIST = ",".join(CONTAINERS)
_NOT_ON_WHITELIST = re.compile(r"\[(\w+) @ [^]]*\] Format not on whitelist")
# A decoded video this much shorter than its header says lost its end (a truncated upload).
_TRUNCATED_BELOW = 0.9


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    fps: float
    width: int
    height: int
    num_frames: int
    rotation: int = 0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _limits() -> dict:
    return {
        "max_duration_s": settings.VIDPREF.get("MAX_VIDEO_SECONDS", 120.0),
        "max_long_side": settings.VIDPREF.get("MAX_LONG_SIDE", 1280),
        "max_fps": 60.0,
        # 8K UHD is 7680×4320; past 8192² a frame is hundreds of MB decoded, a cheap way to exhaust memory.
        "max_pixels": 8192 * 8192,
    }


def _ffmpeg_line(line: str, path: Path) -> str:
    """One line of ffmpeg's complaint without its ``[h264 @ 0x…]`` prefix or the server's folders."""
    return re.sub(r"^\[[^]]* @ 0x[0-9a-f]+\]\s*", "", line.strip()).replace(str(path), path.name)


def _unreadable(stderr: str, path: Path, fallback: str) -> MediaError:
    """The reason ffmpeg/ffprobe refused a file, in plain words."""
    refused = _NOT_ON_WHITELIST.search(stderr)
    if refused:
        kind = refused.group(1)
        if kind == "image2" or kind.endswith("_pipe"):
            what = "a still image or an image sequence"
        elif kind in {"hls", "concat", "dash"}:
            what = f"a playlist ({kind}) naming other files"
        else:
            what = f"{kind} data"
        return MediaError(
            f"not a video file ({what}; accepted containers: MP4/MOV, Matroska/WebM, AVI, MPEG-TS, FLV, Ogg, GIF)"
        )
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return MediaError(f"not a readable video ({_ffmpeg_line(lines[-1], path) if lines else fallback})")


def _probe_ffprobe(path: Path, ffprobe: str) -> VideoInfo:
    import ffmpeg

    try:
        probe = ffmpeg.probe(str(path), cmd=ffprobe, format_whitelist=CONTAINER_WHITELIST)
    except ffmpeg.Error as exc:
        raise _unreadable((exc.stderr or b"").decode(errors="replace"), path, "ffprobe failed") from exc
    streams = [s for s in probe.get("streams", []) if s.get("codec_type") == "video"]
    # Attached pictures (cover art in an audio file) are video streams that are not a video.
    streams = [s for s in streams if not s.get("disposition", {}).get("attached_pic")]
    if not streams:
        raise MediaError("no video stream (ffprobe found none)")
    stream = streams[0]
    fps = _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate"))
    # Matroska keeps a stream's length in a DURATION tag; the container's own duration is its longest
    # stream's, which may be a longer audio track.
    duration = (
        float(stream.get("duration") or 0.0)
        or _tag_seconds(stream.get("tags", {}).get("DURATION"))
        or float(probe.get("format", {}).get("duration") or 0.0)
    )
    frames = int(stream.get("nb_frames") or 0) or int(round(duration * fps))
    rotation = 0
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            rotation = int(side["rotation"])
    rotation = rotation or int(stream.get("tags", {}).get("rotate", 0) or 0)
    return VideoInfo(duration, fps, int(stream.get("width") or 0), int(stream.get("height") or 0), frames, rotation)


def _tag_seconds(value: str | None) -> float:
    """``HH:MM:SS.fffffffff`` (Matroska's DURATION tag) in seconds; 0 when absent or unreadable."""
    try:
        hours, minutes, seconds = (value or "").split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return 0.0


def _probe_pyav(path: Path) -> VideoInfo:
    import av

    try:
        with av.open(str(path), options={"format_whitelist": CONTAINER_WHITELIST}) as container:
            if not container.streams.video:
                raise MediaError("no video stream (the container has none)")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.base_rate or 0)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = _tag_seconds(stream.metadata.get("DURATION")) or float(container.duration or 0) / 1_000_000
            frames = stream.frames or int(round(duration * fps))
            return VideoInfo(duration, fps, stream.codec_context.width, stream.codec_context.height, frames)
    except av.error.FFmpegError as exc:
        raise MediaError(f"not a readable video, or not a video container ({exc})") from exc


def _rate(value: str | None) -> float:
    if not value or value in {"0/0", "0"}:
        return 0.0
    try:
        return float(Fraction(value))
    except (ValueError, ZeroDivisionError):
        return 0.0


def probe(path: Path) -> VideoInfo:
    """Read a video's stream facts; MediaError with the reason when it is not a usable video."""
    path = Path(path)
    if not path.exists():
        raise MediaError("file not found")
    if path.stat().st_size == 0:
        raise MediaError("empty file (0 bytes)")
    ffprobe = settings.FFPROBE_BINARY
    info = _probe_ffprobe(path, ffprobe) if ffprobe else _probe_pyav(path)
    limits = _limits()
    if info.width <= 0 or info.height <= 0:
        raise MediaError("video stream has no picture size")
    if info.width * info.height > limits["max_pixels"]:
        raise MediaError(f"picture too large ({info.width}×{info.height}; at most 8192×8192 pixels)")
    if info.duration_s > limits["max_duration_s"]:
        raise MediaError(
            f"too long ({info.duration_s:.0f} s; the limit is {limits['max_duration_s']:.0f} s, "
            "set VIDPREF_MAX_VIDEO_SECONDS to change it)"
        )
    return info


def _output_fps(info: VideoInfo) -> float:
    fps = info.fps if 1.0 <= info.fps <= _limits()["max_fps"] else 24.0
    return round(fps, 3)


def transcode(source: Path, target: Path, info: VideoInfo) -> VideoInfo:
    """Write a browser-safe MP4 of ``source`` to ``target``; return the output's facts."""
    ffmpeg = require_ffmpeg(settings.FFMPEG_BINARY)
    long_side = _limits()["max_long_side"]
    fps = _output_fps(info)
    # Scale so the long side fits and both sides are even (yuv420p needs that); ffmpeg applies the
    # rotation metadata itself (autorotate) before the filter, so iw/ih are the displayed size.
    scale = (
        f"scale=w='if(gte(iw,ih),min({long_side},iw),-2)':h='if(gte(iw,ih),-2,min({long_side},ih))',"
        "scale=trunc(iw/2)*2:trunc(ih/2)*2,setsar=1"
    )
    command = [
        ffmpeg,
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-format_whitelist",
        CONTAINER_WHITELIST,
        "-i",
        str(source),
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
        "-vf",
        scale,
        "-r",
        f"{fps}",
        "-fps_mode",
        "cfr",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "20",
        "-pix_fmt",
        "yuv420p",
        "-profile:v",
        "high",
        "-movflags",
        "+faststart",
        "-map_metadata",
        "-1",
        str(target),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not target.exists() or target.stat().st_size == 0:
        # The first complaint names the cause; later lines are its consequences ("Error marking filters…").
        message = (result.stderr.strip().splitlines() or ["ffmpeg produced no output"])[0]
        raise MediaError(f"could not be decoded; the file is damaged or truncated ({_ffmpeg_line(message, source)})")
    out = probe_output(target)
    if out.num_frames == 0:
        raise MediaError("could not be transcoded (no frames could be decoded)")
    if out.num_frames < 2:
        raise MediaError("a single frame: a still image, not a video")
    if info.duration_s > 0 and out.duration_s < _TRUNCATED_BELOW * info.duration_s:
        raise MediaError(
            f"truncated or damaged: only {out.duration_s:.1f} s of its {info.duration_s:.1f} s could be decoded"
        )
    return out


def probe_output(path: Path) -> VideoInfo:
    ffprobe = settings.FFPROBE_BINARY
    return _probe_ffprobe(path, ffprobe) if ffprobe else _probe_pyav(path)


def poster(video: Path, target: Path, info: VideoInfo) -> None:
    """A JPEG of the frame a little into the video (the first frame is often black)."""
    ffmpeg = require_ffmpeg(settings.FFMPEG_BINARY)
    at = min(0.5, info.duration_s / 2) if info.duration_s else 0
    command = [
        ffmpeg,
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-ss",
        f"{at:.3f}",
        "-i",
        str(video),
        "-frames:v",
        "1",
        "-q:v",
        "4",
        str(target),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not target.exists():
        raise MediaError(f"no poster frame ({(result.stderr.strip().splitlines() or ['ffmpeg failed'])[-1]})")
