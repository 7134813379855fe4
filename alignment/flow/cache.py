"""Precomputed text embeddings and video latents, so that training runs neither the text encoder nor the VAE.

``cache_dir/``
  ``text-<fingerprint>/``     prompt embeddings (L_i, D), trimmed to each prompt's tokens
  ``latents-<fingerprint>/``  video latents (C, t, h, w), the mean of the VAE's posterior
each holding ``shard-<id>.safetensors`` files and ``index.json`` (key → shard). Keys are the sha256 of
the prompt's text and of the video file's bytes, so a video is encoded once whatever URI names it. The
fingerprint covers what determines the tensors (the encoder's or codec's config, its weight files' sizes
and modification times, the sequence length, the clip size), so a different model or size gets its own folder
and a rerun with the same ones reuses everything. New entries are written as new shards (temporary name, then
rename) and the index is replaced atomically, so an interrupted run loses at most its unfinished shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from alignment.data.video import FrameSpec, read_video_frames, resolve_video_path
from alignment.flow.model import FlowPolicy, pixels_from_uint8

INDEX_FILE = "index.json"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _folder_identity(folder: Path) -> dict:
    """Config files' text and weight files' sizes and modification times: cheap (no hashing gigabytes), and
    it changes whenever a weight file is written again, even with the same shapes."""
    identity: dict[str, Any] = {"path": str(folder.resolve())}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix == ".json":
                identity[path.name] = path.read_text()
            elif path.is_file():
                stat = path.stat()
                identity[path.name] = [stat.st_size, stat.st_mtime_ns]
    return identity


class TensorStore:
    """Tensors by key in safetensors shards under ``folder``; reads are memory-mapped, opened once per shard."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        index_path = self.folder / INDEX_FILE
        self.index: dict[str, str] = json.loads(index_path.read_text()) if index_path.is_file() else {}
        self._handles: dict[str, Any] = {}  # safetensors handles

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def get(self, key: str) -> torch.Tensor:
        shard = self.index.get(key)
        if shard is None:
            raise KeyError(f"{key}: not in the cache at {self.folder}; run the cache step first")
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.folder / shard), framework="pt")
        return self._handles[shard].get_tensor(key)

    def put(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write ``tensors`` as one new shard and add them to the index."""
        if not tensors:
            return
        name = f"shard-{uuid.uuid4().hex[:16]}.safetensors"
        temp = self.folder / f".{name}.tmp"
        save_file({key: value.contiguous().cpu() for key, value in tensors.items()}, str(temp))
        os.replace(temp, self.folder / name)
        fresh = json.loads((self.folder / INDEX_FILE).read_text()) if (self.folder / INDEX_FILE).is_file() else {}
        fresh.update(self.index)  # another process may have added entries meanwhile
        fresh.update(dict.fromkeys(tensors, name))
        index_temp = self.folder / f".{INDEX_FILE}.{uuid.uuid4().hex}.tmp"
        index_temp.write_text(json.dumps(fresh))
        os.replace(index_temp, self.folder / INDEX_FILE)
        self.index = fresh

    def __getstate__(self):  # DataLoader workers reopen the shards themselves
        return {**self.__dict__, "_handles": {}}


@dataclass
class FlowCache:
    """The text and latent stores of one policy and clip size. Text is keyed by ``sha256_text(prompt)``;
    ``video_keys`` maps a video URI to its key (the sha256 of the file)."""

    text: TensorStore
    latents: TensorStore
    video_keys: dict[str, str]
    encoded_prompts: int = 0
    encoded_videos: int = 0


def open_cache(
    policy: FlowPolicy, cache_dir: str | Path, *, num_frames: int, height: int, width: int
) -> tuple[TensorStore, TensorStore]:
    """The (text, latents) stores of ``policy`` at this clip size under ``cache_dir``."""
    cache_dir = Path(cache_dir)
    text_identity = {
        "encoder": _folder_identity(policy.folder / "text_encoder"),
        "tokenizer": _folder_identity(policy.folder / "tokenizer"),
        "max_sequence_length": policy.max_sequence_length,
    }
    codec_source = policy.folder / ("vae" if (policy.folder / "vae").is_dir() else "codec")
    latent_identity = {
        "codec": _folder_identity(codec_source),
        "num_frames": num_frames,
        "height": height,
        "width": width,
    }
    return (
        TensorStore(cache_dir / f"text-{_fingerprint(text_identity)}"),
        TensorStore(cache_dir / f"latents-{_fingerprint(latent_identity)}"),
    )


def build_cache(
    policy: FlowPolicy,
    prompts: Sequence[str],
    videos: Sequence[str],
    *,
    cache_dir: str | Path,
    roots: Sequence[str | Path] = (),
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    shard_size: int = 256,
    progress: bool = True,
) -> FlowCache:
    """Encode every prompt and video not cached yet (text encoder and codec load only if something is
    missing), and return the stores. ``videos`` are URIs resolved against ``roots``; their frames are
    sampled evenly over the clip and resized to ``height`` × ``width`` (defaults: the policy's)."""
    num_frames, height, width = num_frames or policy.num_frames, height or policy.height, width or policy.width
    text_store, latent_store = open_cache(policy, cache_dir, num_frames=num_frames, height=height, width=width)
    cache = FlowCache(text=text_store, latents=latent_store, video_keys={})

    missing_prompts = sorted({p for p in prompts if sha256_text(p) not in text_store})
    bar = tqdm(total=len(missing_prompts), desc="cache text", disable=not progress or not missing_prompts)
    pending: dict[str, torch.Tensor] = {}
    for start in range(0, len(missing_prompts), max(1, batch_size * 8)):
        prompt_chunk = missing_prompts[start : start + max(1, batch_size * 8)]
        for prompt, embed in zip(prompt_chunk, policy.encode_prompts(prompt_chunk)):
            pending[sha256_text(prompt)] = embed
        bar.update(len(prompt_chunk))
        if len(pending) >= shard_size:
            text_store.put(pending)
            pending = {}
    text_store.put(pending)
    bar.close()
    cache.encoded_prompts = len(missing_prompts)

    unique_videos = sorted(set(videos))
    paths = {}
    for uri in tqdm(unique_videos, desc="hash videos", disable=not progress or len(unique_videos) < 64, leave=False):
        paths[uri] = resolve_video_path(uri, roots)
        cache.video_keys[uri] = sha256_of_file(paths[uri])
    to_encode: dict[str, str] = {}  # key → uri, one per distinct file
    for uri in unique_videos:
        if cache.video_keys[uri] not in latent_store:
            to_encode.setdefault(cache.video_keys[uri], uri)
    spec = FrameSpec(fps=None, max_frames=num_frames, frame_multiple=1, size=(height, width))
    bar = tqdm(total=len(to_encode), desc="cache latents", disable=not progress or not to_encode)
    items = list(to_encode.items())
    pending = {}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        pixels = []
        for _, uri in chunk:
            frames, _ = read_video_frames(paths[uri], spec)  # (T, C, H, W) uint8
            if frames.shape[0] != num_frames:
                raise ValueError(
                    f"{uri}: has {frames.shape[0]} frames, the policy is trained on {num_frames}; "
                    f"drop the video or lower num_frames in the config"
                )
            pixels.append(pixels_from_uint8(frames))
        latents = policy.encode_videos(torch.stack(pixels))  # (B, C, t, h, w)
        for (key, _), latent in zip(chunk, latents):
            pending[key] = latent.cpu()
        bar.update(len(chunk))
        if len(pending) >= shard_size:
            latent_store.put(pending)
            pending = {}
    latent_store.put(pending)
    bar.close()
    cache.encoded_videos = len(to_encode)
    return cache
