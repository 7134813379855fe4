"""Decoded frames on disk, shared by loader workers, epochs and training runs.

Decoding is most of a VideoReward loader's time, and the same videos are decoded again every epoch
and in every later training run: the next snapshot holds most of this one's videos. A ``FrameCache``
stores each video's sampled frames at one ``FrameSpec`` once, as an uncompressed ``.npy`` named by
the sha256 of the video's bytes and of the spec, so the same video under another path (another
snapshot folder, the media root) is a hit, and a changed spec or a changed file is a miss.

- Entries are written to a temporary file and renamed, so concurrent loader workers and killed
  processes never leave a partial entry; an entry that cannot be read is decoded again and replaced.
- A cache that cannot be written (a full disk) costs the speed-up, never the item.
- Size: ``T × 3 × H × W`` bytes per video — about 6 MB for 10 frames at 448² (2 fps, 5 s), 9 kB for
  a toy clip. ``prune(max_bytes)`` deletes the least recently used entries (a hit refreshes an entry's
  modification time) until the cache fits; reward training prunes before and after each run when
  ``frame_cache_max_gb`` is set. The folder (or any part of it) may also be deleted at any time.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from alignment.data.snapshot import sha256_file
from alignment.data.video import FrameSpec

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when what a frame holds changes (colour conversion, resizing, sampling)


class FrameCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(
                f"frame cache {self.folder}: cannot create it ({error}); choose a writable folder "
                "or leave frame_cache_dir empty"
            ) from error
        self._digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) → sha256 of the bytes
        self.hits = 0
        self.misses = 0

    def entry_path(self, video: str | Path, spec: FrameSpec) -> Path:
        """Where ``video``'s frames at ``spec`` are (or will be) stored."""
        spec_text = json.dumps({"version": FORMAT_VERSION, **asdict(spec)}, sort_keys=True)
        key = hashlib.sha256(f"{self._content_digest(Path(video))}\n{spec_text}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, video: str | Path, spec: FrameSpec, decode: Callable[[Path], torch.Tensor]) -> torch.Tensor:
        """``video``'s frames at ``spec``: from the cache, else ``decode(video)``, stored for next time."""
        entry = self.entry_path(video, spec)
        if entry.is_file():
            try:
                frames = np.load(entry, allow_pickle=False)
                self.hits += 1
                self._touch(entry)
                return torch.from_numpy(frames)
            except (OSError, ValueError, EOFError) as error:  # damaged on disk: decode again and replace it
                log.warning(
                    "frame cache entry %s for %s is unreadable (%s); decoding the video again", entry, video, error
                )
        self.misses += 1
        frames = decode(Path(video))
        self._store(entry, frames)
        return frames

    def prune(self, max_bytes: int) -> tuple[int, int]:
        """Delete the least recently used entries (oldest modification time first) until the entries take at
        most ``max_bytes``; returns (entries deleted, bytes freed). Safe beside readers and writers: a reader
        whose entry vanishes decodes the video again, and temporary files are left to their writers."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        deleted = freed = 0
        for _, size, path in entries:
            if total - freed <= max_bytes:
                break
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            deleted, freed = deleted + 1, freed + size
        return deleted, freed

    def size_bytes(self) -> int:
        """What the entries take on disk."""
        return sum(size for _, size, _ in self._entries())

    def _entries(self):
        """(modification time ns, size, path) of every finished entry; temporary files (dot names) are not."""
        for sub in self.folder.iterdir():
            if not sub.is_dir():
                continue
            with os.scandir(sub) as listing:
                for item in listing:
                    if item.name.endswith(".npy") and not item.name.startswith("."):
                        try:
                            stat = item.stat()
                        except FileNotFoundError:  # pruned or replaced meanwhile
                            continue
                        yield stat.st_mtime_ns, stat.st_size, item.path

    @staticmethod
    def _touch(entry: Path) -> None:
        try:
            os.utime(entry)  # most recently used: pruned last
        except OSError:  # a read-only cache, or pruned by another process meanwhile
            pass

    def _store(self, entry: Path, frames: torch.Tensor) -> None:
        buffer = io.BytesIO()
        np.save(buffer, frames.numpy(), allow_pickle=False)
        temporary = None
        try:
            entry.parent.mkdir(exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".", suffix=".npy.tmp")
            with os.fdopen(handle, "wb") as file:
                file.write(buffer.getbuffer())
            os.replace(temporary, entry)
        except OSError as error:
            log.warning(
                "frame cache %s: cannot store %s (%s); training goes on without it", self.folder, entry.name, error
            )
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)

    def _content_digest(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        digest = self._digests.get(key)
        if digest is None:
            digest = self._digests[key] = sha256_file(path)
        return digest
