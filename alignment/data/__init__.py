"""Training data without Django: snapshots (docs/architecture.md §5), public CSV formats, video decoding, Dataset.

Names are loaded on first use, so that ``alignment.data.snapshot`` (pyarrow only) can be imported by
a process without torch — the web app's snapshot export — while ``from alignment.data import
PairVideoDataset`` still works for training code.
"""

from importlib import import_module

_EXPORTS = {
    "read_rewardbench_csv": "csv_formats",
    "read_videoalign_csv": "csv_formats",
    "PairVideoDataset": "dataset",
    "collate_pairs": "dataset",
    "DIMENSIONS": "records",
    "PairRecord": "records",
    "Snapshot": "snapshot",
    "SnapshotError": "snapshot",
    "SnapshotWriter": "snapshot",
    "read_snapshot": "snapshot",
    "split_for_prompt": "snapshot",
    "write_snapshot": "snapshot",
    "FrameSpec": "video",
    "VideoDecodeError": "video",
    "fit_frame_size": "video",
    "read_video_frames": "video",
    "resolve_video_path": "video",
    "sample_frame_indices": "video",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alignment.data' has no attribute {name!r}")
    value = getattr(import_module(f"alignment.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
