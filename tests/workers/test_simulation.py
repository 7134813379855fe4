"""Simulated annotators judge toy pairs through the real HTTP API of a live server."""

import re
from pathlib import Path

import pytest
from django.core.management import call_command

from alignment.toyworld import ToyPrompt, export_pairs, make_pairs, read_mp4, score_clip
from alignment.toyworld.annotators import ANNOTATOR_PROFILES
from annotate.models import Judgment, Pair, Video
from annotate.services.ingest import pairs_import


@pytest.mark.slow
def test_simulated_annotators_work_through_the_api(live_server, transactional_db, tmp_path, settings, capsys):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    manifest = export_pairs(make_pairs(12, 1, seed=3), tmp_path / "toy")
    assert pairs_import(manifest=manifest, overlap=2).pairs_created == 12
    # 24 judgments (every pair twice) give 24 clear comparisons
    call_command(
        "simulate_annotators",
        "--annotators",
        "4",
        "--judgments",
        "24",
        "--base-url",
        live_server.url,
        "--mix",
        "careful=1",
        verbosity=0,
    )
    out = capsys.readouterr().out
    assert out.startswith("24 judgments (careful 24), 0 skipped, 0 errors")
    assert Judgment.objects.count() == 24
    assert max(Pair.objects.values_list("judgment_count", flat=True)) <= 2
    # Careful annotators agree with the oracle on clear comparisons, A/B mapped back from screen sides. The
    # reference is the oracle on the clips the server serves, which the annotators watched: the render-time
    # scores of oracle.jsonl are not it (the import transcodes, which moves VQ and MQ scores; against them the
    # same judgments agreed on 19 to 20 of 28 clear comparisons, and the test failed half of its runs).
    profile = ANNOTATOR_PROFILES["careful"]
    scores = {}
    for video in Video.objects.select_related("prompt"):
        scores[video.pk] = score_clip(read_mp4(Path(video.file.path), size=32), ToyPrompt.parse(video.prompt.text))
    agree = total = 0
    for judgment in Judgment.objects.select_related("pair"):
        a, b = scores[judgment.pair.video_a_id], scores[judgment.pair.video_b_id]
        for dim in ("vq", "mq", "ta"):
            delta = a[dim] - b[dim]
            if abs(abs(delta) - profile.tie_band) <= profile.clear_margin():
                continue  # perception noise could tip it either way
            total += 1
            expected = "TIE" if abs(delta) <= profile.tie_band else "A" if delta > 0 else "B"
            agree += getattr(judgment, dim) == expected
    # A careful annotator lapses on 15 % of answers, a third of them right by chance: 90 % expected (19 to 23 of
    # the 24 clear comparisons here); below 70 % by chance once in 600 runs; with the sides swapped, never.
    assert total >= 20 and agree / total >= 0.7, (agree, total)


@pytest.mark.slow
def test_a_run_that_runs_out_of_pairs_says_why_and_fails(
    live_server, transactional_db, make_pairs, tmp_path, settings, capsys
):
    """Two toy pairs with one judgment each, and a pair of another kind: 2 of 10 judgments, then nothing is left
    to lease; the other pair is skipped by both annotators. The command says so and exits non-zero."""
    from django.core.management.base import CommandError

    from alignment.toyworld import make_pairs as toy_pairs  # the fixture of the same name makes placeholder pairs

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    manifest = export_pairs(toy_pairs(2, 1, seed=5), tmp_path / "toy")
    assert pairs_import(manifest=manifest, overlap=1).pairs_created == 2
    other = make_pairs(1, overlap=1)[0]  # not a toy prompt ("prompt <tag> 0"): no simulated annotator can judge it
    with pytest.raises(CommandError) as refused:
        call_command(
            "simulate_annotators",
            "--annotators",
            "2",
            "--judgments",
            "10",
            "--base-url",
            live_server.url,
            "--mix",
            "careful=1",
            verbosity=0,
        )
    # one annotator or both lease the other pair and skip it (a lease held counts against its overlap of 1)
    assert re.match(r"2 judgments \(careful 2\), [12] skipped, 0 errors", capsys.readouterr().out)
    message = str(refused.value)
    assert message.startswith(
        "stopped at 2 of 10 judgments: no pair was left to lease for these 2 simulated annotators"
    ), message
    assert (
        f"1 pair skipped: not toy-world clips the simulated annotators can judge (the prompt is not a toy "
        f"prompt, e.g. {other.prompt.text!r})"
    ) in message
    assert "import more toy pairs" in message
    assert Judgment.objects.count() == 2


def test_the_shortfall_names_errors_and_is_empty_when_the_target_was_reached():
    from workers.simulation import SimulationReport

    assert SimulationReport(judgments=5, target=5, annotators=2).shortfall() == ""
    failed = SimulationReport(
        judgments=1, target=5, annotators=2, errors=["careful-0: 502 Bad Gateway", "careful-1: connection refused"]
    )
    assert failed.shortfall() == (
        "stopped at 1 of 5 judgments: 2 simulated annotators stopped on an error (the first: careful-0: 502 Bad "
        "Gateway). To go on: check that the server at --base-url is up and answers, then run it again."
    )
