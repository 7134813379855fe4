"""The judging page's tools for long sessions, in headless Chromium at 1366×768 and on a 390×844 phone: the
scrubber over both videos (frame-accurate), flicker and the larger view, the "?" keys overlay, active time
(posted and stored), the break reminder, undo and the quota. Screenshots: var/screenshots/judging-tools-*.png."""

import json
import re
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from django.template.loader import render_to_string

from annotate.models import Assignment, Judgment
from annotate.selectors import lease_sides
from annotate.services.ingest import pairs_import
from tests.browser.conftest import LAPTOP
from tests.browser.test_judging_page import GLYPH_ICON, PHONE, _watch_for_problems
from tests.conftest import render_clip

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery"
SIZES = {"laptop": LAPTOP, "phone": PHONE}
FPS = 12
# every key the page answers to besides the label rows' own (qwe asd zxc): none may be a row's key
TOOL_KEYS = {"r", "l", "f", "g", "v", "n", "u"}
OVERLAY_KEYS = ["Space", ",", ".", "Shift", "Home", "End", "R", "L", "F", "G", "V", "Enter", "N", "U", "?", "Esc"]

STATE = """() => {
  const p = window.VidPref.player, [l, r] = p.videos, s = document.querySelector('#scrubber');
  return {left: l.currentTime, right: r.currentTime, leftEnd: l.duration, rightEnd: r.duration, fps: p.fps,
          playing: p.playing, seeking: l.seeking || r.seeking, scrub: parseFloat(s.value), max: parseFloat(s.max),
          frames: [p.frameCount(l), p.frameCount(r)]};
}"""


@pytest.fixture
def two_pairs(transactional_db, tmp_path, settings):
    """Two pairs of 16:9 clips with whole frames at 12 fps: 12 and 18 frames (1.0 s and 1.5 s)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    rows = []
    for i, (source_a, source_b) in enumerate([("testsrc2", "smptehdbars"), ("rgbtestsrc", "testsrc")]):
        render_clip(tmp_path / f"{i}a.mp4", seconds=1.0, source=source_a, size="320x180", rate=FPS)
        render_clip(tmp_path / f"{i}b.mp4", seconds=1.5, source=source_b, size="320x180", rate=FPS)
        rows.append(
            {"prompt": f"tools pair {i}: a red kite over a beach", "video_a": f"{i}a.mp4", "video_b": f"{i}b.mp4"}
        )
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pairs_import(manifest=tmp_path / "m.jsonl").pairs_created == 2


def _screenshot(page, settings, name: str) -> None:
    folder = Path(settings.VAR_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"judging-tools-{name}.png"))


def _open(browser, live_server, make_user, size: str, username: str = "tools"):
    make_user(username, password=PASSWORD)
    if size == "phone":
        context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    else:
        context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    page.problems = _watch_for_problems(page)
    page.goto(f"{live_server.url}/login/?next=/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    _wait_for_pair(page)
    return context, page


def _wait_for_pair(page):
    page.wait_for_selector("#workspace[data-assignment]")
    page.wait_for_function(
        "document.querySelector('#video-left').readyState >= 1"
        " && document.querySelector('#video-right').readyState >= 1"
        " && !document.querySelector('#scrubber').disabled"
    )


def _press_or_tap(page, size: str, key: str, selector: str) -> None:
    """The laptop uses the key, the phone taps the button for it."""
    if size == "phone":
        page.tap(selector)
    else:
        page.keyboard.press(key)


def _settled(page) -> dict:
    page.wait_for_function(
        "(() => { const [l, r] = window.VidPref.player.videos; return !l.seeking && !r.seeking; })()"
    )
    return page.evaluate(STATE)


def _mid_frame(t: float) -> int:
    """The frame n of a time that is the middle of a frame, (n + 0.5) / fps; fails for any other time."""
    n = t * FPS - 0.5
    assert abs(n - round(n)) < 1e-3, f"{t} s is not the middle of a frame at {FPS} fps"
    return round(n)


def _assert_same_frame(state: dict) -> int:
    """Both videos on the middle of one frame (a shorter video waits on its own last frame). The frame."""
    master, follower = ("left", "right") if state["leftEnd"] >= state["rightEnd"] else ("right", "left")
    frame = _mid_frame(state[master])
    follower_last = state["frames"][0 if follower == "left" else 1] - 1
    assert _mid_frame(state[follower]) == min(frame, follower_last), state
    return frame


def _box(page, selector) -> dict:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not rendered"
    return box


def _overlap(a: dict, b: dict) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"] + 0.5
        or b["x"] + b["width"] <= a["x"] + 0.5
        or a["y"] + a["height"] <= b["y"] + 0.5
        or b["y"] + b["height"] <= a["y"] + 0.5
    )


def _no_sideways_scroll(page, size):
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]


def _judge_with_keys(page) -> str:
    """Watch both, choose with the keys, submit; returns the assignment that was judged."""
    assignment = page.get_attribute("#workspace", "data-assignment")
    page.keyboard.press("Space")
    page.wait_for_function("window.VidPref.player.watched.size === 2", timeout=20000)
    for key in ("q", "s", "c"):
        page.keyboard.press(key)
    assert page.is_enabled("#submit-judgment")
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelector('#workspace')?.dataset.assignment !== '{assignment}'")
    return assignment


@pytest.mark.parametrize("size", ["laptop", "phone"])
def test_the_scrubber_and_the_keys_put_both_videos_on_one_frame(
    browser, live_server, two_pairs, make_user, settings, size
):
    context, page = _open(browser, live_server, make_user, size)
    state = page.evaluate(STATE)
    assert state["fps"] == FPS and sorted(state["frames"]) == [12, 18]
    assert state["max"] == pytest.approx(max(state["leftEnd"], state["rightEnd"]))  # spans the longer video
    scrubber = _box(page, "#scrubber")
    # the scrubber lies under both videos, across (nearly) their whole width
    left, right = _box(page, "#video-left"), _box(page, "#video-right")
    assert scrubber["y"] >= max(left["y"] + left["height"], right["y"] + right["height"]) - 1
    assert scrubber["width"] >= 0.7 * (
        max(left["x"] + left["width"], right["x"] + right["width"]) - min(left["x"], right["x"])
    )

    for share in (0.4, 0.2, 0.55):
        position = {"x": scrubber["width"] * share, "y": scrubber["height"] / 2}
        if size == "phone":
            page.tap("#scrubber", position=position)
        else:
            page.click("#scrubber", position=position)
        state = _settled(page)
        frame = _assert_same_frame(state)
        assert state["left"] == pytest.approx(state["right"])  # inside both videos: the very same time
        # the frame under the pointer (the thumb's half width makes the track a little shorter than the box)
        assert abs(frame - share * state["max"] * FPS) <= 2, (share, state)
        assert not state["playing"] and state["scrub"] == pytest.approx(state["left"])

    page.keyboard.press("Home")
    assert _assert_same_frame(_settled(page)) == 0
    page.keyboard.press("Shift+ArrowRight")  # one second on: frame 12, past the shorter video's 12 frames
    state = _settled(page)
    assert _assert_same_frame(state) == 12
    page.keyboard.press("Shift+ArrowLeft")
    assert _assert_same_frame(_settled(page)) == 0
    page.keyboard.press(".")
    page.keyboard.press("ArrowRight")
    assert _assert_same_frame(_settled(page)) == 2
    page.keyboard.press(",")
    assert _assert_same_frame(_settled(page)) == 1
    page.keyboard.press("End")
    assert _assert_same_frame(_settled(page)) == 17
    assert page.inner_text("#frame-counter") == "18 / 18"
    # a scrubbed end is not a watched end: "watched" needs playing through
    assert page.evaluate("window.VidPref.player.watched.size") == 0

    # the scrubber follows playback
    page.keyboard.press("Home")
    page.keyboard.press("Space")
    page.wait_for_function("parseFloat(document.querySelector('#scrubber').value) > 0.3")
    page.keyboard.press("Space")
    state = _settled(page)
    _assert_same_frame(state)
    assert state["scrub"] == pytest.approx(max(state["left"], state["right"]), abs=1e-6)
    _no_sideways_scroll(page, size)
    _screenshot(page, settings, f"{size}-scrubbed")
    assert page.problems == []
    context.close()


@pytest.mark.parametrize("size", ["laptop", "phone"])
def test_flicker_shows_one_side_at_a_time_and_the_larger_view_grows_the_player(
    browser, live_server, two_pairs, make_user, settings, size
):
    context, page = _open(browser, live_server, make_user, size)
    viewport = SIZES[size]
    before = {side: _box(page, f"#video-{side}") for side in ("left", "right")}
    page.keyboard.press("Space")
    page.wait_for_function("window.VidPref.player.playing")

    _press_or_tap(page, size, "f", "#flicker-toggle")
    page.wait_for_selector(".player.flicker")
    assert page.is_visible("#video-left") and not page.is_visible("#video-right")
    assert page.inner_text("#flicker-side .side-name") == "Left" and page.is_visible("#flicker-side")
    assert page.get_attribute("#flicker-toggle", "aria-pressed") == "true"
    # one place: the two videos lie on top of each other, and both keep playing
    left, right = _box(page, "#video-left"), _box(page, "#video-right")
    assert left["y"] == pytest.approx(right["y"], abs=1)
    assert left["x"] + left["width"] / 2 == pytest.approx(right["x"] + right["width"] / 2, abs=1)
    assert page.evaluate("window.VidPref.player.videos.every(v => !v.paused)")
    assert left["width"] >= before["left"]["width"] - 1  # never smaller than side by side
    _screenshot(page, settings, f"{size}-flicker-left")

    _press_or_tap(page, size, "g", "#flicker-side")
    page.wait_for_function("document.querySelector('#flicker-side .side-name').textContent === 'Right'")
    assert page.is_visible("#video-right") and not page.is_visible("#video-left")
    assert page.evaluate("window.VidPref.player.videos.every(v => !v.paused)")
    _screenshot(page, settings, f"{size}-flicker-right")
    if size == "phone":  # a tap on the video itself switches too
        page.tap("#video-right")
        page.wait_for_function("document.querySelector('#flicker-side .side-name').textContent === 'Left'")
        assert page.is_visible("#video-left") and not page.is_visible("#video-right")
    _press_or_tap(page, size, "f", "#flicker-toggle")
    page.wait_for_selector(".player:not(.flicker)")
    assert page.is_visible("#video-left") and page.is_visible("#video-right") and not page.is_visible("#flicker-side")
    # g does nothing outside flicker mode
    page.keyboard.press("g")
    assert page.is_visible("#video-left") and page.is_visible("#video-right")

    _press_or_tap(page, size, "v", "#large-toggle")
    page.wait_for_selector("body.view-large")
    player = _box(page, ".player")
    assert player["x"] == pytest.approx(0, abs=1) and player["width"] == pytest.approx(viewport["width"], abs=1)
    assert player["height"] <= viewport["height"] + 1  # as much height as fits, not more
    left, right = _box(page, "#video-left"), _box(page, "#video-right")
    if size == "phone":  # portrait: stacked, each the screen's width
        assert left["y"] + left["height"] <= right["y"] + 1
        assert min(left["width"], right["width"]) >= viewport["width"] - 2
    else:
        assert abs(left["y"] - right["y"]) < 1 and left["x"] + left["width"] <= right["x"]
        assert left["width"] >= before["left"]["width"] and left["height"] >= before["left"]["height"]
    # the player is scrolled into view; the rows are below, reachable, and the keys still judge
    assert page.evaluate("document.querySelector('.player').getBoundingClientRect().top") == pytest.approx(
        0, abs=2
    ) or (page.evaluate("window.scrollY + innerHeight") >= page.evaluate("document.documentElement.scrollHeight") - 2)
    _no_sideways_scroll(page, size)
    _screenshot(page, settings, f"{size}-larger")
    page.keyboard.press("f")  # flicker in the larger view: one video over the whole width
    page.wait_for_selector(".player.flicker")
    flicker_large = _box(page, "#video-left")
    assert flicker_large["width"] >= left["width"] - 1
    assert (
        flicker_large["y"] + flicker_large["height"] <= _box(page, ".scrub")["y"] + 1
    )  # over the scrubber, not under it
    _screenshot(page, settings, f"{size}-larger-flicker")
    page.keyboard.press("f")
    page.locator("#submit-judgment").scroll_into_view_if_needed()
    assert page.is_visible("#submit-judgment")
    _press_or_tap(page, size, "v", "#large-toggle")
    page.wait_for_selector("body:not(.view-large)")
    after = {side: _box(page, f"#video-{side}") for side in ("left", "right")}
    for side in ("left", "right"):  # back as it was
        assert after[side]["width"] == pytest.approx(before[side]["width"], abs=1), side
    if size == "laptop":  # and the whole task on one screen again, unscrolled
        assert page.evaluate("window.scrollY") == 0
        submit = _box(page, "#submit-judgment")
        assert submit["y"] + submit["height"] <= viewport["height"]
    assert not GLYPH_ICON.search(page.inner_text("body")), GLYPH_ICON.findall(page.inner_text("body"))
    assert page.problems == []
    context.close()


@pytest.mark.parametrize("size", ["laptop", "phone"])
def test_the_keys_overlay_lists_every_key_and_no_key_is_taken_twice(
    browser, live_server, two_pairs, make_user, settings, size
):
    context, page = _open(browser, live_server, make_user, size)
    row_keys = page.eval_on_selector_all("input[type=radio][data-key]", "inputs => inputs.map(i => i.dataset.key)")
    assert sorted(row_keys) == sorted("qweasdzxc") and not TOOL_KEYS & set(row_keys)
    assert page.is_visible("#keys-button") and "Keys" in page.inner_text("#keys-button")

    _press_or_tap(page, size, "?", "#keys-button")
    page.wait_for_selector("#keyboard-help[open]")
    help_box = _box(page, "#keyboard-help")
    assert help_box["x"] >= 0 and help_box["x"] + help_box["width"] <= SIZES[size]["width"]
    listed = page.eval_on_selector_all(
        "#keyboard-help kbd", "keys => keys.map(k => k.textContent.trim() || k.getAttribute('aria-label'))"
    )
    for key in OVERLAY_KEYS + [k.upper() for k in row_keys] + ["Left arrow", "Right arrow"]:
        assert key in listed, f"{key} is not in the keys overlay"
    text = page.inner_text("#keyboard-help")
    for words in ("play / pause", "frame", "1 s", "flicker", "other side", "larger view", "undo", "submit", "comment"):
        assert words in text, words
    assert not GLYPH_ICON.search(text), GLYPH_ICON.findall(text)
    _screenshot(page, settings, f"{size}-keys")
    # the overlay is modal: a row's key does not choose while it is open
    page.keyboard.press("q")
    assert page.eval_on_selector("input[data-key=q]", "i => i.checked") is False
    page.keyboard.press("Escape")
    page.wait_for_selector("#keyboard-help", state="hidden")
    page.keyboard.press("?")
    page.wait_for_selector("#keyboard-help[open]")
    page.keyboard.press("?")
    page.wait_for_selector("#keyboard-help", state="hidden")
    # keys do nothing while typing a comment; N opens it
    page.keyboard.press("n")
    page.wait_for_selector(".extras[open] textarea:focus")
    page.keyboard.type("fvg?qu")
    assert page.input_value("textarea[name=comment]") == "fvg?qu"
    assert not page.is_visible("#keyboard-help") and page.locator(".player.flicker").count() == 0
    assert page.eval_on_selector("input[data-key=q]", "i => i.checked") is False
    page.keyboard.press("Escape")
    page.keyboard.press("q")
    assert page.eval_on_selector("input[data-key=q]", "i => i.checked") is True
    assert page.problems == []
    context.close()


def test_active_time_is_posted_stored_and_stops_while_the_page_is_hidden(browser, live_server, two_pairs, make_user):
    context, page = _open(browser, live_server, make_user, "laptop")
    user_id = Assignment.objects.get(pk=page.get_attribute("#workspace", "data-assignment")).annotator_id
    page.keyboard.press("Space")
    page.wait_for_function("window.VidPref.player.watched.size === 2", timeout=20000)
    page.wait_for_function("window.VidPref.activity().activeMs > 500")
    # hidden (another tab): no active time, though the videos play on
    page.evaluate(
        "() => { Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )
    hidden_from = page.evaluate("window.VidPref.activity().activeMs")
    page.wait_for_timeout(1500)
    assert page.evaluate("window.VidPref.player.playing")
    assert page.evaluate("window.VidPref.activity().activeMs") - hidden_from < 100
    page.evaluate("() => { delete document.visibilityState; document.dispatchEvent(new Event('visibilitychange')); }")
    page.wait_for_timeout(600)
    assert page.evaluate("window.VidPref.activity().activeMs") - hidden_from >= 400
    stretch = page.evaluate("window.VidPref.activity().stretchMs")

    for key in ("q", "s", "c"):
        page.keyboard.press(key)
    assignment = page.get_attribute("#workspace", "data-assignment")
    with page.expect_request(lambda r: r.method == "POST" and "/judge/" in r.url) as posted:
        page.keyboard.press("Enter")
    body = {k: v[0] for k, v in parse_qs(posted.value.post_data).items()}
    page.wait_for_function(f"document.querySelector('#workspace')?.dataset.assignment !== '{assignment}'")
    active, duration = int(body["active_ms"]), int(body["duration_ms"])
    assert 500 < active <= duration + 50, body
    # Judgment.active_ms is the backend's field (annotate/models.py); the posted value is what it stores
    judgment = Judgment.objects.get(assignment_id=assignment, annotator_id=user_id)
    assert judgment.active_ms == active
    # the next pair starts from zero; the stretch since the last break goes on across the swap
    _wait_for_pair(page)
    assert page.evaluate("window.VidPref.activity().activeMs") < active
    assert page.evaluate("window.VidPref.activity().stretchMs") >= stretch
    # ... and across a reload (sessionStorage)
    page.wait_for_timeout(1100)  # one tick writes it
    stretch = page.evaluate("window.VidPref.activity().stretchMs")
    page.reload()
    _wait_for_pair(page)
    assert page.evaluate("window.VidPref.activity().stretchMs") >= stretch
    assert page.problems == []
    context.close()


@pytest.mark.parametrize("size", ["laptop", "phone"])
def test_the_break_reminder_comes_after_the_active_stretch_and_is_dismissed(
    browser, live_server, two_pairs, make_user, settings, size
):
    context, page = _open(browser, live_server, make_user, size)
    assert page.get_attribute("#workspace", "data-break-every-min") is not None
    assert page.locator("#break-reminder:not([hidden])").count() == 0
    page.evaluate("document.querySelector('#workspace').dataset.breakEveryMin = '0.01'")  # 0.6 s
    page.mouse.move(20, 300)
    page.wait_for_selector("#break-reminder:not([hidden])", timeout=5000)
    assert page.get_attribute("#break-reminder", "role") == "status"
    assert "break" in page.inner_text("#break-reminder")
    reminder = _box(page, "#break-reminder")
    if size == "laptop":  # in the top bar: over nothing of the task
        topbar = _box(page, ".topbar")
        assert (
            reminder["y"] >= topbar["y"] and reminder["y"] + reminder["height"] <= topbar["y"] + topbar["height"] + 0.5
        )
        for selector in (".topbar nav", ".logout", "#workspace"):
            assert not _overlap(reminder, _box(page, selector)), selector
    assert reminder["x"] >= 0 and reminder["x"] + reminder["width"] <= SIZES[size]["width"]
    _screenshot(page, settings, f"{size}-break")
    # non-blocking: the keys still work under it
    page.keyboard.press("w")
    assert page.eval_on_selector("input[data-key=w]", "i => i.checked") is True
    page.keyboard.press("Escape")
    page.wait_for_selector("#break-reminder[hidden]", state="attached")
    assert page.evaluate("window.VidPref.activity().stretchMs") < 1500  # a new stretch
    page.mouse.move(30, 310)
    page.wait_for_selector("#break-reminder:not([hidden])", timeout=5000)  # after the next stretch, again
    if size == "phone":
        page.tap("#break-reminder [data-action=dismiss-break]")
    else:
        page.click("#break-reminder [data-action=dismiss-break]")
    page.wait_for_selector("#break-reminder[hidden]", state="attached")
    page.evaluate("document.querySelector('#workspace').dataset.breakEveryMin = '0'")  # off
    page.mouse.move(40, 320)
    page.wait_for_timeout(2200)
    assert page.locator("#break-reminder:not([hidden])").count() == 0
    assert page.problems == []
    context.close()


@pytest.mark.parametrize("size", ["laptop", "phone"])
def test_undo_brings_the_pair_back_and_the_quota_counts(browser, live_server, two_pairs, make_user, settings, size):
    from annotate.services.campaigns import default_campaign

    campaign = default_campaign()
    campaign.quota = 5
    campaign.save()
    context, page = _open(browser, live_server, make_user, size)
    assert page.inner_text("#progress-count") == "0 judged today · 0 in all"
    assert page.inner_text("#quota-state").startswith("0 of 5")
    assert page.get_attribute("#quota-progress", "max") == "5" and page.get_attribute("#quota-progress", "value") == "0"
    assert page.locator("#undo-form").count() == 0
    page.keyboard.press("u")  # nothing to undo: nothing happens
    first_prompt = page.inner_text("#prompt-text")
    first = _judge_with_keys(page)
    _wait_for_pair(page)
    assert page.inner_text("#progress-count") == "1 judged today · 1 in all"
    assert page.inner_text("#quota-state").startswith("1 of 5")
    assert page.get_attribute("#quota-progress", "value") == "1"
    assert page.is_visible("#undo-button") and " ".join(page.inner_text("#undo-button").split()).startswith(
        "Undo last judgment"
    )
    # the time left to undo counts down (the backend's window is minutes: m:ss; under a minute: "N s")
    assert re.fullmatch(r"(\d+:\d\d|\d+ s) left", page.inner_text("#undo-left"))
    assert not _overlap(_box(page, "#undo-button"), _box(page, "#submit-judgment"))
    _no_sideways_scroll(page, size)
    if size == "laptop":  # Undo shares Submit's line; everything still on one screen
        assert page.evaluate("window.scrollY") == 0
        for selector in ("#undo-button", "form.skip button", "#submit-judgment"):
            box = _box(page, selector)
            assert box["y"] + box["height"] <= LAPTOP["height"] and box["x"] + box["width"] <= LAPTOP["width"], selector
        assert not _overlap(_box(page, "#undo"), _box(page, ".extras summary"))
        assert not _overlap(_box(page, "#undo"), _box(page, "form.skip"))
    _screenshot(page, settings, f"{size}-undo")
    action = page.get_attribute("#undo-form", "action")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith(action)) as posted:
        _press_or_tap(page, size, "u", "#undo-button")
    assert posted.value.headers.get("hx-request") == "true"  # through htmx: the workspace is swapped, not the page
    page.wait_for_function(f"document.querySelector('#workspace')?.dataset.assignment === '{first}'")
    _wait_for_pair(page)
    assert page.inner_text("#prompt-text") == first_prompt
    assert not Judgment.objects.filter(assignment_id=first).exists()
    assert page.inner_text("#quota-state").startswith("0 of 5")
    assert page.locator("#undo-form").count() == 0
    assert page.problems == []
    context.close()


def _workspace_with_everything(page, user, settings) -> str:
    """The workspace fragment as the view renders it for a qualifying person in a named campaign with a quota,
    just after a judgment that can still be undone (states the backend reaches through longer flows)."""
    from annotate.views import ROWS

    lease = Assignment.objects.get(annotator=user, state="active")
    left, right = lease_sides(lease)
    context = {
        "lease": lease,
        "left": left,
        "right": right,
        "progress": {"today": 7, "total": 212, "done": 37, "quota": 120},
        "rows": ROWS,
        "form": None,
        "require_full_view": True,
        "heartbeat_s": 200,
        "campaign": type("Campaign", (), {"name": "Spring preference study, wave 2"})(),
        "qualification": {"done": 2, "total": 10},
        "undo": {"url": f"/assignments/{lease.pk}/undo/", "seconds_left": 240},
        "break_every_min": 45,
        "csrf_token": page.eval_on_selector("input[name=csrfmiddlewaretoken]", "i => i.value"),
    }
    return render_to_string("annotate/_workspace.html", context)


@pytest.mark.parametrize("size", ["laptop", "phone"])
def test_qualification_campaign_quota_and_undo_all_at_once_stay_tidy(
    browser, live_server, two_pairs, make_user, settings, size
):
    """Every optional part of the workspace at once (the fragment swapped in as htmx does): in place, nothing
    overlapping, the task still on one laptop screen."""
    context, page = _open(browser, live_server, make_user, size)
    from django.contrib.auth import get_user_model

    html = _workspace_with_everything(page, get_user_model().objects.get(username="tools"), settings)
    assert "Qualification: pair 3 of 10 — you will see the reference answer after each pair." in re.sub(
        r"\s+", " ", html
    )
    page.evaluate(
        """html => { const old = document.querySelector('#workspace'); old.insertAdjacentHTML('afterend', html);
        old.remove(); const fresh = document.querySelector('#workspace'); htmx.process(fresh);
        document.body.dispatchEvent(new CustomEvent('htmx:afterSwap', {detail: {elt: fresh}})); }""",
        html,
    )
    _wait_for_pair(page)
    assert "Qualification: pair 3 of 10" in page.inner_text("#qualification-banner")
    assert page.inner_text("#campaign-name") == "Spring preference study, wave 2"
    assert page.inner_text("#progress-count") == "7 judged today · 212 in all"
    assert page.inner_text("#quota-state").startswith("37 of 120")
    assert page.inner_text("#undo-left") in ("4:00 left", "3:59 left")
    page.wait_for_function("document.querySelector('#undo-left').textContent === '3:58 left'", timeout=4000)
    pairs = [
        ("#qualification-banner", ".prompt"),
        ("#campaign-name", "#prompt-text"),
        ("#progress-count", "#prompt-text"),
        ("#quota-state", "#prompt-text"),
        ("#undo-button", "#submit-judgment"),
        ("#undo-button", "#video-left"),
        ("#scrubber", "#play-toggle"),
        (".view-tools", ".controls"),
    ]
    if size == "laptop":
        pairs += [("#undo", ".extras summary"), ("#undo", "form.skip"), ("#undo", "#submit-hint")]
    for a, b in pairs:
        assert not _overlap(_box(page, a), _box(page, b)), (a, b)
    _no_sideways_scroll(page, size)
    if size == "laptop":
        assert page.evaluate("window.scrollY") == 0
        for selector in ("#video-left", "fieldset.row[data-row=ta]", "#submit-judgment", "#undo-button", "form.skip"):
            box = _box(page, selector)
            assert box["y"] >= 0 and box["y"] + box["height"] <= LAPTOP["height"], selector
        left = _box(page, "#video-left")
        assert left["height"] >= 0.38 * LAPTOP["height"], left
    _screenshot(page, settings, f"{size}-everything")
    if size == "phone":
        page.screenshot(
            path=str(Path(settings.VAR_DIR) / "screenshots" / "judging-tools-phone-everything-full.png"), full_page=True
        )
    assert not GLYPH_ICON.search(page.inner_text("body")), GLYPH_ICON.findall(page.inner_text("body"))
    assert page.problems == []
    context.close()
