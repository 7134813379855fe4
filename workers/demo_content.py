"""What `make demo` loads so a fresh machine has something to judge, train on and look at.

Everything the demo loads is judgeable — toy-world clips with visible shapes and graded defects, the VideoAlign
samples or ffmpeg's test patterns — and is served before any pair the demo generates later (``DEMO_PRIORITY``).
Generated pairs come from the pipeline's last stage (admin → *Run the pipeline now*, ``POST /api/v1/pipelines/``,
or beat's nightly run) and from *Generate pairs* jobs; generation queues them at a priority in (0, 1] (random, or
``uncertainty_priority`` on request), ahead of imported pairs (priority 0). On a machine without
``VIDPREF_BASE_POLICY`` the base policy is an untrained tiny Wan built in ``var/models``
(``workers.services.alignment.base_policy_folder``), and the aligned policy is a short LoRA run on it: both
sample pure noise, which no one can judge.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from annotate.models import Pair
from annotate.services.accounts import annotator_create
from annotate.services.ingest import ImportReport, pairs_import
from config.tools import require_ffmpeg

SAMPLES = Path(settings.BASE_DIR).parent / "shared" / "data" / "videoalign-samples"
ANNOTATORS = ("annotator1", "annotator2")
DEMO_PRIORITY = 2.0
"""The demo's own pairs' priority: above the (0, 1] that generation gives its pairs, so an annotator gets every
demo pair still open to them before a generated one (see the module docstring)."""


def demo_accounts(*, credentials_file: Path) -> dict[str, dict]:
    """An admin and two annotators; passwords are made once and kept in ``credentials_file``."""
    known = json.loads(credentials_file.read_text()) if credentials_file.exists() else {}
    User = get_user_model()
    with transaction.atomic():
        admin_password = known.get("admin", {}).get("password") or secrets.token_urlsafe(9)
        admin, created = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
        if created or "admin" not in known:
            admin.set_password(admin_password)
            admin.is_staff = admin.is_superuser = True
            admin.save()
        known["admin"] = {"password": admin_password, "role": "staff"}
        for name in ANNOTATORS:
            password = known.get(name, {}).get("password") or secrets.token_urlsafe(9)
            account = annotator_create(username=name, password=password)
            if not account.created and name not in known:
                user = User.objects.get(username=name)
                user.set_password(password)
                user.save(update_fields=["password"])
            known[name] = {"password": password, "role": "annotator", "token": account.token}
    credentials_file.parent.mkdir(parents=True, exist_ok=True)
    credentials_file.write_text(json.dumps(known, indent=2))
    credentials_file.chmod(0o600)
    return known


def _render_clips(folder: Path) -> Path:
    """Short synthetic clips from ffmpeg's test sources, written with a JSONL manifest."""
    ffmpeg = require_ffmpeg(settings.FFMPEG_BINARY)
    specs = [
        (
            "a colourful test pattern scrolling smoothly",
            "testsrc2=size=320x180:rate=24",
            "testsrc2=size=320x180:rate=8",
        ),
        (
            "a soft colour gradient drifting slowly",
            "gradients=size=320x180:rate=24:speed=0.02",
            "gradients=size=320x180:rate=24:speed=0.02,noise=alls=40:allf=t",
        ),
        (
            "a mandelbrot fractal zooming in",
            "mandelbrot=size=320x180:rate=24",
            "mandelbrot=size=320x180:rate=24,boxblur=4",
        ),
    ]
    rows = []
    for index, (prompt, source_a, source_b) in enumerate(specs):
        names = []
        for side, source in (("a", source_a), ("b", source_b)):
            name = f"demo_{index}_{side}.mp4"
            subprocess.run(
                [
                    ffmpeg,
                    "-nostdin",
                    "-v",
                    "error",
                    "-y",
                    "-f",
                    "lavfi",
                    "-i",
                    source,
                    "-t",
                    "3",
                    "-pix_fmt",
                    "yuv420p",
                    str(folder / name),
                ],
                check=True,
            )
            names.append(name)
        rows.append(
            {
                "prompt": prompt,
                "video_a": names[0],
                "video_b": names[1],
                "generator_a": "ffmpeg-clean",
                "generator_b": "ffmpeg-degraded",
            }
        )
    manifest = folder / "demo.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def toy_pairs_load(*, n_prompts: int = 16, pairs_per_prompt: int = 2, seed: int = 0) -> ImportReport:
    """Toy-world pairs: for each prompt, clips with different defects (alignment.toyworld), rendered once."""
    from alignment.toyworld import export_pairs, make_pairs

    folder = Path(settings.VAR_DIR) / "demo-toy"
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        manifest = export_pairs(make_pairs(n_prompts, pairs_per_prompt, seed=seed), folder)
    return pairs_import(manifest=manifest)


def demo_pairs_load() -> list[ImportReport]:
    """Toy-world pairs, plus the VideoAlign sample videos when ../shared/data is there, else clips
    rendered with ffmpeg; all of them queued ahead of generated pairs (``demo_pairs_first``)."""
    reports = [toy_pairs_load()]
    if (SAMPLES / "example.csv").exists():
        reports.append(pairs_import(manifest=SAMPLES / "example.csv"))
    else:
        folder = Path(settings.VAR_DIR) / "demo-clips"
        folder.mkdir(parents=True, exist_ok=True)
        manifest = folder / "demo.jsonl" if (folder / "demo.jsonl").exists() else _render_clips(folder)
        reports.append(pairs_import(manifest=manifest))
    demo_pairs_first(reports)
    return reports


def demo_pairs_first(reports: list[ImportReport]) -> int:
    """Give the pairs of these imports ``DEMO_PRIORITY`` (again, on a later start: a demo whose pipeline already
    queued generated pairs still serves its own first). Returns how many pairs changed."""
    batches = [report.batch_id for report in reports if report.batch_id is not None]
    return Pair.objects.filter(batch_id__in=batches).exclude(priority=DEMO_PRIORITY).update(priority=DEMO_PRIORITY)


DEMO_CAMPAIGN = "demo-crowd"
DEMO_CAMPAIGN_GUIDELINES = """<p>You will see two short videos made for the same text. For each of three questions say
which video is better — or <em>tie</em> when you cannot tell them apart:</p>
<ul><li><strong>Visual quality</strong>: sharp, clean frames; no noise, blur or blocky colours.</li>
<li><strong>Motion quality</strong>: the shape moves smoothly in a straight line; no jumps or jitter.</li>
<li><strong>Text alignment</strong>: the shape, colour and direction the text asks for.</li></ul>
<p>You start with three practice pairs: after each one you see the reference answer and why.</p>"""


def _oracle_reason(scores_a: dict, scores_b: dict) -> str:
    names = {"vq": "visual quality", "mq": "motion quality", "ta": "text alignment"}
    return (
        "; ".join(f"{names[dim]}: left {scores_a[dim]:.2f}, right {scores_b[dim]:.2f}" for dim in ("vq", "mq", "ta"))
        + " (the toy world's oracle scores; a difference below 0.05 is a tie)."
    )


def demo_campaign_load(*, qualification_pairs: int = 3, work_pairs: int = 9):
    """A crowd campaign to try the participants' way through (``/c/demo-crowd/?PROLIFIC_PID=anyone``): short
    guidelines, three qualification pairs whose reference answers come from the toy world's oracle, then a quota
    of six pairs and a completion code. Its own toy pairs (seed 7), rendered once into ``var/demo-crowd``."""
    from alignment.toyworld import export_pairs, make_pairs
    from annotate.models import Campaign

    campaign, _ = Campaign.objects.get_or_create(
        slug=DEMO_CAMPAIGN,
        defaults={
            "name": "Demo crowd study",
            "guidelines": DEMO_CAMPAIGN_GUIDELINES,
            "external_link": True,
            "quota": 6,
            "completion_code": "VIDPREF-DEMO",
            "qualification_threshold": 0.6,
            "break_every_min": 30,
        },
    )
    folder = Path(settings.VAR_DIR) / "demo-crowd"
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        export_pairs(make_pairs(qualification_pairs + work_pairs, 1, seed=7), folder)
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    oracle = {row["video"]: row for row in map(json.loads, (folder / "oracle.jsonl").read_text().splitlines()) if row}

    def label(a: float, b: float) -> str:
        return "tie" if abs(a - b) < 0.05 else ("A" if a > b else "B")

    gold = []
    for row in rows[:qualification_pairs]:
        a, b = oracle[row["video_a"]], oracle[row["video_b"]]
        labels = {dim: label(a[dim], b[dim]) for dim in ("vq", "mq", "ta")}
        gold.append({**row, "labels": labels, "reason": _oracle_reason(a, b)})
    (folder / "qualification.jsonl").write_text("".join(json.dumps(row) + "\n" for row in gold))
    (folder / "work.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[qualification_pairs:]))
    reports = [
        pairs_import(manifest=folder / "qualification.jsonl", gold=True, qualification=True, campaign=campaign),
        pairs_import(manifest=folder / "work.jsonl", campaign=campaign),
    ]
    return campaign, reports
