"""One labelled pair of videos, whatever file it came from (snapshot, VideoAlign CSV, RewardBench CSV)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from alignment.labels import LABEL_A_BETTER, LABEL_B_BETTER, LABEL_MISSING, LABEL_TIE, SCORE_KEYS


@dataclass
class PairRecord:
    pair_id: int
    prompt: str
    video_a: str  # a path (absolute, or relative to a root the dataset is given) or file:// URI
    video_b: str
    vq: int = LABEL_MISSING  # 1 = A better, 0 = tie, -1 = B better, LABEL_MISSING = not judged
    mq: int = LABEL_MISSING
    ta: int = LABEL_MISSING
    split: str = "train"
    generator_a: str | None = None
    generator_b: str | None = None
    fps_a: float | None = None
    num_frames_a: int | None = None
    fps_b: float | None = None
    num_frames_b: int | None = None
    n_judgments: int | None = None
    agreement_vq: float | None = None
    agreement_mq: float | None = None
    agreement_ta: float | None = None
    overall: int = LABEL_MISSING  # RewardBench's "Overall" label; snapshots have none

    @property
    def labels(self) -> tuple[int, int, int]:
        return (self.vq, self.mq, self.ta)

    def as_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row) -> PairRecord:
        """Build from a mapping; unknown keys are ignored, missing labels become ``LABEL_MISSING``."""
        if isinstance(row, PairRecord):
            return row
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in dict(row).items() if key in known}
        for required in ("pair_id", "prompt", "video_a", "video_b"):
            if values.get(required) is None:
                raise ValueError(f"pair row is missing {required!r}: {dict(row)!r}")
        for label_key in SCORE_KEYS:
            if values.get(label_key) is None:
                values[label_key] = LABEL_MISSING
            else:
                values[label_key] = int(values[label_key])
                if values[label_key] not in (LABEL_A_BETTER, LABEL_TIE, LABEL_B_BETTER, LABEL_MISSING):
                    raise ValueError(
                        f"pair {values['pair_id']}: {label_key}={values[label_key]} is not 1 (A), 0 (tie) or -1 (B)"
                    )
        if values.get("split") is None:
            values.pop("split", None)
        return cls(**values)
