"""A torch Dataset over labelled pairs: both videos decoded as frames, plus the three labels."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from alignment.data.frame_cache import FrameCache
from alignment.data.records import PairRecord
from alignment.data.video import FrameSpec, read_video_frames, resolve_video_path


class PairVideoDataset(Dataset):
    """Items: ``{"pair_id", "prompt", "video_a", "video_b", "labels"}``.

    ``video_a``/``video_b`` are uint8 ``(T, C, H, W)``; ``labels`` is int8 ``(3,)`` = (VQ, MQ, TA) with
    1 / 0 / −1 (``LABEL_MISSING`` where unjudged). Relative video paths are looked up under ``roots``
    in order (e.g. the snapshot folder, then the media root). Safe with DataLoader workers: items
    are decoded in whichever process asks for them.

    ``cache_videos`` keeps up to that many decoded videos per process (LRU): small clips that recur
    in many pairs (the toy world) are then decoded once per worker instead of once per pair.
    ``frame_cache`` (a folder) keeps every decoded video on disk for all workers, epochs and later
    runs (``alignment.data.frame_cache``); the in-memory LRU sits in front of it.

    ``reader`` (path → uint8 ``(T, C, H, W)``) replaces ``read_video_frames`` with ``spec``: a model's own
    frame sampling (VideoAlign checkpoints); the disk frame cache, keyed by ``spec``, is then not used.
    """

    def __init__(
        self,
        pairs: Sequence[PairRecord],
        spec: FrameSpec = FrameSpec(),
        *,
        roots: Sequence[str | Path] = (),
        decode_threads: int = 0,
        cache_videos: int = 0,
        frame_cache: str | Path | None = None,
        reader: Callable[[Path], torch.Tensor] | None = None,
    ):
        self.pairs = list(pairs)
        self.spec = spec
        self.roots = [Path(root) for root in roots]
        self.decode_threads = decode_threads
        self.cache_videos = cache_videos
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.reader = reader
        self.frame_cache = FrameCache(frame_cache) if frame_cache and reader is None else None

    def __len__(self) -> int:
        return len(self.pairs)

    def load_video(self, uri: str) -> torch.Tensor:
        if uri in self._cache:
            self._cache.move_to_end(uri)
            return self._cache[uri]
        path = resolve_video_path(uri, self.roots)
        if self.frame_cache is not None:
            frames = self.frame_cache.load(path, self.spec, self._decode)
        else:
            frames = self._decode(path)
        if self.cache_videos:
            self._cache[uri] = frames
            if len(self._cache) > self.cache_videos:
                self._cache.popitem(last=False)
        return frames

    def _decode(self, path: Path) -> torch.Tensor:
        if self.reader is not None:
            return self.reader(path)
        return read_video_frames(path, self.spec, threads=self.decode_threads)[0]

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        return {
            "pair_id": pair.pair_id,
            "prompt": pair.prompt,
            "video_a": self.load_video(pair.video_a),
            "video_b": self.load_video(pair.video_b),
            "labels": torch.tensor(pair.labels, dtype=torch.int8),
        }


def collate_pairs(items: list[dict]) -> dict:
    """Batch of pairs: videos stay lists (their sizes differ), labels stack to int8 ``(B, 3)``."""
    return {
        "pair_id": [item["pair_id"] for item in items],
        "prompt": [item["prompt"] for item in items],
        "video_a": [item["video_a"] for item in items],
        "video_b": [item["video_b"] for item in items],
        "labels": torch.stack([item["labels"] for item in items]),
    }
