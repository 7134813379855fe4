"""The agreement dashboard in headless Chromium: staff see the numbers and the charts and can act; annotators cannot.
"Recompute now" runs in a real Celery worker and the page reloads at most once; on small data the page reads."""

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from annotate.services.stats import agreement_report_refresh
from tests.annotate.test_dashboard import small_study, stored_report
from tests.annotate.test_stats import in_batch
from tests.browser.conftest import admin_log_in, watch_problems
from tests.workers.test_snapshots import judge

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORT = {"width": 1366, "height": 768}

DASHBOARD = "/admin/annotate/agreementreport/"


def screenshots_dir(settings) -> Path:
    folder = Path(settings.VAR_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_staff(make_user):
    staff = make_user("boss", staff=True, password="correct horse battery")
    staff.is_superuser = True
    staff.save()
    return staff


def test_staff_see_charts_and_act_annotators_are_turned_away(
    browser, live_server, transactional_db, make_user, settings
):
    make_staff(make_user)
    annotators = [make_user(f"rater-{i}", password="another good secret") for i in range(3)]
    stored_report(annotators)

    page = browser.new_page(viewport=VIEWPORT)
    problems = watch_problems(page)
    admin_log_in(page, live_server.url, "boss", "correct horse battery", DASHBOARD)
    page.wait_for_selector("#dimension-table")
    assert "low agreement" in page.inner_text("#annotator-table")
    drawn = page.evaluate("""() => ['chart-per-day', 'chart-distribution', 'chart-alpha', 'chart-generators-VQ']
        .map((id) => Boolean(Chart.getChart(document.getElementById(id))))""")
    assert drawn == [True, True, True, True] and problems == []
    page.screenshot(path=str(Path(settings.VAR_DIR) / "test" / "dashboard.png"), full_page=True)

    page.click("#annotator-table tr:nth-child(3) button[value=exclude]")
    page.wait_for_selector(".messagelist")
    assert "Done: exclude" in page.inner_text(".messagelist")
    assert annotators[2].groups.filter(name="excluded from training").exists()

    page.click("#annotator-table a:text('rater-0')")
    page.wait_for_selector("#drilldown-table")
    assert "judgments next to the consensus" in page.title()
    assert problems == []

    outsider = browser.new_page()
    admin_log_in(outsider, live_server.url, "rater-1", "another good secret", DASHBOARD)
    outsider.wait_for_load_state()
    assert "/admin/login/" in outsider.url and outsider.query_selector("#dimension-table") is None


def test_recompute_reloads_once_then_settles_on_small_data(
    browser, live_server, celery_worker_process, make_user, make_pairs, settings
):
    """A real worker recomputes; the button posts without leaving the page, which loads once when the new
    numbers are in, then stays (a page that reloaded itself every poll went to 63 loads in two minutes). The
    small-data dashboard it lands on is checked and photographed at 1366×768."""
    small_study(make_user, make_pairs)
    make_staff(make_user)
    page = browser.new_page(viewport=VIEWPORT)
    problems = watch_problems(page)
    admin_log_in(page, live_server.url, "boss", "correct horse battery", DASHBOARD)
    page.wait_for_selector("p.empty")  # nothing computed yet

    loads, polls = [], []
    page.on("load", lambda loaded: loads.append(loaded.url))
    page.on("request", lambda request: "/agreementreport/status/" in request.url and polls.append(request.url))
    page.click("button:text('Recompute now')")
    page.wait_for_selector("#dimension-table", timeout=90_000)
    page.wait_for_function("() => !document.body.innerText.includes('recomputing')", timeout=90_000)
    settled = len(loads)
    page.wait_for_timeout(7_000)  # three more poll periods: a page still polling or reloading shows it here
    print(f"page loads after clicking Recompute: {loads}; status polls: {len(polls)}")
    assert len(loads) == settled == 1, loads  # one reload, once the numbers are in
    assert "requested=" not in page.url and "recomputing" not in page.inner_text("#agreement-dashboard")
    assert page.query_selector("[hx-trigger]") is None

    rows = {
        row.query_selector("td a").inner_text(): row for row in page.query_selector_all("#annotator-table tbody tr")
    }
    assert "low agreement" in rows["spammer"].inner_text()
    assert all("low agreement" not in rows[f"careful-{i}"].inner_text() for i in range(4))
    assert "How annotators are marked" in page.inner_text("#agreement-dashboard")
    # Cohen's κ: the diagonal is blank and uncoloured, the other cells carry the colour scale.
    diagonal = page.query_selector_all(".kappa td.kappa-diag")
    assert len(diagonal) == 3 * 5 and all(cell.inner_text() == "" for cell in diagonal)
    coloured = page.evaluate("""() => ['.kappa td.kappa-diag', '.kappa td[data-kappa]'].map((cells) =>
        [...document.querySelectorAll(cells)].map((td) => Boolean(td.style.background)))""")
    assert not any(coloured[0]) and coloured[1] and all(coloured[1])
    # The κ distribution over every two annotators: a histogram per dimension, bars as tall as their counts,
    # and it fits a phone's width too.
    bars = page.evaluate("""() => [...document.querySelectorAll('.kappa-histogram')].map((histogram) =>
        [...histogram.children].map((bar) => [Number(bar.dataset.count), bar.getBoundingClientRect().height]))""")
    assert len(bars) == 3 and all(len(bins) == 20 and sum(count for count, _ in bins) for bins in bars), bars
    assert all((count > 0) == (height > 2) for bins in bars for count, height in bins), bars
    assert all(max(height for _, height in bins) >= 100 for bins in bars), bars
    page.set_viewport_size({"width": 390, "height": 844})
    widths = page.evaluate(
        "() => [...document.querySelectorAll('.kappa-distribution')].map((f) => f.getBoundingClientRect().right)"
    )
    assert len(widths) == 3 and all(0 < right <= 390 for right in widths), widths
    page.locator(".kappa-distribution").first.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots_dir(settings) / "dashboard-kappa-distribution-phone.png"))
    page.set_viewport_size(VIEWPORT)
    # Every chart is drawn at a readable size, the Bradley–Terry ones included.
    sizes = page.evaluate("""() => [...document.querySelectorAll('canvas')].map((canvas) => {
        const chart = Chart.getChart(canvas);
        return [canvas.id, chart ? chart.height : 0, chart ? chart.width : 0];
    })""")
    assert len(sizes) == 6 and all(height >= 200 and width >= 300 for _, height, width in sizes), sizes

    folder = screenshots_dir(settings)
    page.screenshot(path=str(folder / "dashboard-small-data-top.png"))
    page.screenshot(path=str(folder / "dashboard-small-data-full.png"), full_page=True)
    page.locator("h2:text('Annotators')").scroll_into_view_if_needed()
    page.screenshot(path=str(folder / "dashboard-small-data-annotators.png"))
    page.locator("h2:text-matches('Generators')").scroll_into_view_if_needed()
    page.screenshot(path=str(folder / "dashboard-small-data-generators.png"))

    # A pilot batch of two pairs, two judges each, all agreeing: nothing is defined, and the page says so.
    pilot = make_pairs(2)
    for pair in pilot:
        for user in get_user_model().objects.filter(username__in=["careful-0", "careful-1"]):
            judge(pair, user, "A", "A", "A")
    batch = in_batch(pilot, "pilot")
    agreement_report_refresh(batch_ids=(batch.pk,))
    page.goto(f"{live_server.url}/admin/annotate/agreementreport/?batch={batch.pk}")
    table = page.inner_text("#dimension-table")
    assert table.count("n/a (too few)") == 3 * 3 and "[," not in table and "None" not in table, table
    assert "undefined" in page.get_attribute("#dimension-table .na", "title")
    assert page.query_selector_all(".kappa td.kappa-diag") and not page.query_selector_all(".kappa td[data-kappa]")
    page.screenshot(path=str(folder / "dashboard-tiny-batch.png"), full_page=True)
    assert problems == []


def test_a_failed_recompute_is_said_and_polling_stops(
    browser, live_server, celery_worker_process, make_user, make_pairs, settings
):
    """The worker's task fails (the judgments table is out of its reach): the page says so, keeps the earlier
    numbers, stops polling and never reloads."""
    small_study(make_user, make_pairs, pairs=6)
    make_staff(make_user)
    page = browser.new_page(viewport=VIEWPORT)
    problems = watch_problems(page)
    admin_log_in(page, live_server.url, "boss", "correct horse battery", DASHBOARD)
    page.wait_for_selector("p.empty")

    loads, polls = [], []
    page.on("load", lambda loaded: loads.append(loaded.url))
    page.on("request", lambda request: "/agreementreport/status/" in request.url and polls.append(request.url))
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE annotate_judgment RENAME TO annotate_judgment_away")
    try:
        page.click("button:text('Recompute now')")
        try:
            page.wait_for_selector(".recompute-failed", timeout=90_000)
        except Exception as error:
            from django_celery_results.models import TaskResult

            raise AssertionError(
                f"{page.url}\n{page.content()[-1500:]}\n"
                f"{list(TaskResult.objects.values())}\n"
                f"{celery_worker_process.log_path.read_text()[-3000:]}"
            ) from error
        failed_after = len(polls)
        page.wait_for_timeout(5_000)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE annotate_judgment_away RENAME TO annotate_judgment")
    message = page.inner_text(".recompute-failed")
    assert "The recompute failed" in message and "annotate_judgment" in message, message
    assert "earlier ones" not in message  # there were none
    assert len(polls) == failed_after and loads == []  # polling ended; the page never reloaded
    assert "recomputing" not in page.inner_text("#agreement-dashboard")
    page.screenshot(path=str(screenshots_dir(settings) / "dashboard-recompute-failed.png"))
    assert problems == []
