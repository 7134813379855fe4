"""Import from the VideoAlign CSV and JSONL, on real videos and broken files."""

import json
import subprocess

import pytest
from django.core.management import call_command

from annotate.models import Pair, Video
from annotate.services import media
from annotate.services.ingest import ManifestError, pairs_import
from tests.conftest import render_clip


def test_videoalign_sample_csv(db, samples, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    report = pairs_import(manifest=samples / "example.csv", gold=True)
    assert (report.rows, report.pairs_created, report.pairs_existing, len(report.skipped)) == (12, 3, 9, 0)
    assert Video.objects.count() == 6
    video = Video.objects.get(sha256=media.file_sha256(samples / "videos" / "example_1_A.mp4"))
    assert (video.width, video.height) == (1280, 708)  # long side capped at 1280, even sides
    assert abs(video.fps - 24.0) < 0.01 and video.poster
    out = settings.FFPROBE_BINARY
    probe = json.loads(
        subprocess.run(
            [out, "-v", "error", "-show_streams", "-show_format", "-of", "json", video.file.path],
            capture_output=True,
            check=True,
        ).stdout
    )
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["pix_fmt"]) == ("h264", "yuv420p")
    assert "isom" in probe["format"]["tags"].get("major_brand", "isom")
    with open(video.file.path, "rb") as handle:  # +faststart: the index (moov) comes before the media (mdat)
        head = handle.read(1 << 16)
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))
    # example_1: VQ=B, MQ=B, TA=A in the CSV, stored in A/B order of the pair
    pair = Pair.objects.get(prompt__text__startswith="The camera remains still")
    labels = pair.gold_labels
    if pair.video_a.sha256 == video.sha256:
        assert labels == {"vq": "B", "mq": "B", "ta": "A"}
    else:
        assert labels == {"vq": "A", "mq": "A", "ta": "B"}
    again = pairs_import(manifest=samples / "example.csv", gold=True)
    assert (again.pairs_created, again.videos_created) == (0, 0)
    assert Pair.objects.count() == 3 and Video.objects.count() == 6


def test_bad_rows_are_reported_and_good_rows_imported(db, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    render_clip(tmp_path / "good_a.mp4")
    render_clip(tmp_path / "good_b.mp4", source="smptebars")
    render_clip(tmp_path / "good_c.mp4", source="rgbtestsrc")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    truncated = (tmp_path / "good_a.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(truncated[: len(truncated) // 3])
    subprocess.run(
        [
            settings.FFMPEG_BINARY,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
            str(tmp_path / "audio.m4a"),
        ],
        check=True,
    )
    rows = [
        {"prompt": "good", "video_a": "good_a.mp4", "video_b": "good_b.mp4", "generator_a": "g1", "generator_b": "g2"},
        {"prompt": "missing", "video_a": "good_a.mp4", "video_b": "nowhere.mp4"},
        {"prompt": "empty", "video_a": "good_c.mp4", "video_b": "empty.mp4"},
        {"prompt": "text", "video_a": "good_c.mp4", "video_b": "text.mp4"},
        {"prompt": "audio", "video_a": "good_c.mp4", "video_b": "audio.m4a"},
        {"prompt": "twice", "video_a": "good_c.mp4", "video_b": "good_c.mp4"},
        {"prompt": "truncated", "video_a": "good_c.mp4", "video_b": "truncated.mp4"},
        {
            "prompt": "bad labels",
            "video_a": "good_a.mp4",
            "video_b": "good_b.mp4",
            "labels": {"vq": "sideways", "mq": "A", "ta": "B"},
        },
    ]
    manifest = tmp_path / "batch.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    report = pairs_import(manifest=manifest)
    reasons = {error.line: error.reason for error in report.skipped}
    assert report.pairs_created == 1
    assert "file not found" in reasons[2]
    assert "empty file" in reasons[3]
    assert "not a readable video" in reasons[4] or "no video stream" in reasons[4]
    assert "no video stream" in reasons[5]
    assert "same video" in reasons[6]
    assert "truncated.mp4" in reasons[7]
    assert "sideways" in reasons[8]
    assert 9 in reasons
    assert Pair.objects.count() == 1 and Video.objects.count() >= 2
    assert set(Pair.objects.get().video_a.generator + Pair.objects.get().video_b.generator) == set("g12")


def test_manifest_without_the_right_header_is_refused(db, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ManifestError, match="path_A, path_B, prompt"):
        pairs_import(manifest=bad)


def test_import_command_reports_skips(db, tmp_path, settings, capsys):
    settings.MEDIA_ROOT = tmp_path / "media"
    render_clip(tmp_path / "a.mp4")
    render_clip(tmp_path / "b.mp4", source="smptebars")
    csv = tmp_path / "pairs.csv"
    csv.write_text("path_A,path_B,prompt,VQ,MQ,TA\na.mp4,b.mp4,a test,A,B,same\na.mp4,missing.mp4,x,A,A,A\n")
    call_command("import_pairs", str(csv), "--gold", "--overlap", "5", verbosity=0)
    captured = capsys.readouterr()
    assert "1 pairs created" in captured.out
    assert "line 3" in captured.err and "missing.mp4: file not found" in captured.err
    pair = Pair.objects.get()
    assert pair.overlap == 5 and pair.is_gold


def test_media_view_serves_ranges_only_within_assignments(client, db, tmp_path, settings, make_user):
    settings.MEDIA_ROOT = tmp_path / "media"
    render_clip(tmp_path / "a.mp4")
    render_clip(tmp_path / "b.mp4", source="smptebars")
    (tmp_path / "m.jsonl").write_text(json.dumps({"prompt": "p", "video_a": "a.mp4", "video_b": "b.mp4"}) + "\n")
    pairs_import(manifest=tmp_path / "m.jsonl")
    video = Video.objects.first()
    user = make_user()
    client.force_login(user)
    assert client.get(f"/media/videos/{video.pk}/").status_code == 404
    from annotate.services.assignment import assignment_next

    assignment_next(annotator=user)
    whole = client.get(f"/media/videos/{video.pk}/")
    assert whole.status_code == 200 and whole["Accept-Ranges"] == "bytes"
    size = video.file.size
    part = client.get(f"/media/videos/{video.pk}/", HTTP_RANGE="bytes=10-99")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 10-99/{size}"
    assert b"".join(part.streaming_content) == open(video.file.path, "rb").read()[10:100]
    assert client.get(f"/media/videos/{video.pk}/", HTTP_RANGE=f"bytes={size + 5}-").status_code == 416
