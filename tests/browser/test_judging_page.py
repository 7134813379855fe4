"""The judging page in headless Chromium: log in, play, judge three pairs with the keyboard only."""

import json
import shutil
from pathlib import Path

import pytest

from annotate.models import Judgment
from annotate.services.ingest import pairs_import
from tests.conftest import render_clip

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def three_pairs(transactional_db, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    rows = []
    for i, (source_a, source_b) in enumerate([("testsrc2", "smptebars"), ("rgbtestsrc", "testsrc"), ("yuvtestsrc", "pal75bars")]):
        render_clip(tmp_path / f"{i}a.mp4", seconds=1.0, source=source_a, size="96x64")
        render_clip(tmp_path / f"{i}b.mp4", seconds=1.3, source=source_b, size="96x64")
        rows.append({"prompt": f"pair number {i} <b>bold?</b>", "video_a": f"{i}a.mp4", "video_b": f"{i}b.mp4"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = pairs_import(manifest=tmp_path / "m.jsonl")
    assert report.pairs_created == 3


def test_keyboard_only_judging_of_three_pairs(browser, live_server, three_pairs, make_user, settings):
    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    user = make_user("keyboard", password="correct horse battery")
    page = browser.new_page()
    page.goto(f"{live_server.url}/")
    page.fill("input[name=username]", "keyboard")
    page.fill("input[name=password]", "correct horse battery")
    page.keyboard.press("Enter")
    page.wait_for_selector("#workspace[data-assignment]")
    # the prompt is shown escaped, not interpreted
    assert "<b>bold?</b>" in page.inner_text("#prompt-text")
    chosen = []
    plans = [("q", "s", "c"), ("e", "a", "x"), ("w", "d", "z")]
    screen = {"q": "left", "w": "tie", "e": "right", "a": "left", "s": "tie", "d": "right", "z": "left", "x": "tie", "c": "right"}
    for plan in plans:
        assignment = int(page.get_attribute("#workspace", "data-assignment"))
        page.wait_for_function("document.querySelector('#video-left').readyState >= 1 && document.querySelector('#video-right').readyState >= 1")
        assert page.is_disabled("#submit-judgment")
        page.keyboard.press("Space")
        page.wait_for_function("window.VidPref.player.watched.size === 2", timeout=20000)
        # the two videos stay within one frame of each other while playing
        drift = page.evaluate("Math.max(...window.VidPref.player.drift())")
        assert drift <= 1 / 12 + 1e-6
        page.keyboard.press("Space")
        page.keyboard.press(".")
        for key in plan:
            page.keyboard.press(key)
        if not chosen:
            page.screenshot(path=str(Path(settings.VAR_DIR) / "test" / "judging-page.png"), full_page=True)
        assert page.is_enabled("#submit-judgment")
        page.keyboard.press("Enter")
        page.wait_for_function(f"document.querySelector('#workspace')?.dataset.assignment !== '{assignment}'")
        chosen.append((assignment, [screen[k] for k in plan]))
    page.wait_for_selector("#no-more-pairs")
    assert "3 in all" in page.inner_text("#progress-count")
    for assignment, (vq, mq, ta) in chosen:
        judgment = Judgment.objects.get(assignment_id=assignment, annotator=user)
        to_ab = {"left": "A" if judgment.left_is_a else "B", "right": "B" if judgment.left_is_a else "A", "tie": "TIE"}
        assert (judgment.vq, judgment.mq, judgment.ta) == (to_ab[vq], to_ab[mq], to_ab[ta])
        assert judgment.duration_ms and judgment.duration_ms > 0 and judgment.watched_ms is not None
    page.screenshot(path=str(Path(settings.VAR_DIR) / "test" / "judging-done.png"))
