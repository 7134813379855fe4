"""Job pages and the jobs list in headless Chromium at 1366×768: staff start a training job and watch it run to the
end (a real worker); a generation and an import link what they made; parameters, metrics and the log read as
tables and lines; the list fits the window. Any console error or failed request fails a test."""

import re
from pathlib import Path

import pytest

from tests.alignment.test_reward_train import brightness_snapshot
from tests.conftest import render_clip
from tests.workers.test_reward_jobs import registered
from workers.models import Job, ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORT = {"width": 1366, "height": 768}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"  # looked at by people, not committed
SCREENSHOTS.mkdir(parents=True, exist_ok=True)


def page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def fits_the_window(page) -> bool:
    """Nothing wider than the window: the page does not scroll sideways, nor does the list in its own box
    (the admin's ``.results`` scrolls a table too wide for it, hiding the last columns)."""
    widths = page.evaluate("""() => {
        const results = document.querySelector('.results');
        return [document.documentElement.scrollWidth, results.scrollWidth, results.clientWidth];
    }""")
    assert widths[0] <= VIEWPORT["width"] and widths[1] <= widths[2], widths
    return True


def params_table(page) -> dict:
    return dict(
        page.eval_on_selector_all(
            "table.job-params tr",
            "rows => rows.map((row) => [row.querySelector('th').innerText, row.querySelector('td').innerText])",
        )
    )


def test_staff_start_a_reward_job_and_watch_it_finish(staff_page, live_server, celery_worker_process, tmp_path):
    page = staff_page
    snapshot = registered(brightness_snapshot(tmp_path / "snap-browser"))

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
    assert page.inner_text(".job-progress-text") == f"done: model {version.name}"  # the outcome, not the last step
    assert "succeeded" in page.inner_text(".job-attempts")
    page.wait_for_function("() => Boolean(window.Chart && Chart.getChart(document.getElementById('job-loss-chart')))")
    sizes = page.evaluate(
        "() => ['job-loss-chart', 'job-accuracy-chart'].map((id) => { const c = document.getElementById(id); "
        "return [c.width, c.height, Chart.getChart(c).data.datasets.map((d) => d.data.length)]; })"
    )
    assert all((width, height) != (300, 150) for width, height, _ in sizes)  # laid out, not the bare default canvas
    assert sizes[0][2] == [6] and sizes[1][2] == [2, 2, 2]  # 6 loss points; 2 evaluations per dimension
    legend = page.evaluate(
        "Chart.getChart(document.getElementById('job-accuracy-chart')).data.datasets.map((d) => d.label)"
    )
    assert legend == ["VQ accuracy w/o ties", "MQ accuracy w/o ties", "TA accuracy w/o ties"]
    assert page.get_attribute("#job-live", "hx-trigger") is None  # polling stopped
    validation = page.eval_on_selector_all(
        "table.job-metrics-validation tbody tr",
        "rows => rows.map((row) => Array.from(row.cells, (cell) => cell.innerText))",
    )
    assert [row[0] for row in validation] == ["VQ", "MQ", "TA"]
    assert all(re.fullmatch(r"[01]\.\d{3}|–", value) for row in validation for value in row[1:])
    assert params_table(page) == {"snapshot_id": str(snapshot.pk), "config.epochs": "2"}
    assert page.get_attribute("table.job-params a", "href") == f"/admin/workers/datasetsnapshot/{snapshot.pk}/change/"
    assert page_width(page) <= VIEWPORT["width"]
    assert page.problems == []
    page.screenshot(path=str(SCREENSHOTS / "job-reward.png"), full_page=True)


def test_a_generation_job_links_the_pairs_it_queued(staff_page, live_server, settings, tmp_path):
    """A real generation on a tiny random policy (run here, as the worker would run it), then its page."""
    from alignment.flow.tiny import build_tiny_wan_policy
    from annotate.models import Batch
    from workers.services.generation import generation_work
    from workers.services.jobs import job_execute

    page = staff_page
    settings.VIDPREF_BASE_POLICY = str(build_tiny_wan_policy(tmp_path / "base", pixel_patch=4, num_layers=2))
    settings.JOB_ROOT = tmp_path / "jobs"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square moving left quickly\na blue circle moving up slowly\n")
    job = Job.objects.create(
        kind=Job.Kind.GENERATE,
        created_by=page.staff,
        params={
            "pairs": 2,
            "steps": 3,
            "source": "two_seeds",
            "prompt_file": str(prompts),
            "policy_model_version_id": None,
            "reward_model_version_id": None,
            "latent_reward_model_version_id": None,
        },
    )
    job_execute(job_id=job.pk, work=generation_work)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log
    batch = Batch.objects.get(source=f"generated:job-{job.pk}")

    page.goto(f"{live_server.url}/admin/workers/job/{job.pk}/change/")
    assert page.inner_text(".job-progress-text") == "done: 2 pairs queued"
    assert page.inner_text(".job-progress") == "100 %"
    params = params_table(page)
    assert params["pairs"] == "2" and params["source"] == "two_seeds" and params["policy_model_version_id"] == "–"
    assert "{" not in page.inner_text("table.job-params")  # a table, not a dict's repr
    entries = page.eval_on_selector_all(
        ".job-log li",
        "items => items.map((item) => "
        "[item.querySelector('time').innerText, item.querySelector('.log-message').innerText])",
    )
    assert entries and all(re.fullmatch(r"\d\d:\d\d:\d\d", time) for time, _ in entries)
    assert any(message.startswith("two_seeds: base vs base") and "2 pairs created" in message for _, message in entries)
    assert page.inner_text(".job-outputs").startswith(f"2 new pairs in batch {batch.name}")
    assert page.get_attribute("a.job-batch", "href") == f"/admin/annotate/batch/{batch.pk}/change/"
    assert page_width(page) <= VIEWPORT["width"]
    page.screenshot(path=str(SCREENSHOTS / "job-generate.png"), full_page=True)

    page.click("a.job-new-pairs")  # the admin's pair list, filtered to this job's batch
    page.wait_for_selector("#result_list")
    assert page.url.endswith(f"/admin/annotate/pair/?batch__id__exact={batch.pk}")
    assert len(page.query_selector_all("#result_list tbody tr")) == 2
    assert page.problems == []


def test_an_import_job_links_its_batch_and_lists_skipped_rows(staff_page, live_server, settings, tmp_path, monkeypatch):
    """An admin upload imported (the media task's body, here) and its page."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from annotate.models import Batch
    from workers.services.imports import import_job_create
    from workers.tasks.media import import_pairs

    page = staff_page
    settings.JOB_ROOT = tmp_path / "jobs"
    monkeypatch.setattr("workers.services.imports.job_queue", lambda **kwargs: None)  # no task to the shared broker
    render_clip(tmp_path / "a.mp4")
    render_clip(tmp_path / "b.mp4", source="smptebars")
    manifest = (
        "path_A,path_B,prompt,VQ,MQ,TA\n"
        "videos/a.mp4,videos/b.mp4,an uploaded pair,A,B,same\n"
        "videos/a.mp4,gone.mp4,x,A,A,A\n"
    )
    job = import_job_create(
        manifest=SimpleUploadedFile("pairs.csv", manifest.encode()),
        videos=[SimpleUploadedFile(name, (tmp_path / name).read_bytes()) for name in ("a.mp4", "b.mp4")],
        gold=False,
        overlap=2,
        created_by=page.staff,
    )
    import_pairs(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log
    batch = Batch.objects.get(pk=job.result["batch_id"])

    page.goto(f"{live_server.url}/admin/workers/job/{job.pk}/change/")
    assert page.inner_text(".job-progress-text") == "done: 1 pair imported, 1 skipped"
    outputs = page.inner_text(".job-outputs")
    assert outputs.startswith(f"1 new pair in batch {batch.name}") and "line 3: " in outputs and "gone.mp4" in outputs
    assert page.get_attribute("a.job-new-pairs", "href") == f"/admin/annotate/pair/?batch__id__exact={batch.pk}"
    assert params_table(page)["overlap"] == "2" and params_table(page)["gold"] == "no"
    assert page_width(page) <= VIEWPORT["width"]
    page.screenshot(path=str(SCREENSHOTS / "job-import.png"), full_page=True)
    page.click("a.job-batch")
    page.wait_for_selector("#content")
    assert page.url.endswith(f"/admin/annotate/batch/{batch.pk}/change/")
    assert page.problems == []


def test_the_jobs_list_fits_a_1366_window(staff_page, live_server):
    from django.contrib.auth import get_user_model

    from workers.services.jobs import job_execute

    page = staff_page
    someone = get_user_model().objects.create_user("an-annotation-lead-with-a-long-name", password="x", is_staff=True)
    for index, kind in enumerate(Job.Kind.values * 3):
        Job.objects.create(
            kind=kind,
            status=Job.Status.RUNNING,
            progress=index / 30,
            created_by=someone,
            progress_text=f"step {index} of 30: sampling guided clips for the prompt " + "very " * 30,
        )

    def fails(_job):
        raise RuntimeError("the snapshot folder is gone: " + "/a/long/path" * 20)

    failed = Job.objects.create(kind=Job.Kind.REWARD)
    with pytest.raises(RuntimeError):
        job_execute(job_id=failed.pk, work=fails)

    page.goto(f"{live_server.url}/admin/workers/job/")
    page.screenshot(path=str(SCREENSHOTS / "jobs-list.png"))
    assert fits_the_window(page)
    headers = page.eval_on_selector_all(
        "#result_list thead th", "cells => cells.map((cell) => cell.textContent.trim())"
    )
    assert [header.lower() for header in headers[1:]] == ["id", "kind", "status", "progress", "created", "ran for"]
    cell = page.query_selector(f"#result_list tr:has(a[href$='/{failed.pk}/change/']) .cell-truncate")
    assert cell.get_attribute("title").startswith("0 % · failed: RuntimeError: the snapshot folder is gone")
    created = page.query_selector(f"#result_list tr:has(a[href$='/{failed.pk - 1}/change/']) td.field-created span")
    assert created.get_attribute("title").endswith(f" by {someone.username}")

    page.click(f"#result_list a[href$='/{failed.pk}/change/']")
    page.wait_for_selector("#job-live.status-failed")
    traceback = page.query_selector(".job-log li.log-error")
    assert traceback is not None and "Traceback (most recent call last)" in traceback.inner_text()
    assert len(page.query_selector_all(".job-log li")) == 1  # the traceback is one entry, not a line each
    page.screenshot(path=str(SCREENSHOTS / "job-failed.png"), full_page=True)
    assert page_width(page) <= VIEWPORT["width"]  # the long error wraps or is cut short
    assert page.problems == []
