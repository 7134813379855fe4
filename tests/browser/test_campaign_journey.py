"""A crowd participant's whole way through a campaign, in headless Chromium: the Prolific-style link, the
guidelines, qualification with the reference answer after each pair, judging with the scrubber, flicker and undo,
the completion code; another participant fails qualification and is stopped; the report has their active time."""

import csv
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from annotate.models import Assignment, Campaign, CampaignMember, Judgment
from annotate.services.ingest import pairs_import
from tests.browser.conftest import LAPTOP, watch_problems
from tests.conftest import render_clip

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}
GOLD = {"vq": "A", "mq": "B", "ta": "tie"}
KEYS = {"vq": "qwe", "mq": "asd", "ta": "zxc"}  # left, tie, right per row
REASON = "The left video is sharp; the right one moves smoothly; both show the prompt."


@pytest.fixture
def journey(transactional_db, tmp_path, settings):
    """A campaign with an external link, guidelines, two qualification pairs (gold, with a reason), four pairs to
    judge and a quota of two; every clip real (ffmpeg test patterns)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    campaign = Campaign.objects.create(
        name="Journey study",
        slug="journey",
        guidelines="<p>Watch both videos, then judge <strong>each question on its own</strong>.</p>",
        external_link=True,
        quota=2,
        completion_code="JOURNEY-OK",
        completion_url="https://platform.example/complete?cc={code}",
        qualification_threshold=0.5,
    )
    sources = ["testsrc2", "smptebars", "rgbtestsrc", "testsrc", "yuvtestsrc", "pal75bars"]
    rows = []
    for i in range(6):
        render_clip(tmp_path / f"{i}a.mp4", seconds=0.6, source=sources[i], size="96x64")
        render_clip(tmp_path / f"{i}b.mp4", seconds=0.7, source=sources[(i + 1) % 6], size="96x64")
        rows.append({"prompt": f"journey pair {i}", "video_a": f"{i}a.mp4", "video_b": f"{i}b.mp4"})
    gold = [{**row, "labels": GOLD, "reason": REASON} for row in rows[:2]]
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(row) + "\n" for row in gold))
    (tmp_path / "work.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[2:]))
    assert (
        pairs_import(manifest=tmp_path / "gold.jsonl", gold=True, qualification=True, campaign=campaign).pairs_created
        == 2
    )
    assert pairs_import(manifest=tmp_path / "work.jsonl", campaign=campaign).pairs_created == 4
    return campaign


def _keys_for(lease: Assignment, labels: dict) -> list[str]:
    """The keys that choose these A/B/tie labels on this lease's screen."""
    side = {"A": 0 if lease.left_is_a else 2, "B": 2 if lease.left_is_a else 0, "tie": 1}
    return [KEYS[dim][side[value]] for dim, value in labels.items()]


def _wrong(labels: dict) -> dict:
    return {dim: {"A": "B", "B": "A", "tie": "A"}[value] for dim, value in labels.items()}


def _judge(page, labels: dict) -> Assignment:
    """Watch both videos, choose with the keyboard, submit with Enter; returns the lease judged."""
    page.wait_for_selector("#workspace[data-assignment]")
    lease = Assignment.objects.get(pk=int(page.get_attribute("#workspace", "data-assignment")))
    page.wait_for_function(
        "document.querySelector('#video-left').readyState >= 1"
        " && document.querySelector('#video-right').readyState >= 1"
    )
    page.keyboard.press("Space")
    page.wait_for_function("window.VidPref.player.watched.size === 2", timeout=20000)
    for key in _keys_for(lease, labels):
        page.keyboard.press(key)
    page.wait_for_function("!document.querySelector('#submit-judgment').disabled")
    page.keyboard.press("Enter")
    return lease


def _start(browser, live_server, pid: str, viewport: dict):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    problems = watch_problems(page)
    page.goto(f"{live_server.url}/c/journey/?PROLIFIC_PID={pid}&STUDY_ID=study-1&SESSION_ID=session-{pid}")
    page.wait_for_selector("#campaign-guidelines")
    assert "each question on its own" in page.inner_text("#campaign-guidelines")
    page.click("#guidelines-read")
    page.wait_for_selector("#qualification-banner")
    return context, page, problems


def test_a_participant_qualifies_judges_with_the_tools_and_gets_the_completion_code(
    browser, live_server, journey, settings
):
    context, page, problems = _start(browser, live_server, "P-GOOD", LAPTOP)
    assert "pair 1 of 2" in page.inner_text("#qualification-banner")
    shots = Path(settings.VAR_DIR) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)

    # qualification: the reference answer and the reason after each pair (one answer wrong, the rest right)
    for number, labels in enumerate([GOLD, {**GOLD, "ta": "A"}], start=1):
        lease = _judge(page, labels)
        page.wait_for_selector("#qualification-feedback")
        feedback = page.inner_text("#qualification-feedback")
        assert REASON in feedback and "Reference" in feedback
        reference_vq = "left" if lease.left_is_a else "right"
        assert page.locator("#qualification-feedback tbody tr").first.inner_text().split("\t")[2] == reference_vq
        if number == 1:
            page.screenshot(path=str(shots / "campaign-feedback-laptop.png"), full_page=True)
        page.keyboard.press("Enter")  # on to the next
    member = CampaignMember.objects.get(external_id="P-GOOD")
    assert member.status == "active" and member.qualification["passed"]

    # judging: the scrubber seeks both videos to the same frame; flicker shows one video at a time
    page.wait_for_selector("#scrubber")
    first = int(page.get_attribute("#workspace", "data-assignment"))
    page.evaluate(
        "(() => { const s = document.querySelector('#scrubber'); s.value = s.max / 2;"
        " s.dispatchEvent(new Event('input', {bubbles: true}));"
        " s.dispatchEvent(new Event('change', {bubbles: true})); })()"
    )
    page.wait_for_function(
        "Math.abs(document.querySelector('#video-left').currentTime"
        " - document.querySelector('#video-right').currentTime) < 1e-3"
        " && document.querySelector('#video-left').currentTime > 0"
    )
    page.keyboard.press("f")
    visible = (
        "[...document.querySelectorAll('#video-left, #video-right')]"
        ".filter(v => v.offsetParent !== null && getComputedStyle(v).visibility !== 'hidden').map(v => v.id)"
    )
    page.wait_for_function(f"{visible}.length === 1")
    shown = page.evaluate(visible)
    page.keyboard.press("g")
    page.wait_for_function(f"{visible}.length === 1 && {visible}[0] !== '{shown[0]}'")
    page.keyboard.press("f")
    page.wait_for_function(f"{visible}.length === 2")

    judged = _judge(page, {"vq": "A", "mq": "A", "ta": "tie"})
    assert judged.pk == first
    page.wait_for_selector("#undo-button")
    page.keyboard.press("u")  # undo: the same pair comes back
    page.wait_for_function(f"document.querySelector('#workspace')?.dataset.assignment === '{first}'")
    assert not Judgment.objects.filter(assignment_id=first).exists()
    _judge(page, {"vq": "B", "mq": "A", "ta": "tie"})
    page.wait_for_function(f"document.querySelector('#workspace')?.dataset.assignment !== '{first}'")
    assert "1 of 2" in page.inner_text("#quota-state")
    _judge(page, {"vq": "A", "mq": "B", "ta": "A"})

    # the quota: the completion code and the platform's link
    page.wait_for_selector("#completion-code")
    assert page.inner_text("#completion-code") == "JOURNEY-OK"
    assert page.get_attribute("#completion-link", "href") == "https://platform.example/complete?cc=JOURNEY-OK"
    page.screenshot(path=str(shots / "campaign-complete-laptop.png"), full_page=True)
    # coming back with the same link: the same account, still done
    page.goto(f"{live_server.url}/c/journey/?PROLIFIC_PID=P-GOOD&STUDY_ID=study-1&SESSION_ID=session-2")
    page.wait_for_selector("#completion-code")
    assert not problems, problems
    context.close()

    # the report: their judgments and the active time the page measured
    out = Path(settings.VAR_DIR) / "journey-report.csv"
    call_command("campaign_report", "journey", "--output", str(out))
    row = next(r for r in csv.DictReader(out.open()) if r["external_id"] == "P-GOOD")
    assert row["judgments"] == "2" and row["qualification"] == "passed" and row["session_id"] == "session-2"
    assert float(row["active_minutes"]) > 0
    stored = Judgment.objects.filter(annotator=member.user)
    assert stored.count() == 4 and all(j.active_ms and j.active_ms > 0 for j in stored)


def test_a_participant_who_fails_qualification_is_stopped_with_a_clear_page(browser, live_server, journey, settings):
    context, page, problems = _start(browser, live_server, "P-BAD", PHONE)  # on a phone
    for _ in range(2):
        _judge(page, _wrong(GOLD))
        page.wait_for_selector("#qualification-feedback")
        page.keyboard.press("Enter")
    page.wait_for_selector("#campaign-status[data-status=failed]")
    assert "not a match" in page.inner_text("#campaign-status")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shots = Path(settings.VAR_DIR) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "campaign-failed-phone.png"), full_page=True)
    page.goto(f"{live_server.url}/")  # and stays stopped
    page.wait_for_selector("#campaign-status[data-status=failed]")
    member = CampaignMember.objects.get(external_id="P-BAD")
    assert member.status == "failed" and not Assignment.objects.filter(annotator=member.user, state="active").exists()
    assert not problems, problems
    context.close()
