"""The agreement dashboard in headless Chromium: staff see the numbers and the charts and can act; annotators cannot."""

from pathlib import Path

import pytest

from tests.annotate.test_dashboard import stored_report

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/annotate/agreementreport/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("input[type=submit]")


def test_staff_see_charts_and_act_annotators_are_turned_away(browser, live_server, transactional_db, make_user, settings):
    staff = make_user("boss", staff=True, password="correct horse battery")
    staff.is_superuser = True
    staff.save()
    annotators = [make_user(f"rater-{i}", password="another good secret") for i in range(3)]
    stored_report(annotators)

    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, live_server.url, "boss", "correct horse battery")
    page.wait_for_selector("#dimension-table")
    assert "low agreement" in page.inner_text("#annotator-table")
    drawn = page.evaluate("""() => ['chart-per-day', 'chart-distribution', 'chart-alpha', 'chart-generators-VQ']
        .map((id) => Boolean(Chart.getChart(document.getElementById(id))))""")
    assert drawn == [True, True, True, True] and errors == []
    page.screenshot(path=str(Path(settings.VAR_DIR) / "test" / "dashboard.png"), full_page=True)

    page.click("#annotator-table tr:nth-child(3) button[value=exclude]")
    page.wait_for_selector(".messagelist")
    assert "Done: exclude" in page.inner_text(".messagelist")
    assert annotators[2].groups.filter(name="excluded from training").exists()

    page.click("#annotator-table a:text('rater-0')")
    page.wait_for_selector("#drilldown-table")
    assert "judgments next to the consensus" in page.title()

    outsider = browser.new_page()
    log_in(outsider, live_server.url, "rater-1", "another good secret")
    outsider.wait_for_load_state()
    assert "/admin/login/" in outsider.url and outsider.query_selector("#dimension-table") is None
