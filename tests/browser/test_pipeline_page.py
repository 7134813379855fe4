"""A pipeline's status page in headless Chromium at 1366×768: read-only, its stages in order with their jobs'
live progress, refreshed by htmx until the pipeline ends, and a Cancel that stops it. The stages run the real
stage code (``pipeline_stage_run`` → ``job_execute``) in a thread of this process, their work held at chosen
points, so each state is seen for certain (and no task goes to the broker other test sessions share)."""

import threading
import time

import pytest
from django.db import connection

from tests.browser.test_jobs_page import SCREENSHOTS, VIEWPORT, fits_the_window, page_width
from tests.conftest import seed_judged_pairs
from workers.models import Job, Pipeline
from workers.services.pipelines import pipeline_defaults, pipeline_stage_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NO_EDITING = (
    "input[name=_save], input[name=_continue], input[name=_addanother], a.deletelink, "
    "input[name$='-DELETE'], input[type=checkbox], textarea, select"
)


def stages_in_a_thread(pipeline_id: int, stages: list[str]) -> threading.Thread:
    """Run the stages one after another as the worker would (each stage's task), in a thread with its own
    database connection; an exception ends the run (the chain stops) and is kept on ``thread.error``."""

    def run():
        try:
            for stage in stages:
                pipeline_stage_run(pipeline_id=pipeline_id, stage=stage)
        except BaseException as exc:  # noqa: BLE001 - kept for the test to look at
            thread.error = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.error = None
    thread.start()
    return thread


def row_text(page, stage: str) -> str:
    return page.inner_text(f"tr[data-stage={stage}]")


def test_the_status_page_follows_the_stages_until_the_pipeline_fails(
    staff_page, live_server, monkeypatch, settings, tmp_path
):
    page = staff_page
    settings.SNAPSHOT_ROOT, settings.JOB_ROOT = tmp_path / "snapshots", tmp_path / "jobs"
    with connection.cursor() as cursor:
        seed_judged_pairs(cursor, pairs=12, judgments_per_pair=3)
    pipeline = Pipeline.objects.create(
        params={**pipeline_defaults(), "alignment_method": "rwr", "generate_pairs": 24}, created_by=page.staff
    )
    reward_may_go_on = threading.Event()

    def reward_work(job):  # a reward model that trains to epoch 2 of 5, waits, then runs out of memory
        job.report_progress(2, 5, "epoch 2 of 5: loss 0.612")
        assert reward_may_go_on.wait(60)
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("workers.services.reward.reward_work", reward_work)

    page.goto(f"{live_server.url}/admin/workers/pipeline/{pipeline.pk}/change/")
    assert page.inner_text(".pipeline-status") == "Queued"
    assert page.query_selector_all(NO_EDITING) == []  # a status page, not a change form
    assert page.eval_on_selector_all("tr.stage", "rows => rows.map((row) => row.dataset.stage)") == [
        "export",
        "reward",
        "align",
        "generate",
    ]
    assert "Flow-RWR" in row_text(page, "align") and "waiting" in row_text(page, "generate")
    assert page.get_attribute("#pipeline-live", "hx-trigger") == "every 2s"
    page.evaluate("window.notReloaded = true")  # gone if the page were loaded again

    worker = stages_in_a_thread(pipeline.pk, ["export", "reward", "align", "generate"])
    page.wait_for_function(
        "() => document.querySelector('tr[data-stage=reward]').innerText.includes('40 %')", timeout=30_000
    )
    export, reward = (Job.objects.get(pipeline=pipeline, kind=kind) for kind in (Job.Kind.EXPORT, Job.Kind.REWARD))
    assert page.inner_text(".pipeline-status") == "Running"
    assert "stage 2 of 4: reward" in page.inner_text(".job-status")
    assert "Succeeded" in row_text(page, "export") and "done: snapshot pipeline-" in row_text(page, "export")
    assert "100 %" in row_text(page, "export") and "epoch 2 of 5: loss 0.612" in row_text(page, "reward")
    assert page.get_attribute("tr[data-stage=export] a.stage-job", "href") == f"/admin/workers/job/{export.pk}/change/"
    assert page.get_attribute("tr[data-stage=reward] a.stage-job", "href") == f"/admin/workers/job/{reward.pk}/change/"
    assert page.is_visible("button.pipeline-cancel")
    page.screenshot(path=str(SCREENSHOTS / "pipeline-running.png"), full_page=True)

    reward_may_go_on.set()
    page.wait_for_selector("#pipeline-live.status-failed", timeout=30_000)  # no reload: htmx brought it
    worker.join(30)
    assert isinstance(worker.error, RuntimeError)  # the stage's task fails, as Celery would log it
    assert page.evaluate("window.notReloaded") is True
    assert page.inner_text(".pipeline-status") == "Failed"
    reason = page.inner_text(".pipeline-reason")
    assert f"stage reward (job {reward.pk}): RuntimeError: CUDA out of memory" in reason
    assert "Failed" in row_text(page, "reward") and "failed: RuntimeError: CUDA out of memory" in row_text(
        page, "reward"
    )
    assert "not run" in row_text(page, "align") and "not run" in row_text(page, "generate")
    assert page.get_attribute("#pipeline-live", "hx-trigger") is None  # polling stopped
    assert page.query_selector("button.pipeline-cancel") is None
    page.screenshot(path=str(SCREENSHOTS / "pipeline-failed.png"), full_page=True)
    assert page_width(page) <= VIEWPORT["width"]

    page.click("tr[data-stage=reward] a.stage-job")  # the stage's job page tells the same outcome
    page.wait_for_selector("#job-live.status-failed")
    assert (
        page.inner_text(".job-progress-text") == "failed: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    assert f"pipeline #{pipeline.pk}" in page.inner_text(".job-status")
    assert page.problems == []


def test_cancel_stops_a_running_pipeline_and_its_stage(staff_page, live_server, monkeypatch, settings, tmp_path):
    page = staff_page
    pipeline = Pipeline.objects.create(
        params=pipeline_defaults(), status=Pipeline.Status.RUNNING, created_by=page.staff
    )
    steps = []

    def export_work(job):  # a long export, step by step: it stops at the first step after the cancel
        for step in range(1, 600):
            job.report_progress(step, 1000, f"pair {step} of 1000")
            steps.append(step)
            time.sleep(0.05)
        return {}

    monkeypatch.setattr("workers.services.snapshots.snapshot_work", export_work)
    worker = stages_in_a_thread(pipeline.pk, ["export", "reward"])
    page.goto(f"{live_server.url}/admin/workers/pipeline/{pipeline.pk}/change/")
    page.wait_for_function("() => /pair \\d+ of 1000/.test(document.querySelector('tr[data-stage=export]').innerText)")
    assert page.inner_text(".pipeline-status") == "Running"

    page.click("button.pipeline-cancel")  # a POST with the CSRF token, then the page again
    page.wait_for_selector(".messagelist")
    assert f"Pipeline #{pipeline.pk} cancelled" in page.inner_text(".messagelist")
    assert page.inner_text(".pipeline-status") == "Cancelled"
    assert f"cancelled by {page.staff.username}" in page.inner_text(".pipeline-reason")
    worker.join(30)
    assert not worker.is_alive() and worker.error is None
    pipeline.refresh_from_db()
    job = Job.objects.get(pipeline=pipeline)
    assert (pipeline.status, pipeline.is_active, job.status) == ("cancelled", False, "cancelled")
    assert steps and steps[-1] < 599 and job.attempts[-1]["outcome"] == "cancelled"
    assert Job.objects.filter(pipeline=pipeline).count() == 1  # the reward stage did nothing
    page.reload()
    assert "Cancelled" in row_text(page, "export") and f"cancelled by {page.staff.username} at" in row_text(
        page, "export"
    )
    assert page.query_selector("button.pipeline-cancel") is None
    assert page.get_attribute("#pipeline-live", "hx-trigger") is None
    assert page.problems == []


def test_the_pipelines_list_shows_each_status_and_links_to_its_page(staff_page, live_server):
    page = staff_page
    done = Pipeline.objects.create(
        status=Pipeline.Status.SUCCEEDED, is_active=False, params=pipeline_defaults(), stage="generate"
    )
    for kind in (Job.Kind.EXPORT, Job.Kind.REWARD, Job.Kind.FLOW_DPO, Job.Kind.GENERATE):
        Job.objects.create(kind=kind, pipeline=done, status=Job.Status.SUCCEEDED, progress=1.0)
    skipped = Pipeline.objects.create(
        status=Pipeline.Status.SKIPPED,
        is_active=False,
        params=pipeline_defaults(),
        trigger="schedule",
        reason="3 new judgments since the last snapshot; a pipeline "
        "needs 200 (VIDPREF_PIPELINE_MIN_NEW_JUDGMENTS) " + "and more words " * 20,
    )
    running = Pipeline.objects.create(status=Pipeline.Status.RUNNING, params=pipeline_defaults(), stage="reward")
    Job.objects.create(kind=Job.Kind.EXPORT, pipeline=running, status=Job.Status.SUCCEEDED, progress=1.0)
    Job.objects.create(kind=Job.Kind.REWARD, pipeline=running, status=Job.Status.RUNNING, progress=0.3)

    page.goto(f"{live_server.url}/admin/workers/pipeline/")
    rows = {
        int(row.query_selector("th a").inner_text()): row for row in page.query_selector_all("#result_list tbody tr")
    }
    assert set(rows) == {done.pk, skipped.pk, running.pk}
    assert rows[done.pk].query_selector(".badge").inner_text() == "Succeeded"
    assert rows[skipped.pk].query_selector(".badge").inner_text() == "Skipped"
    assert "reward 30 %" in rows[running.pk].inner_text()
    assert rows[skipped.pk].query_selector(".cell-truncate").get_attribute("title").startswith("3 new judgments")
    page.screenshot(path=str(SCREENSHOTS / "pipeline-list.png"), full_page=True)
    assert fits_the_window(page)

    rows[skipped.pk].query_selector("th a").click()
    page.wait_for_selector("#pipeline-live")
    assert page.url.endswith(f"/admin/workers/pipeline/{skipped.pk}/change/")
    assert page.inner_text(".pipeline-reason").startswith("Skipped: 3 new judgments")
    assert page.query_selector_all(NO_EDITING) == [] and page.query_selector("button.pipeline-cancel") is None
    assert page.get_attribute("#pipeline-live", "hx-trigger") is None
    assert page.problems == []
