"""Rendering toy clips, with defects of controllable strength per judged dimension.

A clip is a ``uint8`` array ``(T, H, W, 3)``: a vertical grey-blue gradient background and one
flat-coloured shape that travels in a straight line at constant speed. Defects (each a strength in
[0, 1], 0 = absent) spoil exactly one dimension each:

======== =============== ==================================================================
dim      defect          what strength 1 means
======== =============== ==================================================================
VQ       noise           i.i.d. gaussian noise, σ = 32 grey levels
VQ       blur            gaussian blur, σ = 0.06 × short side (≈ 1.9 px at 32 px)
VQ       banding         each channel quantised to 5 levels (log-interpolated from 256)
MQ       jitter          per-frame position noise, σ = 0.03 × short side
MQ       teleport        from a random frame on, the shape jumps by 0.25 × short side
MQ       freeze          a frame is repeated for T − 3 frames, then the clip catches up
TA       wrong_colour    the colour is blended all the way to another palette colour
TA       wrong_shape     the shape's implicit function is blended into another shape's
TA       wrong_direction the travel direction is rotated by strength × 180°
======== =============== ==================================================================

Every random quantity (path offset, which wrong colour, noise field, …) is drawn from the seed in a
fixed order whatever the strengths, so two renders with the same seed differ only by the defects
whose strengths differ (common random numbers: strength sweeps are smooth, not reshuffled).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from alignment.labels import DIMENSIONS
from alignment.toyworld.prompts import COLOURS, SHAPES, ToyPrompt

DEFECTS_BY_DIMENSION: dict[str, tuple[str, ...]] = {
    "vq": ("noise", "blur", "banding"),
    "mq": ("jitter", "teleport", "freeze"),
    "ta": ("wrong_colour", "wrong_shape", "wrong_direction"),
}
DEFECT_DIMENSION: dict[str, str] = {kind: dim for dim, kinds in DEFECTS_BY_DIMENSION.items() for kind in kinds}

# Background: a vertical linear gradient, top row to bottom row (RGB grey levels).
BACKGROUND_TOP = np.array([60.0, 60.0, 72.0])
BACKGROUND_BOTTOM = np.array([116.0, 116.0, 132.0])
# Half the shape's bounding box, as a fraction of the short side.
SHAPE_HALF_EXTENT = 0.18
# Largest sideways offset of the path from the frame centre, as a fraction of the short side.
PATH_OFFSET = 0.05

NOISE_SIGMA_MAX = 32.0
BLUR_SIGMA_MAX = 0.06  # × short side
BANDING_LEVELS_MIN = 5
JITTER_SIGMA_MAX = 0.03  # × short side
TELEPORT_JUMP_MAX = 0.25  # × short side
SUPERSAMPLING = 4
# A wrong colour drifts to a neighbour on the hue circle, so the blend stays saturated instead of
# passing through the grey of the background.
HUE_NEIGHBOURS: dict[str, tuple[str, str]] = {
    "red": ("magenta", "yellow"),
    "yellow": ("red", "green"),
    "green": ("yellow", "cyan"),
    "cyan": ("green", "blue"),
    "blue": ("cyan", "magenta"),
    "magenta": ("blue", "red"),
}


@dataclass(frozen=True)
class DefectSpec:
    """Strength in [0, 1] of each defect; the default is a clean clip."""

    noise: float = 0.0
    blur: float = 0.0
    banding: float = 0.0
    jitter: float = 0.0
    teleport: float = 0.0
    freeze: float = 0.0
    wrong_colour: float = 0.0
    wrong_shape: float = 0.0
    wrong_direction: float = 0.0

    def __post_init__(self) -> None:
        for kind, strength in asdict(self).items():
            if not 0.0 <= strength <= 1.0:
                raise ValueError(f"defect {kind} has strength {strength}; strengths must lie in [0, 1]")

    @classmethod
    def random(cls, rng: np.random.Generator, *, p_clean: float = 0.25) -> DefectSpec:
        """Per dimension, independently: clean with probability ``p_clean``, else one of its three
        defects chosen uniformly with a strength drawn uniformly from [0, 1]."""
        strengths: dict[str, float] = {}
        for dim in DIMENSIONS:
            clean, which, strength = rng.random(), rng.integers(3), rng.random()
            if clean >= p_clean:
                strengths[DEFECTS_BY_DIMENSION[dim][which]] = float(strength)
        return cls(**strengths)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def severity(self, dimension: str) -> float:
        """The strongest defect of one dimension ("vq", "mq" or "ta")."""
        return max(getattr(self, kind) for kind in DEFECTS_BY_DIMENSION[dimension])

    def dominant_in(self, dimension: str) -> str | None:
        """The strongest defect of one dimension, or None when that dimension is clean."""
        kind = max(DEFECTS_BY_DIMENSION[dimension], key=lambda k: getattr(self, k))
        return kind if getattr(self, kind) > 0 else None

    def dominant(self) -> str | None:
        """The strongest defect's name, or None for a clean clip."""
        kind, strength = max(asdict(self).items(), key=lambda item: item[1])
        return kind if strength > 0 else None

    def generator_name(self) -> str:
        """A stand-in generator name for the web app: ``toy-clean`` or ``toy-<dominant defect>``."""
        return f"toy-{(self.dominant() or 'clean').replace('_', '-')}"


def frame_shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` as (height, width); an int means a square frame."""
    height, width = (size, size) if isinstance(size, int) else size
    if min(height, width) < 12:
        raise ValueError(f"frame size {height}x{width} is too small; the toy world needs at least 12 px a side")
    return int(height), int(width)


def render_clip(
    prompt: ToyPrompt | str,
    defects: DefectSpec | None = None,
    seed: int = 0,
    *,
    size: int | tuple[int, int] = 32,
    frames: int = 9,
    anti_alias: bool = True,
) -> np.ndarray:
    """Render ``prompt`` as a ``uint8`` clip ``(frames, H, W, 3)``, deterministic given ``seed``.

    ``anti_alias`` renders the shape's edges with 4×4 supersampled coverage; otherwise each pixel is
    inside or outside by its centre (crisp, jagged edges).
    """
    prompt = ToyPrompt.parse(prompt) if isinstance(prompt, str) else prompt
    defects = defects or DefectSpec()
    height, width = frame_shape(size)
    if frames < 4:
        raise ValueError(f"frames={frames}: a toy clip needs at least 4 frames to show motion")
    short_side = min(height, width)
    rng = np.random.default_rng(seed)

    # Draw every random quantity, in a fixed order, whatever the strengths.
    path_offset = rng.uniform(-PATH_OFFSET, PATH_OFFSET) * short_side
    rotation_sign = rng.choice((-1.0, 1.0))
    wrong_colour = rng.choice(HUE_NEIGHBOURS[prompt.colour])
    wrong_shape = rng.choice([name for name in SHAPES if name != prompt.shape])
    jitter_unit = rng.standard_normal((frames, 2))
    teleport_frame = int(rng.integers(2, frames - 1))
    teleport_angle = rng.uniform(0.0, 2.0 * math.pi)
    freeze_start_unit = rng.random()
    noise_unit = rng.standard_normal((frames, height, width, 3), dtype=np.float32)

    centres = _path(prompt, defects, frames, height, width, path_offset, rotation_sign)
    centres += defects.jitter * JITTER_SIGMA_MAX * short_side * jitter_unit
    jump = defects.teleport * TELEPORT_JUMP_MAX * short_side
    centres[teleport_frame:] += jump * np.array([math.cos(teleport_angle), math.sin(teleport_angle)])
    half_extent = SHAPE_HALF_EXTENT * short_side
    centres[:, 0] = np.clip(centres[:, 0], half_extent + 0.5, width - half_extent - 0.5)
    centres[:, 1] = np.clip(centres[:, 1], half_extent + 0.5, height - half_extent - 0.5)

    coverage = _coverage(
        prompt.shape, wrong_shape, defects.wrong_shape, centres, half_extent, height, width, anti_alias
    )
    colour = (1 - defects.wrong_colour) * np.array(prompt.rgb, np.float32) + defects.wrong_colour * np.array(
        COLOURS[wrong_colour], np.float32
    )
    background = background_gradient(height, width)  # (H, W, 3)
    clip = background * (1 - coverage[..., None]) + colour * coverage[..., None]  # (T, H, W, 3)

    if defects.blur > 0:
        clip = gaussian_blur(clip, defects.blur * BLUR_SIGMA_MAX * short_side)
    clip = clip + defects.noise * NOISE_SIGMA_MAX * noise_unit
    if defects.banding > 0:
        levels = round(256 ** (1 - defects.banding) * BANDING_LEVELS_MIN**defects.banding)
        step = 255.0 / (levels - 1)
        clip = np.round(clip / step) * step
    clip = np.clip(np.rint(clip), 0, 255).astype(np.uint8)

    held = round(defects.freeze * (frames - 3))
    if held:
        start = int(freeze_start_unit * (frames - 1 - held))  # the last frame is never held
        clip[start + 1 : start + held + 1] = clip[start]
    return clip


def background_gradient(height: int, width: int) -> np.ndarray:
    """The clean background, float32 ``(H, W, 3)``: linear from the top colour to the bottom one."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    gradient = BACKGROUND_TOP + rows * (BACKGROUND_BOTTOM - BACKGROUND_TOP)  # (H, 3)
    return np.broadcast_to(gradient[:, None, :], (height, width, 3)).astype(np.float32)


def gaussian_blur(clip: np.ndarray, sigma: float) -> np.ndarray:
    """Blur each frame of ``(T, H, W, C)`` spatially (separable gaussian, edges replicated)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(clip, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    height, width = clip.shape[1:3]
    rows = sum(tap * padded[:, i : i + height] for i, tap in enumerate(taps))
    return sum(tap * rows[:, :, i : i + width] for i, tap in enumerate(taps)).astype(np.float32)


def _path(
    prompt: ToyPrompt,
    defects: DefectSpec,
    frames: int,
    height: int,
    width: int,
    path_offset: float,
    rotation_sign: float,
) -> np.ndarray:
    """Centres ``(T, 2)`` (x, y) in pixels of a straight, constant-speed path through the middle."""
    angle = rotation_sign * defects.wrong_direction * math.pi
    dx, dy = prompt.direction_vector
    heading = np.array([dx * math.cos(angle) - dy * math.sin(angle), dx * math.sin(angle) + dy * math.cos(angle)])
    sideways = np.array([-heading[1], heading[0]])
    progress = np.linspace(-0.5, 0.5, frames)[:, None]  # (T, 1)
    centre = np.array([width / 2, height / 2])
    return centre + path_offset * sideways + progress * prompt.travel * min(height, width) * heading


def _implicit(shape: str, dx: np.ndarray, dy: np.ndarray, half_extent: float) -> np.ndarray:
    """≤ 0 inside the shape centred at the origin and filling the box [-r, r]²; roughly a distance."""
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - half_extent
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - half_extent
    # An upright isosceles triangle: apex at the top of the box, base along its bottom.
    return np.maximum(dy - half_extent, (2 * np.abs(dx) - dy - half_extent) / math.sqrt(5.0))


def _coverage(
    shape: str,
    wrong_shape: str,
    morph: float,
    centres: np.ndarray,
    half_extent: float,
    height: int,
    width: int,
    anti_alias: bool,
) -> np.ndarray:
    """Fraction of each pixel inside the (possibly morphed) shape, float32 ``(T, H, W)``."""
    samples = SUPERSAMPLING if anti_alias else 1
    offsets = (np.arange(samples, dtype=np.float32) + 0.5) / samples
    xs = (np.arange(width, dtype=np.float32)[:, None] + offsets).reshape(-1)  # (W·s,)
    ys = (np.arange(height, dtype=np.float32)[:, None] + offsets).reshape(-1)  # (H·s,)
    dx = xs[None, None, :] - centres[:, 0, None, None].astype(np.float32)  # (T, 1, W·s)
    dy = ys[None, :, None] - centres[:, 1, None, None].astype(np.float32)  # (T, H·s, 1)
    field = _implicit(shape, dx, dy, half_extent)
    if morph > 0:
        field = (1 - morph) * field + morph * _implicit(wrong_shape, dx, dy, half_extent)
    inside = (field <= 0).astype(np.float32)  # (T, H·s, W·s)
    return inside.reshape(len(centres), height, samples, width, samples).mean(axis=(2, 4))
