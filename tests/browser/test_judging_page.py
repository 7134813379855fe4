"""The judging page in headless Chromium: log in, play, judge three pairs with the keyboard only."""

import json
import re
from pathlib import Path

import pytest

from annotate.models import Judgment
from annotate.services.ingest import pairs_import
from tests.conftest import render_clip

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}
# a glyph used as an icon (▶ ◀ ⏸ ‹ › ✓ …) shows as a box where the font lacks it; icons are inline SVG instead
GLYPH_ICON = re.compile("[\u2039\u203a\u2190-\u21ff\u2300-\u23ff\u25a0-\u25ff\u2700-\u27bf\U0001f300-\U0001faff]")
LONG_PROMPT = (
    "A golden retriever in a red raincoat runs along a wet cobblestone street at dusk, splashing through puddles "
    "that reflect neon shop signs, while a tram passes slowly behind it from left to right and umbrellas bob in "
    "the crowd; the camera tracks the dog at knee height, then rises to show the whole street, the clouds "
    "breaking and the first stars appearing over the rooftops. Rain keeps falling throughout, the dog's ears "
    "flap with each stride, and the reflections ripple realistically where its paws strike the water. "
) * 2


@pytest.fixture
def three_pairs(transactional_db, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    rows = []
    for i, (source_a, source_b) in enumerate(
        [("testsrc2", "smptebars"), ("rgbtestsrc", "testsrc"), ("yuvtestsrc", "pal75bars")]
    ):
        render_clip(tmp_path / f"{i}a.mp4", seconds=1.0, source=source_a, size="96x64")
        render_clip(tmp_path / f"{i}b.mp4", seconds=1.3, source=source_b, size="96x64")
        rows.append({"prompt": f"pair number {i} <b>bold?</b>", "video_a": f"{i}a.mp4", "video_b": f"{i}b.mp4"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = pairs_import(manifest=tmp_path / "m.jsonl")
    assert report.pairs_created == 3


@pytest.fixture
def long_prompt_pair(transactional_db, tmp_path, settings):
    """One pair of 16:9 clips (as generated videos are) for a very long prompt."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    render_clip(tmp_path / "a.mp4", seconds=1.0, source="testsrc2", size="320x180")
    render_clip(tmp_path / "b.mp4", seconds=1.2, source="smptehdbars", size="320x180")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"prompt": LONG_PROMPT, "video_a": "a.mp4", "video_b": "b.mp4"}) + "\n"
    )
    assert pairs_import(manifest=tmp_path / "m.jsonl").pairs_created == 1


def _screenshots(settings) -> Path:
    folder = Path(settings.VAR_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _watch_for_problems(page) -> list[str]:
    """Console errors, uncaught exceptions, failed requests and error responses (a missing favicon included)."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    return problems


def _log_in(page, url, username, password):
    page.goto(f"{url}/login/?next=/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#workspace[data-assignment]")
    page.wait_for_function(
        "document.querySelector('#video-left').readyState >= 1"
        " && document.querySelector('#video-right').readyState >= 1"
    )


def _box(page, selector):
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not rendered"
    return box


def _page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


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
    screen = {
        "q": "left",
        "w": "tie",
        "e": "right",
        "a": "left",
        "s": "tie",
        "d": "right",
        "z": "left",
        "x": "tie",
        "c": "right",
    }
    for plan in plans:
        assignment = int(page.get_attribute("#workspace", "data-assignment"))
        page.wait_for_function(
            "document.querySelector('#video-left').readyState >= 1"
            " && document.querySelector('#video-right').readyState >= 1"
        )
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


@pytest.mark.parametrize("height", [768, 680])
def test_the_whole_judging_task_fits_a_laptop_screen(
    browser, live_server, long_prompt_pair, make_user, settings, height
):
    """At 1366 px wide (768 px tall, and 680 px: a laptop's browser chrome takes ~90 px), both videos, the three
    label rows and Submit are on screen at once, unscrolled, even with a long prompt."""
    viewport = {"width": 1366, "height": height}
    make_user("laptop", password="correct horse battery")
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    problems = _watch_for_problems(page)
    _log_in(page, live_server.url, "laptop", "correct horse battery")
    assert page.evaluate("[window.scrollX, window.scrollY]") == [0, 0]
    assert _page_width(page) <= viewport["width"]
    for selector in (
        "#video-left",
        "#video-right",
        "fieldset.row[data-row=vq]",
        "fieldset.row[data-row=mq]",
        "fieldset.row[data-row=ta]",
        "#submit-judgment",
        "#play-toggle",
    ):
        box = _box(page, selector)
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], (selector, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], (selector, box)
    left, right = _box(page, "#video-left"), _box(page, "#video-right")
    assert abs(left["y"] - right["y"]) < 1 and left["x"] + left["width"] <= right["x"]
    # the videos are still big enough to judge: at least 40 % of the screen's height each
    assert min(left["height"], right["height"]) >= 0.4 * viewport["height"], (left, right)
    # the long prompt scrolls inside its own box (whole, not cut) instead of pushing Submit down
    assert page.evaluate(
        "(p => p.scrollHeight > p.clientHeight && getComputedStyle(p).overflowY === 'auto')"
        "(document.querySelector('#prompt-text'))"
    )
    assert page.inner_text("#prompt-text").strip() == LONG_PROMPT.strip()
    # ... and says so: its last line fades while there is more below, and stops fading at the end
    assert page.locator("#prompt-text.more-below").count() == 1
    page.screenshot(path=str(_screenshots(settings) / f"judge-1366x{height}.png"))
    page.eval_on_selector("#prompt-text", "p => p.scrollTo(0, p.scrollHeight)")
    page.wait_for_function("!document.querySelector('#prompt-text').classList.contains('more-below')")
    # play/pause is an SVG icon, and no glyph stands in for an icon anywhere on the page
    assert page.locator("#play-toggle svg.icon-play").is_visible()
    assert not page.locator("#play-toggle svg.icon-pause").is_visible()
    assert not GLYPH_ICON.search(page.inner_text("body")), GLYPH_ICON.findall(page.inner_text("body"))
    page.click("#play-toggle")
    page.wait_for_function("window.VidPref.player.watched.size === 2", timeout=20000)
    assert page.evaluate("window.VidPref.player.playing")  # looping
    assert page.locator("#play-toggle svg.icon-pause").is_visible()
    assert not page.locator("#play-toggle svg.icon-play").is_visible()
    page.keyboard.press("Space")
    assert page.locator("#play-toggle svg.icon-play").is_visible()
    assert page.locator("#watched-state svg").is_visible()
    assert not GLYPH_ICON.search(page.inner_text("body")), GLYPH_ICON.findall(page.inner_text("body"))
    assert page.evaluate("[window.scrollX, window.scrollY]") == [0, 0]
    assert problems == []
    context.close()


def test_a_phone_compares_side_by_side_without_sideways_scrolling(
    browser, live_server, long_prompt_pair, make_user, settings
):
    make_user("phone", password="correct horse battery")
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    problems = _watch_for_problems(page)
    page.goto(f"{live_server.url}/login/")
    assert _page_width(page) <= PHONE["width"], "the login page scrolls sideways"
    page.screenshot(path=str(_screenshots(settings) / "login-390x844.png"))
    _log_in(page, live_server.url, "phone", "correct horse battery")
    assert _page_width(page) <= PHONE["width"], "the judging page scrolls sideways"
    left, right = _box(page, "#video-left"), _box(page, "#video-right")
    assert abs(left["y"] - right["y"]) < 1, "the two videos are not side by side"
    assert left["width"] <= PHONE["width"] / 2 and right["width"] <= PHONE["width"] / 2
    assert left["x"] >= 0 and left["x"] + left["width"] <= right["x"] and right["x"] + right["width"] <= PHONE["width"]
    assert left["width"] >= 0.4 * PHONE["width"], "the videos are too small to compare"
    # touch targets: every choice, Submit and the playback buttons at least 40 px each way
    targets = page.locator("fieldset.row .choices span, #submit-judgment, .controls button")
    assert targets.count() == 9 + 1 + 4
    for i in range(targets.count()):
        box = targets.nth(i).bounding_box()
        assert box["height"] >= 40 and box["width"] >= 40, (targets.nth(i).inner_text(), box)
    page.screenshot(path=str(_screenshots(settings) / "judge-390x844.png"))
    page.screenshot(path=str(_screenshots(settings) / "judge-390x844-full.png"), full_page=True)
    assert not GLYPH_ICON.search(page.inner_text("body")), GLYPH_ICON.findall(page.inner_text("body"))
    # judged by touch alone
    assignment = page.get_attribute("#workspace", "data-assignment")
    page.tap("#play-toggle")
    page.wait_for_function("window.VidPref.player.watched.size === 2", timeout=20000)
    for row, choice in (("vq", "left"), ("mq", "tie"), ("ta", "right")):
        page.tap(f"fieldset.row[data-row={row}] input[value={choice}] + span")
    assert page.is_enabled("#submit-judgment")
    page.tap("#submit-judgment")
    page.wait_for_function(f"document.querySelector('#workspace')?.dataset.assignment !== '{assignment}'")
    page.wait_for_selector("#no-more-pairs")
    assert _page_width(page) <= PHONE["width"]
    for path in ("/guidelines/", "/history/"):
        page.goto(f"{live_server.url}{path}")
        assert _page_width(page) <= PHONE["width"], f"{path} scrolls sideways"
        page.screenshot(path=str(_screenshots(settings) / f"{path.strip('/')}-390x844.png"), full_page=True)
    assert problems == []
    context.close()


def test_the_favicon_is_served_at_its_link_and_at_favicon_ico(browser, live_server, make_user):
    make_user("icon", password="correct horse battery")
    page = browser.new_page()
    problems = _watch_for_problems(page)
    page.goto(f"{live_server.url}/login/")
    href = page.get_attribute("link[rel=icon]", "href")
    assert href and href.endswith(".svg")
    for url in (f"{live_server.url}{href}", f"{live_server.url}/favicon.ico"):
        response = page.request.get(url)
        assert response.ok and response.headers["content-type"].startswith("image/svg+xml"), (url, response.status)
        assert b"<svg" in response.body()
    assert problems == []
