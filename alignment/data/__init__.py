"""Training data without Django: snapshots (DESIGN §5), public CSV formats, video decoding, Dataset."""

from alignment.data.csv_formats import read_rewardbench_csv, read_videoalign_csv
from alignment.data.dataset import PairVideoDataset, collate_pairs
from alignment.data.records import DIMENSIONS, PairRecord
from alignment.data.snapshot import (
    Snapshot,
    SnapshotError,
    read_snapshot,
    split_for_prompt,
    write_snapshot,
    write_videoalign_csv,
)
from alignment.data.video import (
    FrameSpec,
    VideoDecodeError,
    fit_frame_size,
    read_video_frames,
    resolve_video_path,
    sample_frame_indices,
)

__all__ = [
    "DIMENSIONS", "FrameSpec", "PairRecord", "PairVideoDataset", "Snapshot", "SnapshotError", "VideoDecodeError",
    "collate_pairs", "fit_frame_size", "read_rewardbench_csv", "read_snapshot", "read_video_frames",
    "read_videoalign_csv", "resolve_video_path", "sample_frame_indices", "split_for_prompt", "write_snapshot",
    "write_videoalign_csv",
]
