import logging
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import alignment.data.dataset as dataset_module
from alignment.data import FrameSpec, PairRecord, PairVideoDataset, collate_pairs, read_video_frames
from alignment.data.frame_cache import FrameCache
from alignment.toyworld import write_mp4

SPEC = FrameSpec(fps=2.0, size=(16, 16))


def ramp_video(path, num_frames=20, offset=0):
    frames = np.zeros((num_frames, 24, 32, 3), np.uint8)
    for index in range(num_frames):
        frames[index] = offset + 8 * index
    return write_mp4(frames, path, 8, min_side=1)


@pytest.fixture
def decodes(monkeypatch):
    """Counts the dataset's video decodes (the cache must make the second read free)."""
    calls = []

    def counting(path, spec, **kwargs):
        calls.append((str(path), spec))
        return read_video_frames(path, spec, **kwargs)

    monkeypatch.setattr(dataset_module, "read_video_frames", counting)
    return calls


def pairs_of(*paths):
    return [
        PairRecord(pair_id=index, prompt="p", video_a=str(path), video_b=str(path)) for index, path in enumerate(paths)
    ]


def test_a_cached_video_is_not_decoded_again_by_another_dataset_or_under_another_path(tmp_path, decodes):
    video = ramp_video(tmp_path / "a.mp4")
    expected = read_video_frames(video, SPEC)[0]
    first = PairVideoDataset(pairs_of(video), SPEC, frame_cache=tmp_path / "cache")
    assert torch.equal(first.load_video(str(video)), expected) and len(decodes) == 1

    # A new dataset (another epoch's worker, the next training run) and a copy in another snapshot folder.
    copy = tmp_path / "snapshot-2" / "videos" / "12.mp4"
    copy.parent.mkdir(parents=True)
    shutil.copy(video, copy)
    later = PairVideoDataset(pairs_of(video, copy), SPEC, frame_cache=tmp_path / "cache")
    assert torch.equal(later.load_video(str(video)), expected)
    assert torch.equal(later.load_video(str(copy)), expected)
    assert len(decodes) == 1 and later.frame_cache.hits == 2
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1


def test_another_spec_or_a_changed_file_is_decoded_afresh(tmp_path, decodes):
    video = ramp_video(tmp_path / "a.mp4")
    dataset = PairVideoDataset(pairs_of(video), SPEC, frame_cache=tmp_path / "cache")
    dataset.load_video(str(video))
    other_spec = FrameSpec(fps=4.0, size=(16, 16))
    more = PairVideoDataset(pairs_of(video), other_spec, frame_cache=tmp_path / "cache").load_video(str(video))
    assert torch.equal(more, read_video_frames(video, other_spec)[0]) and len(decodes) == 2

    ramp_video(video, offset=100)  # same path, new content
    changed = PairVideoDataset(pairs_of(video), SPEC, frame_cache=tmp_path / "cache").load_video(str(video))
    assert torch.equal(changed, read_video_frames(video, SPEC)[0]) and len(decodes) == 3
    assert changed.float().mean() > 100


def test_an_unreadable_entry_is_decoded_again_and_replaced(tmp_path, decodes, caplog):
    video = ramp_video(tmp_path / "a.mp4")
    cache = FrameCache(tmp_path / "cache")
    expected = read_video_frames(video, SPEC)[0]
    PairVideoDataset(pairs_of(video), SPEC, frame_cache=cache.folder).load_video(str(video))
    entry = cache.entry_path(video, SPEC)
    entry.write_bytes(b"\x93NUMPY damaged")
    with caplog.at_level(logging.WARNING, logger="alignment.data.frame_cache"):
        frames = PairVideoDataset(pairs_of(video), SPEC, frame_cache=cache.folder).load_video(str(video))
    assert torch.equal(frames, expected) and len(decodes) == 2
    assert "unreadable" in caplog.text and str(video) in caplog.text
    assert np.array_equal(np.load(entry), expected.numpy())  # replaced by a good entry


def test_a_cache_that_cannot_store_still_gives_the_frames(tmp_path, monkeypatch, caplog):
    video = ramp_video(tmp_path / "a.mp4")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", disk_full)
    dataset = PairVideoDataset(pairs_of(video), SPEC, frame_cache=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="alignment.data.frame_cache"):
        frames = dataset.load_video(str(video))
    assert torch.equal(frames, read_video_frames(video, SPEC)[0])
    assert "No space left" in caplog.text and not list((tmp_path / "cache").rglob("*.npy*"))


def test_a_cache_folder_that_cannot_be_made_names_itself(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match=r"frame cache .*file/cache: cannot create it.*frame_cache_dir"):
        PairVideoDataset([], SPEC, frame_cache=tmp_path / "file" / "cache")


def test_loader_workers_fill_one_cache_and_leave_no_temporary_files(tmp_path):
    videos = [ramp_video(tmp_path / f"{index}.mp4", offset=index) for index in range(4)]
    pairs = [
        PairRecord(pair_id=i, prompt="p", video_a=str(videos[i % 4]), video_b=str(videos[(i + 1) % 4]))
        for i in range(8)
    ]
    dataset = PairVideoDataset(pairs, SPEC, frame_cache=tmp_path / "cache")
    cold = list(DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_pairs))
    entries = sorted((tmp_path / "cache").rglob("*"))
    assert len([e for e in entries if e.suffix == ".npy"]) == 4 and not [e for e in entries if ".tmp" in e.name]
    warm = list(DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_pairs))
    for before, after in zip(cold, warm):
        assert all(
            torch.equal(a, b)
            for a, b in zip(before["video_a"] + before["video_b"], after["video_a"] + after["video_b"])
        )


def test_prune_deletes_the_least_recently_used_videos_first_and_a_pruned_video_is_decoded_again(tmp_path, decodes):
    videos = [ramp_video(tmp_path / f"{index}.mp4", offset=10 * index) for index in range(3)]
    cache = FrameCache(tmp_path / "cache")
    dataset = PairVideoDataset(pairs_of(*videos), SPEC, frame_cache=cache.folder)
    for age, video in zip((300, 200, 100), videos):  # stored oldest first: 0, then 1, then 2
        dataset.load_video(str(video))
        entry = cache.entry_path(video, SPEC)
        os.utime(entry, ns=(entry.stat().st_mtime_ns - age * 10**9,) * 2)
    PairVideoDataset(pairs_of(*videos), SPEC, frame_cache=cache.folder).load_video(str(videos[0]))  # a hit: now newest
    entry_bytes = cache.entry_path(videos[0], SPEC).stat().st_size
    assert cache.size_bytes() == 3 * entry_bytes and len(decodes) == 3

    assert cache.prune(2 * entry_bytes) == (1, entry_bytes)  # video 1 was used least recently
    assert not cache.entry_path(videos[1], SPEC).exists()
    assert cache.entry_path(videos[0], SPEC).exists() and cache.entry_path(videos[2], SPEC).exists()
    assert cache.prune(2 * entry_bytes) == (0, 0)  # within the limit: nothing more goes

    frames = PairVideoDataset(pairs_of(*videos), SPEC, frame_cache=cache.folder).load_video(str(videos[1]))
    assert torch.equal(frames, read_video_frames(videos[1], SPEC)[0]) and len(decodes) == 4
    assert cache.prune(0) == (3, 3 * entry_bytes) and cache.size_bytes() == 0
