"""The VideoAlign round trip: import the sample CSV with its videos, judge through the API, export, read back
with ``alignment.data`` (labels and frames); and RewardBench CSVs as evaluation snapshots and gold pairs."""

import csv
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from alignment.data import FrameSpec, PairVideoDataset, read_snapshot, read_videoalign_csv
from alignment.data.video import sample_frame_indices
from annotate.models import Assignment, Pair, Video
from annotate.services import media
from annotate.services.ingest import pairs_import
from workers.models import DatasetSnapshot
from workers.services.snapshots import snapshot_create

CODES = {"A": 1, "B": -1, "same": 0}
SCREEN = {(1, True): "left", (1, False): "right", (-1, True): "right", (-1, False): "left"}


def expected_labels(samples) -> dict[int, tuple[int, int, int]]:
    """Each imported pair's labels in the CSV (its first row), turned to the pair's A/B order."""
    expected = {}
    with open(samples / "example.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            shas = [media.file_sha256((samples / row[column]).resolve()) for column in ("path_A", "path_B")]
            videos = {video.sha256: video.pk for video in Video.objects.filter(sha256__in=shas)}
            pair = Pair.objects.get(video_a_id=min(videos.values()), video_b_id=max(videos.values()))
            sign = 1 if videos[shas[0]] == pair.video_a_id else -1
            expected.setdefault(pair.pk, tuple(sign * CODES[row[dim]] for dim in ("VQ", "MQ", "TA")))
    return expected


def judge_everything_as(expected: dict, client: APIClient) -> int:
    """Take leases until none is left and answer each with the expected labels, in screen terms."""
    judged = 0
    while (lease := client.post("/api/v1/assignments/next/")).status_code == 200:
        assignment = Assignment.objects.get(pk=lease.json()["id"])
        labels = expected[assignment.pair_id]
        payload = {
            dim: "tie" if code == 0 else SCREEN[(code, assignment.left_is_a)]
            for dim, code in zip(("vq", "mq", "ta"), labels)
        }
        response = client.post(
            f"/api/v1/assignments/{assignment.pk}/judgment/",
            {**payload, "watched_ms": 60_000, "duration_ms": 9_000},
            format="json",
        )
        assert response.status_code == 201, response.content
        judged += 1
    assert lease.status_code == 204
    return judged


def test_videoalign_round_trip_through_the_api(db, samples, settings, tmp_path, make_user):
    settings.MEDIA_ROOT = tmp_path / "media"
    report = pairs_import(manifest=samples / "example.csv")
    assert report.pairs_created == 3 and not report.skipped
    expected = expected_labels(samples)
    for index in range(3):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=make_user(f'judge{index}')).key}")
        assert judge_everything_as(expected, client) == 3

    snapshot = snapshot_create(root=tmp_path / "snapshots")
    exported = read_snapshot(snapshot.uri)  # checksums verified
    assert {pair.pair_id: pair.labels for pair in exported.pairs} == expected
    assert all(pair.n_judgments == 3 and pair.agreement_vq == 1.0 for pair in exported.pairs)
    assert "bundled" in exported.manifest["videoalign"]["reason"]  # storage paths: no VideoAlign CSV

    bundled = snapshot_create(root=tmp_path / "snapshots", bundle_videos=True)
    in_bundle = read_snapshot(bundled.uri)
    from_csv = [
        row
        for name in ("videoalign.csv", "videoalign-val.csv", "videoalign-test.csv")
        for row in read_videoalign_csv(f"{bundled.uri}/{name}")
    ]
    inside = lambda path: str((Path(bundled.uri) / path).resolve())  # noqa: E731 (the CSV reader resolves paths)
    by_videos = {(inside(pair.video_a), inside(pair.video_b)): pair.labels for pair in in_bundle.pairs}
    assert {(row.video_a, row.video_b): row.labels for row in from_csv} == by_videos
    assert all(row.fps_a and row.num_frames_a and row.fps_b and row.num_frames_b for row in from_csv)
    train = {(inside(p.video_a), inside(p.video_b)) for p in in_bundle.split("train")}
    assert {(row.video_a, row.video_b) for row in read_videoalign_csv(f"{bundled.uri}/videoalign.csv")} == train

    spec = FrameSpec(fps=2.0, max_frames=64)
    item = PairVideoDataset(exported.pairs, spec)[0]
    pair = exported.pairs[0]
    for side, fps, count in (("video_a", pair.fps_a, pair.num_frames_a), ("video_b", pair.fps_b, pair.num_frames_b)):
        video = Video.objects.get(file=item_path(pair, side, settings))
        assert (fps, count) == (video.fps, video.num_frames) and count > 24
        assert item[side].shape[0] == len(sample_frame_indices(count, fps, spec))  # ~2 frames per second of clip
        assert item[side].shape[1] == 3 and item[side].dtype.is_floating_point is False
    every_frame = PairVideoDataset(exported.pairs, FrameSpec(fps=None, max_frames=10_000, frame_multiple=1))[0]
    assert every_frame["video_a"].shape[0] == pair.num_frames_a  # the file really has the frames the row says


def item_path(pair, side, settings) -> str:
    return str(getattr(pair, side)).removeprefix(str(settings.MEDIA_ROOT.resolve()) + "/")


def rewardbench_csv(samples, path, *, broken_row=False):
    with open(samples / "example.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [
        "path_A",
        "path_B",
        "A_model",
        "B_model",
        "prompt",
        "VQ",
        "MQ",
        "TA",
        "Overall",
        "fps_A",
        "num_frames_A",
        "fps_B",
        "num_frames_B",
    ]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for index, row in enumerate(rows[:4]):
            writer.writerow(
                {
                    **{k: row[k] for k in columns if k in row},
                    "A_model": f"gen-{index}",
                    "B_model": "gen-x",
                    "Overall": row["VQ"],
                    "path_A": str(samples / row["path_A"]),
                    "path_B": str(samples / row["path_B"]),
                }
            )
        if broken_row:
            writer.writerow(
                {
                    **{k: rows[0][k] for k in columns if k in rows[0]},
                    "A_model": "m",
                    "B_model": "n",
                    "Overall": "maybe",
                    "path_A": "gone.mp4",
                    "path_B": str(samples / rows[0]["path_B"]),
                }
            )
            writer.writerow(
                {
                    **{k: rows[0][k] for k in columns if k in rows[0]},
                    "A_model": "m",
                    "B_model": "n",
                    "Overall": "A",
                    "path_A": "gone.mp4",
                    "path_B": str(samples / rows[0]["path_B"]),
                }
            )
    return path


def test_rewardbench_csv_becomes_an_evaluation_snapshot_and_gold_pairs(db, samples, settings, tmp_path, capsys):
    settings.MEDIA_ROOT = tmp_path / "media"
    source = rewardbench_csv(samples, tmp_path / "rewardbench.csv", broken_row=True)
    call_command(
        "import_rewardbench",
        str(source),
        "--out",
        str(tmp_path / "snaps"),
        "--name",
        "bench-v1",
        "--bundle-videos",
        "--gold",
        verbosity=0,
    )
    captured = capsys.readouterr()
    assert "evaluation snapshot bench-v1: 4 pairs (2 rows skipped)" in captured.out
    assert "rewardbench.csv:6: Overall" in captured.err or "label 'maybe'" in captured.err
    assert "rewardbench.csv:7: video not found" in captured.err
    snapshot = DatasetSnapshot.objects.get(name="bench-v1")
    assert snapshot.kind == DatasetSnapshot.Kind.EVALUATION
    evaluation = read_snapshot(snapshot.uri)
    assert [pair.split for pair in evaluation.pairs] == ["test"] * 4
    assert [pair.generator_a for pair in evaluation.pairs] == ["gen-0", "gen-1", "gen-2", "gen-3"]
    assert evaluation.pairs[0].overall == evaluation.pairs[0].vq and all(
        p.video_a.startswith("videos/") for p in evaluation.pairs
    )
    assert PairVideoDataset(evaluation.pairs, FrameSpec(fps=1.0), roots=[snapshot.uri])[0]["video_a"].shape[0] >= 2
    assert Pair.objects.filter(is_gold=True).count() == 3  # 4 good rows over 3 distinct video pairs
    with pytest.raises(CommandError, match="already exists"):
        call_command(
            "import_rewardbench", str(source), "--out", str(tmp_path / "snaps"), "--name", "bench-v1", verbosity=0
        )
