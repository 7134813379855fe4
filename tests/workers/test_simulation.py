"""Simulated annotators judge toy pairs through the real HTTP API of a live server."""

import json

import pytest
from django.core.management import call_command

from alignment.toyworld import export_pairs, make_pairs
from annotate.models import Judgment, Pair
from annotate.services.ingest import pairs_import
from annotate.services.media import file_sha256


@pytest.mark.slow
def test_simulated_annotators_work_through_the_api(live_server, transactional_db, tmp_path, settings, capsys):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    manifest = export_pairs(make_pairs(12, 1, seed=3), tmp_path / "toy")
    assert pairs_import(manifest=manifest, overlap=2).pairs_created == 12
    # 24 judgments give about twenty clear comparisons: with the 8 that 10 judgments gave, one unlucky draw of
    # pairs (which thread gets which is not fixed) once left 5 of 8 and failed the 70 % bar
    call_command("simulate_annotators", "--annotators", "4", "--judgments", "24", "--base-url", live_server.url,
                 "--mix", "careful=1", verbosity=0)
    out = capsys.readouterr().out
    assert out.startswith("24 judgments (careful 24), 0 skipped, 0 errors")
    assert Judgment.objects.count() == 24
    assert max(Pair.objects.values_list("judgment_count", flat=True)) <= 2
    # careful annotators agree with the oracle on clear pairs: compare A/B labels with oracle.jsonl
    oracle_rows = [json.loads(line) for line in (manifest.parent / "oracle.jsonl").read_text().splitlines()]
    scores_by_sha = {file_sha256(manifest.parent / row["video"]): row for row in oracle_rows}
    agree = total = 0
    for judgment in Judgment.objects.select_related("pair__video_a", "pair__video_b"):
        a, b = scores_by_sha[judgment.pair.video_a.sha256], scores_by_sha[judgment.pair.video_b.sha256]
        for dim in ("vq", "mq", "ta"):
            delta = a[dim] - b[dim]
            if abs(delta) < 0.15:
                continue
            total += 1
            agree += getattr(judgment, dim) == ("A" if delta > 0 else "B")
    assert total >= 12 and agree / total >= 0.7, (agree, total)
