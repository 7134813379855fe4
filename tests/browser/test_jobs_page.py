"""Staff start a training job from the admin in headless Chromium and watch it run to the end (a real worker)."""

from pathlib import Path

import pytest

from tests.alignment.test_reward_train import brightness_snapshot
from tests.browser.test_dashboard_page import log_in
from tests.workers.test_reward_jobs import registered
from workers.models import Job, ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_staff_start_a_reward_job_and_watch_it_finish(browser, live_server, celery_worker_process, make_user,
                                                      tmp_path, settings):
    staff = make_user("trainer", staff=True, password="correct horse battery")
    staff.is_superuser = True
    staff.save()
    snapshot = registered(brightness_snapshot(tmp_path / "snap-browser"))

    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_server.url}/admin/login/?next=/admin/workers/job/new/")
    log_in(page, live_server.url, "trainer", "correct horse battery")
    page.goto(f"{live_server.url}/admin/workers/job/new/")
    page.click("text=Train a reward model")
    page.wait_for_selector("#job-config-form")
    assert page.input_value("input[name='learning_rate']") == "0.001"  # the site's default is filled in
    page.select_option("select[name=snapshot]", str(snapshot.pk))
    page.fill("input[name=epochs]", "2")
    page.click("input[type=submit][value='Queue the job']")

    page.wait_for_selector("#job-live")
    job = Job.objects.get(kind=Job.Kind.REWARD)
    assert f"/admin/workers/job/{job.pk}/change/" in page.url and job.params["config"] == {"epochs": 2}
    page.wait_for_selector(".status-succeeded", timeout=240_000)  # htmx polled the page until the job ended
    version = ModelVersion.objects.get(job=job)
    assert page.inner_text(".job-outputs").startswith(f"model {version.name}")
    assert "succeeded" in page.inner_text(".job-attempts")
    page.wait_for_function("() => Boolean(window.Chart && Chart.getChart(document.getElementById('job-loss-chart')))")
    sizes = page.evaluate("() => ['job-loss-chart', 'job-accuracy-chart'].map((id) => { const c = document.getElementById(id); return [c.width, c.height, Chart.getChart(c).data.datasets.map((d) => d.data.length)]; })")
    assert all((width, height) != (300, 150) for width, height, _ in sizes)  # laid out, not the bare default canvas
    assert sizes[0][2] == [6] and sizes[1][2] == [2, 2, 2]  # 6 loss points; 2 evaluations per dimension
    assert page.get_attribute("#job-live", "hx-trigger") is None  # polling stopped
    assert errors == []
    page.screenshot(path=str(Path(settings.VAR_DIR) / "test" / "job-page.png"), full_page=True)
