"""The toy world's prompt grammar: ``a <colour> <shape> moving <direction> <speed>``.

6 colours × 3 shapes × 4 directions × 2 speeds = 144 distinct prompts, for example
``"a red square moving left quickly"``. Everything the renderer draws and the oracle checks is named
here: the palette (RGB, chosen from multiples of 51 so that coarse colour quantisation leaves it
nearly unchanged), the unit direction vectors (image coordinates: x to the right, y downwards) and
the travel of each speed as a fraction of the frame's short side over the whole clip.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 51, 51),
    "green": (51, 204, 51),
    "blue": (51, 51, 255),
    "yellow": (255, 204, 0),
    "magenta": (255, 51, 255),
    "cyan": (0, 204, 204),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
# Distance travelled from the first to the last frame, as a fraction of the frame's short side.
SPEEDS: dict[str, float] = {"slowly": 0.24, "quickly": 0.44}

_PROMPT_RE = re.compile(r"^an? (?P<colour>\w+) (?P<shape>\w+) moving (?P<direction>\w+) (?P<speed>\w+)$")


@dataclass(frozen=True, order=True)
class ToyPrompt:
    """One sentence of the grammar; ``str(prompt)`` and ``ToyPrompt.parse`` are inverses."""

    colour: str
    shape: str
    direction: str
    speed: str

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("colour", self.colour, tuple(COLOURS)),
            ("shape", self.shape, SHAPES),
            ("direction", self.direction, tuple(DIRECTIONS)),
            ("speed", self.speed, tuple(SPEEDS)),
        ):
            if value not in allowed:
                raise ValueError(f"{field} {value!r} is not in the toy grammar; choose one of {', '.join(allowed)}")

    @classmethod
    def parse(cls, text: str) -> ToyPrompt:
        """Read ``"a red square moving left quickly"`` (case and surrounding spaces ignored)."""
        match = _PROMPT_RE.match(" ".join(text.lower().split()))
        if match is None:
            raise ValueError(
                f"{text!r} is not a toy-world prompt; expected 'a <colour> <shape> moving <direction> <speed>', "
                "e.g. 'a red square moving left quickly'"
            )
        return cls(**match.groupdict())

    def __str__(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.direction} {self.speed}"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    @property
    def direction_vector(self) -> tuple[float, float]:
        """Unit (dx, dy) in image coordinates (y grows downwards)."""
        return DIRECTIONS[self.direction]

    @property
    def travel(self) -> float:
        """First-to-last-frame distance as a fraction of the frame's short side."""
        return SPEEDS[self.speed]


def all_prompts() -> list[ToyPrompt]:
    """Every prompt of the grammar, in a fixed order (colour, then shape, direction, speed)."""
    return [ToyPrompt(*combo) for combo in itertools.product(COLOURS, SHAPES, DIRECTIONS, SPEEDS)]
