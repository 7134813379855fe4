import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from alignment.data import (
    FrameSpec,
    PairRecord,
    PairVideoDataset,
    SnapshotError,
    VideoDecodeError,
    collate_pairs,
    fit_frame_size,
    read_rewardbench_csv,
    read_snapshot,
    read_video_frames,
    read_videoalign_csv,
    resolve_video_path,
    sample_frame_indices,
    split_for_prompt,
    write_snapshot,
)
from alignment.losses import LABEL_MISSING
from alignment.toyworld import write_mp4

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "videoalign-samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} is absent (shared sample data)")


def make_ramp_video(path, num_frames=30, fps=10, height=48, width=64):
    """Frame i is a flat grey of level 8·i, so a decoded frame tells which index it was."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for index in range(num_frames):
        frames[index] = 8 * index
    return write_mp4(frames, path, fps, min_side=1)


def frame_levels(frames: torch.Tensor) -> list[int]:
    return [round(level / 8) for level in frames.float().mean(dim=(1, 2, 3)).tolist()]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "ramp": make_ramp_video(folder / "ramp.mp4"),
        "short": make_ramp_video(folder / "short.mp4", num_frames=6, fps=8, height=32, width=32),
    }


def test_fit_frame_size_matches_qwen2vl_smart_resize():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    for height, width in [(752, 1360), (384, 688), (32, 32), (1080, 1920), (100, 3000), (28, 28), (447, 449)]:
        for max_pixels in (448 * 448, 224 * 224):
            ours = fit_frame_size(height, width, factor=28, min_pixels=56 * 56, max_pixels=max_pixels)
            assert ours == smart_resize(height, width, 28, 56 * 56, max_pixels)
            assert ours[0] % 28 == 0 and ours[1] % 28 == 0 and ours[0] * ours[1] <= max_pixels


def test_sample_frame_indices():
    spec = FrameSpec(fps=2.0, max_frames=32, frame_multiple=2)
    assert sample_frame_indices(120, 24.0, spec).tolist() == [0, 13, 26, 40, 53, 66, 79, 93, 106, 119]
    assert len(sample_frame_indices(24 * 60, 24.0, spec)) == 32  # capped
    assert len(sample_frame_indices(3, 24.0, spec)) == 2  # at least one temporal patch
    assert sample_frame_indices(5, 10.0, FrameSpec(fps=None, max_frames=8, frame_multiple=1)).tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]
    odd = sample_frame_indices(70, 10.0, FrameSpec(fps=1.0, frame_multiple=2))
    assert len(odd) == 6 and odd[0] == 0 and odd[-1] == 69


def test_read_video_frames_picks_the_right_frames(videos):
    frames, fps = read_video_frames(
        videos["ramp"], FrameSpec(fps=None, max_frames=100, size=(48, 64), frame_multiple=1)
    )
    assert frames.dtype == torch.uint8 and frames.shape == (30, 3, 48, 64)
    assert frame_levels(frames) == list(range(30))
    frames, fps = read_video_frames(videos["ramp"], FrameSpec(fps=2.0, size=(24, 32)))  # 3 s at 2 fps
    assert frames.shape == (6, 3, 24, 32) and fps == pytest.approx(2.0)
    assert frame_levels(frames) == sample_frame_indices(30, 10.0, FrameSpec(fps=2.0)).tolist()
    frames, _ = read_video_frames(videos["ramp"], FrameSpec(fps=2.0, max_pixels=28 * 28 * 2, min_pixels=28 * 28))
    assert frames.shape[2:] == (28, 28 * 2) or frames.shape[2] * frames.shape[3] <= 28 * 28 * 2


def test_read_video_errors_name_the_file(tmp_path):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    with pytest.raises(VideoDecodeError, match="notes.mp4"):
        read_video_frames(not_video, FrameSpec())


def test_resolve_video_path(tmp_path, videos):
    media, snap = tmp_path / "media", tmp_path / "snap"
    (media / "v").mkdir(parents=True)
    (snap / "v").mkdir(parents=True)
    (media / "v" / "a.mp4").write_bytes(b"m")
    (snap / "v" / "b.mp4").write_bytes(b"s")
    (media / "v" / "b.mp4").write_bytes(b"m")
    assert resolve_video_path("v/a.mp4", [snap, media]) == media / "v" / "a.mp4"
    assert resolve_video_path("v/b.mp4", [snap, media]) == snap / "v" / "b.mp4"  # first root wins
    assert resolve_video_path(str(videos["ramp"])) == videos["ramp"]
    assert resolve_video_path(f"file://{videos['ramp']}") == videos["ramp"]
    with pytest.raises(VideoDecodeError, match=r"v/c.mp4: video not found \(tried .*snap/v/c.mp4"):
        resolve_video_path("v/c.mp4", [snap, media])
    with pytest.raises(VideoDecodeError, match="only local files"):
        resolve_video_path("s3://bucket/v/a.mp4", [snap])


def pair_rows(n=20, video_a="videos/ramp.mp4", video_b="videos/short.mp4"):
    rng = np.random.default_rng(0)
    return [
        {
            "pair_id": 100 + i,
            "prompt": f"prompt number {i // 2}",
            "video_a": video_a,
            "video_b": video_b,
            "generator_a": "gen-x",
            "generator_b": "gen-y",
            "fps_a": 10.0,
            "num_frames_a": 30,
            "fps_b": 8.0,
            "num_frames_b": 6,
            "vq": int(rng.integers(-1, 2)),
            "mq": int(rng.integers(-1, 2)),
            "ta": None if i == 3 else int(rng.integers(-1, 2)),
            "n_judgments": 3,
            "agreement_vq": 0.5,
        }
        for i in range(n)
    ]


@pytest.fixture()
def snapshot_dir(tmp_path, videos):
    return write_snapshot(
        pair_rows(),
        tmp_path / "snapshots" / "7",
        judgments_rows=[{"pair_id": 100, "annotator": 1, "vq": "A", "mq": "TIE", "ta": "B"}],
        videos={"videos/ramp.mp4": videos["ramp"], "videos/short.mp4": videos["short"]},
        filters={"min_agreement": 0.5},
    )


def test_snapshot_round_trip(snapshot_dir):
    assert sorted(os.listdir(snapshot_dir.parent)) == ["7"]  # no temporary folder left behind
    snapshot = read_snapshot(snapshot_dir)
    rows = pair_rows()
    assert [p.pair_id for p in snapshot.pairs] == [r["pair_id"] for r in rows]
    assert [p.labels for p in snapshot.pairs] == [
        (r["vq"], r["mq"], LABEL_MISSING if r["ta"] is None else r["ta"]) for r in rows
    ]
    assert all(p.split == split_for_prompt(p.prompt) for p in snapshot.pairs)
    assert sum(len(snapshot.split(s)) for s in ("train", "val", "test")) == 20
    manifest = snapshot.manifest
    assert manifest["counts"]["pairs"] == 20 and manifest["counts"]["judgments"] == 1
    assert set(manifest["files"]) == {
        "pairs.parquet",
        "judgments.parquet",
        "videoalign.csv",
        "videoalign-val.csv",
        "videoalign-test.csv",
        "videos/ramp.mp4",
        "videos/short.mp4",
    }
    import pyarrow.parquet as pq

    schema = pq.read_schema(snapshot_dir / "pairs.parquet")
    assert str(schema.field("vq").type) == "int8"
    for split, name in (("train", "videoalign.csv"), ("val", "videoalign-val.csv"), ("test", "videoalign-test.csv")):
        csv_pairs = read_videoalign_csv(snapshot_dir / name)
        # missing TA stays missing
        assert [p.labels for p in csv_pairs] == [p.labels for p in snapshot.split(split)], split


def test_videoalign_csv_holds_the_train_split_only_and_every_path_opens_the_way_videoalign_joins_it(tmp_path, videos):
    """VideoAlign's trainer trains on every row of its CSV and opens ``file://{data_dir}/{path}``: the train CSV
    holds no held-out pair, the three files hold each pair once, and each path opens from the snapshot folder."""
    import csv

    rows = pair_rows(n=60)
    out = write_snapshot(
        rows, tmp_path / "snap", videos={"videos/ramp.mp4": videos["ramp"], "videos/short.mp4": videos["short"]}
    )
    snapshot = read_snapshot(out)
    seen = {}
    for split, name in (("train", "videoalign.csv"), ("val", "videoalign-val.csv"), ("test", "videoalign-test.csv")):
        with open(out / name, newline="") as handle:
            lines = list(csv.DictReader(handle))
        assert {(r["prompt"]) for r in lines} == {p.prompt for p in snapshot.split(split)}, split
        for line in lines:
            seen[line["prompt"]] = seen.get(line["prompt"], 0) + 1
            for side in ("A", "B"):
                assert Path(f"{out}/{line[f'path_{side}']}").is_file()  # VideoAlign: f"file://{data_dir}/{path}"
                assert float(line[f"fps_{side}"]) > 0 and int(line[f"num_frames_{side}"]) > 0
    assert sum(seen.values()) == 60 and {len(snapshot.split(s)) > 0 for s in ("train", "val", "test")} == {True}
    assert snapshot.manifest["videoalign"]["data_dir"] == "."


def test_videoalign_csv_fills_missing_frame_counts_from_the_bundled_video(tmp_path, videos):
    rows = pair_rows(n=6)
    for row in rows:
        row.update(fps_a=None, num_frames_a=None, fps_b=None, num_frames_b=None)
    out = write_snapshot(
        rows, tmp_path / "snap", videos={"videos/ramp.mp4": videos["ramp"], "videos/short.mp4": videos["short"]}
    )
    pairs = [
        p
        for name in ("videoalign.csv", "videoalign-val.csv", "videoalign-test.csv")
        for p in read_videoalign_csv(out / name)
    ]
    assert len(pairs) == 6
    assert {(p.fps_a, p.num_frames_a, p.fps_b, p.num_frames_b) for p in pairs} == {(10.0, 30, 8.0, 6)}


def test_videoalign_csvs_are_refused_with_the_reason_when_videos_are_not_bundled(tmp_path, videos):
    """Absolute paths or s3:// URIs cannot be opened by VideoAlign's loader: no CSV rather than a broken one;
    the snapshot itself (our trainer resolves absolute paths and URIs) is written whole."""
    for video_a, why in (
        (str(videos["ramp"]), "is absolute"),
        ("s3://bucket/videos/1.mp4", "is a URI"),
        ("videos/missing.mp4", "not in the snapshot"),
    ):
        out = write_snapshot(pair_rows(n=4, video_a=video_a), tmp_path / f"snap-{why.split()[-1]}")
        manifest = read_snapshot(out).manifest
        assert manifest["videoalign"]["files"] == [] and not any(n.startswith("videoalign") for n in manifest["files"])
        reason = manifest["videoalign"]["reason"]
        assert "pair 100" in reason and why in reason and "bundled" in reason, reason
        assert not list(out.glob("videoalign*.csv"))
        assert len(read_snapshot(out).pairs) == 4


def test_videoalign_csvs_name_an_unreadable_bundled_video(tmp_path, videos):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    rows = pair_rows(n=2)
    for row in rows:
        row.update(fps_a=None, num_frames_a=None)
    out = write_snapshot(
        rows, tmp_path / "snap", videos={"videos/ramp.mp4": broken, "videos/short.mp4": videos["short"]}
    )
    reason = read_snapshot(out).manifest["videoalign"]["reason"]
    assert "videos/ramp.mp4" in reason and "not a readable video" in reason, reason


def test_videoalign_csv_round_trip_with_full_labels(tmp_path, videos):
    rows = [r for r in pair_rows() if r["ta"] is not None]
    out = write_snapshot(
        rows, tmp_path / "snap", videos={"videos/ramp.mp4": videos["ramp"], "videos/short.mp4": videos["short"]}
    )
    snapshot = read_snapshot(out)
    csv_pairs = read_videoalign_csv(out / "videoalign.csv")
    train = {r["pair_id"] for r in rows if split_for_prompt(r["prompt"]) == "train"}
    assert [p.labels for p in csv_pairs] == [(r["vq"], r["mq"], r["ta"]) for r in rows if r["pair_id"] in train]
    assert len(snapshot.split("train")) == len(csv_pairs)
    assert csv_pairs[0].video_a == str((out / "videos" / "ramp.mp4").resolve())
    assert csv_pairs[0].num_frames_a == 30 and csv_pairs[0].fps_b == 8.0


def test_snapshot_checksum_mismatch_and_missing_files(snapshot_dir):
    with open(snapshot_dir / "videos" / "short.mp4", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(SnapshotError, match=r"videos/short.mp4: sha256 .* does not match"):
        read_snapshot(snapshot_dir)
    assert len(read_snapshot(snapshot_dir, verify=False).pairs) == 20
    (snapshot_dir / "judgments.parquet").unlink()
    with pytest.raises(SnapshotError, match="judgments.parquet: listed in the manifest but missing"):
        read_snapshot(snapshot_dir)
    (snapshot_dir / "manifest.json").unlink()
    with pytest.raises(SnapshotError, match="manifest.json: missing"):
        read_snapshot(snapshot_dir)


def test_write_snapshot_is_atomic_and_immutable(tmp_path, videos):
    target = tmp_path / "snaps" / "1"
    with pytest.raises(FileNotFoundError):
        write_snapshot(pair_rows(), target, videos={"videos/ramp.mp4": tmp_path / "nope.mp4"})
    assert not target.exists() and os.listdir(tmp_path / "snaps") == []
    write_snapshot(pair_rows(), target)
    with pytest.raises(FileExistsError, match="immutable"):
        write_snapshot(pair_rows(), target)
    with pytest.raises(ValueError, match="pair_id values repeat"):
        write_snapshot(pair_rows() + pair_rows()[:1], tmp_path / "snaps" / "2")
    with pytest.raises(ValueError, match="vq=2"):
        write_snapshot([{**pair_rows()[0], "vq": 2}], tmp_path / "snaps" / "3")


def test_split_for_prompt_is_deterministic_and_balanced():
    splits = [split_for_prompt(f"prompt {i}") for i in range(5000)]
    assert splits == [split_for_prompt(f"prompt {i}") for i in range(5000)]
    assert 0.07 < splits.count("val") / 5000 < 0.13 and 0.07 < splits.count("test") / 5000 < 0.13


def test_rewardbench_csv(tmp_path):
    path = tmp_path / "bench.csv"
    path.write_text(
        "path_A,path_B,A_model,B_model,prompt,VQ,MQ,TA,Overall,fps_A,num_frames_A,fps_B,num_frames_B\n"
        'a/1.mp4,/abs/2.mp4,kling,gen3,"a cat, running",A,same,B,A,24,120,16,80\n'
    )
    (pair,) = read_rewardbench_csv(path)
    assert pair.labels == (1, 0, -1) and pair.overall == 1
    assert pair.generator_a == "kling" and pair.video_b == "/abs/2.mp4"
    assert pair.video_a == str(tmp_path / "a" / "1.mp4") and pair.prompt == "a cat, running"
    bad = tmp_path / "bad.csv"
    bad.write_text("path_A,path_B,prompt,VQ,MQ,TA,fps_A,num_frames_A,fps_B,num_frames_B\nx,y,p,A,left,B,1,1,1,1\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: label 'left'"):
        read_videoalign_csv(bad)
    with pytest.raises(ValueError, match="missing columns"):
        read_rewardbench_csv(bad)


def test_dataset_with_dataloader_workers(snapshot_dir):
    snapshot = read_snapshot(snapshot_dir)
    dataset = PairVideoDataset(snapshot.pairs, FrameSpec(fps=2.0, size=(32, 32)), roots=[snapshot.root])
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_pairs)
    batches = list(loader)
    assert len(batches) == 5
    batch = batches[0]
    assert batch["labels"].dtype == torch.int8 and batch["labels"].shape == (4, 3)
    assert batch["pair_id"] == [100, 101, 102, 103]
    assert batch["video_a"][0].shape == (6, 3, 32, 32) and batch["video_b"][0].shape == (2, 3, 32, 32)
    assert frame_levels(batch["video_a"][0]) == [0, 6, 12, 17, 23, 29]
    assert batches[0]["labels"][3, 2].item() == LABEL_MISSING


@needs_samples
def test_real_videoalign_samples_decode():
    pairs = read_videoalign_csv(SAMPLES / "example.csv")
    assert len(pairs) == 12 and pairs[0].labels == (-1, -1, 1) and pairs[1].labels == (0, 0, 1)
    dataset = PairVideoDataset(pairs[:3], FrameSpec(fps=2.0, max_frames=16, max_pixels=448 * 448))
    for index, pair in enumerate(pairs[:3]):
        item = dataset[index]
        for video, fps, num_frames in (
            (item["video_a"], pair.fps_a, pair.num_frames_a),
            (item["video_b"], pair.fps_b, pair.num_frames_b),
        ):
            t, c, h, w = video.shape
            assert c == 3 and t % 2 == 0 and t == sample_frame_indices(num_frames, fps, dataset.spec).size
            assert h % 28 == 0 and w % 28 == 0 and h * w <= 448 * 448
            assert video.float().std() > 10  # real content, not a blank frame


@needs_samples
@pytest.mark.parametrize("threads", [1, 2])
def test_skipping_unwanted_frames_decodes_the_wanted_ones_exactly(threads):
    """Non-reference frames are skipped unless sampled: every sampled frame must still equal what a decode
    of every frame gives (a wrongly skipped or mis-numbered frame would differ)."""
    import av

    spec = FrameSpec(fps=2.0, max_frames=16, max_pixels=448 * 448)
    for path in sorted((SAMPLES / "videos").glob("*.mp4"))[:4]:
        frames, _ = read_video_frames(path, spec, threads=threads)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            indices = sample_frame_indices(stream.frames, float(stream.average_rate), spec).tolist()
            height, width = frames.shape[2:]
            decoded = {
                index: frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BICUBIC")
                for index, frame in enumerate(container.decode(stream))
                if index in indices
            }
            expected = np.stack([decoded[index].transpose(2, 0, 1) for index in indices])
        assert np.array_equal(frames.numpy(), expected), path.name


def test_dataset_video_cache_is_lru(videos):
    pairs = [PairRecord(pair_id=0, prompt="p", video_a=str(videos["ramp"]), video_b=str(videos["short"]))]
    dataset = PairVideoDataset(pairs, FrameSpec(fps=2.0, size=(16, 16)), cache_videos=1)
    first = dataset.load_video(str(videos["ramp"]))
    assert dataset.load_video(str(videos["ramp"])) is first  # served from the cache
    dataset.load_video(str(videos["short"]))  # evicts ramp
    assert list(dataset._cache) == [str(videos["short"])]
    assert PairVideoDataset(pairs, FrameSpec(fps=2.0, size=(16, 16))).load_video(str(videos["ramp"])) is not first


def test_snapshot_writer_that_fails_to_start_leaves_no_folder(tmp_path, monkeypatch):
    """A failure inside SnapshotWriter.__init__ (after it made its hidden folder) removes that folder at
    once; it had no owner, so the sweeper would only have removed it a day later."""
    import pyarrow.parquet as pq

    from alignment.data.snapshot import SnapshotWriter

    def refuse(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(pq, "ParquetWriter", refuse)
    with pytest.raises(OSError, match="No space"):
        SnapshotWriter(tmp_path / "snaps" / "1")
    assert os.listdir(tmp_path / "snaps") == []


@pytest.mark.parametrize(
    ("batches", "unique"),
    [
        ([range(0, 10), range(10, 20)], True),  # ascending, as the export writes: checked as it streams
        ([range(0, 10), range(9, 20)], False),  # the last id of one batch again at the start of the next
        ([[3, 1, 2], [4, 5]], True),  # out of order but unique: checked at commit
        ([[1, 2, 2], [4, 5]], False),  # a repeat inside a batch
    ],
)
def test_snapshot_writer_finds_repeated_pair_ids_in_any_order(tmp_path, batches, unique):
    import pyarrow as pa

    from alignment.data.snapshot import PAIRS_SCHEMA, SnapshotWriter

    rows = pair_rows(20)
    writer = SnapshotWriter(tmp_path / "snap")
    for ids in batches:
        part = [{**rows[0], "pair_id": 100 + i, "split": "train"} for i in ids]
        writer.add_pairs(pa.Table.from_pylist(part, schema=PAIRS_SCHEMA))
    if unique:
        assert writer.commit().is_dir()
    else:
        with pytest.raises(ValueError, match="pair_id values repeat"):
            writer.commit()
        writer.abort()
