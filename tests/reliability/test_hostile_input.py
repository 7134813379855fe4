"""Hostile files and hostile text: each bad file rejected with a clear reason or normalised while the rest of
the batch imports; prompts with markup, 100 kB, right-to-left text and emoji shown escaped and intact."""

import json
import subprocess

import pytest
from django.utils.html import escape


def _ffmpeg(*args: str) -> None:
    from django.conf import settings

    subprocess.run([settings.FFMPEG_BINARY, "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory):
    """Every kind of bad file, made in a few seconds with ffmpeg (tiny bitrates, lavfi sources)."""
    folder = tmp_path_factory.mktemp("hostile")
    lavfi = ("-f", "lavfi", "-i")
    for index in range(14):  # one good partner per row, all different files
        _ffmpeg(
            *lavfi,
            f"color=c=0x{index * 17:02x}40{255 - index * 9:02x}:size=64x48:rate=12",
            "-t",
            "0.5",
            "-pix_fmt",
            "yuv420p",
            str(folder / f"good-{index}.mp4"),
        )
    _ffmpeg(
        *lavfi,
        "testsrc2=size=160x120:rate=24",
        "-t",
        "4",
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        str(folder / "whole.mp4"),
    )
    whole = (folder / "whole.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])  # the index survives, half the frames do not
    _ffmpeg(*lavfi, "testsrc2=size=64x48:rate=12", "-t", "2", "-pix_fmt", "yuv420p", str(folder / "moov-last.mp4"))
    moov_last = (folder / "moov-last.mp4").read_bytes()
    (folder / "truncated-index.mp4").write_bytes(moov_last[: len(moov_last) * 3 // 4])  # the index is lost
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is a text file with a video's name\n")
    _ffmpeg(*lavfi, "sine=frequency=440:duration=1", "-c:a", "aac", str(folder / "audio-only.mp4"))
    _ffmpeg(
        *lavfi,
        "color=c=blue:size=7680x4320:rate=2",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        str(folder / "8k.mp4"),
    )
    _ffmpeg(
        *lavfi,
        "color=c=red:size=32x32:rate=1",
        "-t",
        "600",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        str(folder / "ten-minutes.mp4"),
    )
    _ffmpeg(
        *lavfi,
        "testsrc2=size=64x48:rate=30",
        "-t",
        "2",
        "-vf",
        r"select='lt(mod(n\,10)\,3)'",
        "-fps_mode",
        "vfr",
        "-pix_fmt",
        "yuv420p",
        str(folder / "vfr.mp4"),
    )
    _ffmpeg("-i", str(folder / "good-0.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(folder / "rotated.mp4"))
    (folder / "frames").mkdir()
    _ffmpeg(*lavfi, "testsrc2=size=64x48:rate=12", "-t", "0.5", str(folder / "frames" / "%03d.png"))
    (folder / "frames" / "%03d.png").write_bytes((folder / "frames" / "001.png").read_bytes())  # a pattern, literally
    (folder / "still.mp4").write_bytes((folder / "frames" / "001.png").read_bytes())
    (folder / "playlist.mp4").write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile://{folder}/good-0.mp4\n#EXT-X-ENDLIST\n"
    )
    return folder


# (file, prompt, the reason expected — None when the file is to be normalised and imported)
ROWS = [
    ("truncated.mp4", "truncated after its index", "truncated or damaged: only"),
    ("truncated-index.mp4", "truncated before its index", "no video stream"),
    ("zero.mp4", "zero bytes", "empty file (0 bytes)"),
    ("text.mp4", "text with a video's name", "not a readable video (text.mp4: Invalid data"),
    ("audio-only.mp4", "audio only", "no video stream"),
    ("8k.mp4", "8K resolution", None),
    ("ten-minutes.mp4", "a ten-minute video", "too long (600 s; the limit is 120 s"),
    ("vfr.mp4", "variable frame rate", None),
    ("rotated.mp4", "rotation metadata", None),
    ("still.mp4", "a PNG renamed .mp4", "not a video file (a still image or an image sequence"),
    ("frames/%03d.png", "an image-sequence pattern", "not a video file (a still image or an image sequence"),
    ("playlist.mp4", "an HLS playlist renamed .mp4", "not a video file (a playlist (hls) naming other files"),
]


@pytest.mark.slow
def test_hostile_files_are_rejected_or_normalised_and_the_rest_imports(db, hostile_files, tmp_path, settings):
    from annotate.models import Pair, Video
    from annotate.services.ingest import pairs_import

    settings.MEDIA_ROOT = tmp_path / "media"
    lines = [
        {"prompt": prompt, "video_a": name, "video_b": f"good-{index}.mp4", "generator_a": "hostile"}
        for index, (name, prompt, _) in enumerate(ROWS)
    ]
    lines.append({"prompt": "an ordinary pair", "video_a": "good-12.mp4", "video_b": "good-13.mp4"})
    lines.append({"prompt": "a NUL \u0000 byte in the prompt", "video_a": "good-10.mp4", "video_b": "good-11.mp4"})
    manifest = hostile_files / "batch.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    report = pairs_import(manifest=manifest)

    reasons = {error.line: error.reason for error in report.skipped}
    for line, (name, prompt, expected) in enumerate(ROWS, start=1):
        if expected is None:
            assert line not in reasons, f"{prompt}: {reasons.get(line)}"
        else:
            assert expected in reasons.get(line, ""), f"{prompt} (line {line}): {reasons.get(line)!r}"
            assert reasons[line].startswith(name), reasons[line]  # the reason names the file
    assert "NUL" in reasons.get(len(ROWS) + 2, ""), reasons
    assert report.pairs_created == 4  # 8K, VFR, rotated, and the ordinary pair
    assert Pair.objects.filter(prompt__text="an ordinary pair").exists()
    stored = {video.prompt.text: video for video in Video.objects.filter(generator="hostile")}
    assert (stored["8K resolution"].width, stored["8K resolution"].height) == (1280, 720)
    assert (stored["rotation metadata"].width, stored["rotation metadata"].height) == (48, 64)
    vfr = stored["variable frame rate"]
    probe = json.loads(
        subprocess.run(
            [settings.FFPROBE_BINARY, "-v", "error", "-show_streams", "-of", "json", vfr.file.path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["streams"][0]
    assert probe["avg_frame_rate"] == probe["r_frame_rate"]  # constant frame rate now
    assert {"hostile"} == set(Video.objects.filter(generator="hostile").values_list("generator", flat=True))
    assert Video.objects.filter(generator="hostile").count() == 3  # nothing stored for a rejected file


HOSTILE_PROMPTS = {
    "markup": '<script>alert("owned")</script><img src=x onerror="alert(1)"> & "quotes" \'too\'',
    "huge": ("a very long prompt " * 5400)[:100_000] + "THE-END-OF-THE-HUGE-PROMPT",
    "rtl": "\u202eتوليد فيديو لقطة تمشي على الشاطئ — סרטון של חתול",
    "emoji": "👩‍👩‍👧‍👦 family, 🇯🇵 flag, 🏳️‍🌈, e\u0301 combining, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_PROMPTS))
def test_hostile_prompts_render_escaped_and_intact(kind, client, make_user, make_pairs, settings):
    from rest_framework.test import APIClient

    from annotate.models import Prompt

    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    text = HOSTILE_PROMPTS[kind]
    pair = make_pairs(1)[0]
    Prompt.objects.filter(pk=pair.prompt_id).update(text=text)
    annotator = make_user()
    client.force_login(annotator)
    page = client.get("/").content.decode()
    assert f'<p id="prompt-text" dir="auto">{escape(text)}</p>' in page
    assert "<script>alert" not in page and "<img src=x" not in page
    api = APIClient()
    api.force_authenticate(annotator)
    lease = api.post("/api/v1/assignments/next/").json()
    assert lease["prompt"] == text  # JSON carries it byte for byte
    comment = text[:2000]
    judged = api.post(
        f"/api/v1/assignments/{lease['id']}/judgment/",
        {"vq": "left", "mq": "left", "ta": "tie", "comment": comment},
        format="json",
    )
    assert judged.status_code == 201 and judged.json()["comment"] == comment
    history = client.get("/history/").content.decode()
    assert "<script>alert" not in history and escape(text[:20]) in history
    staff = make_user(staff=True)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    for url in (
        "/admin/annotate/prompt/",
        f"/admin/annotate/prompt/{pair.prompt_id}/change/",
        f"/admin/annotate/judgment/{judged.json()['id']}/change/",
    ):
        admin_page = client.get(url)
        assert admin_page.status_code == 200
        assert "<script>alert" not in admin_page.content.decode(), url


def test_nul_bytes_and_oversized_fields_are_refused_with_a_reason(make_user, make_pairs):
    from rest_framework.test import APIClient

    make_pairs(1)
    api = APIClient()
    api.force_authenticate(make_user())
    lease = api.post("/api/v1/assignments/next/").json()
    url = f"/api/v1/assignments/{lease['id']}/judgment/"
    for comment, field_error in (
        ("a\u0000b", "Null characters are not allowed."),
        ("x" * 2001, "Ensure this field has no more than 2000 characters."),
    ):
        answer = api.post(url, {"vq": "left", "mq": "left", "ta": "tie", "comment": comment}, format="json")
        assert answer.status_code == 400 and answer.json()["comment"] == [field_error]
