"""The pipeline: skipped without enough new judgments, one at a time, a chain of stage tasks, failures stop it."""

import pytest
from django.db import connection

from tests.conftest import seed_judged_pairs
from workers.models import DatasetSnapshot, Job, Pipeline
from workers.services.pipelines import (
    PipelineBusy,
    pipeline_cancel,
    pipeline_canvas,
    pipeline_stage_run,
    pipeline_start,
)


@pytest.fixture
def judged(db):
    with connection.cursor() as cursor:
        seed_judged_pairs(cursor, pairs=20, judgments_per_pair=3)


def test_too_few_new_judgments_skips_with_the_reason(judged, settings):
    settings.VIDPREF_PIPELINE_MIN_NEW_JUDGMENTS = 61
    pipeline = pipeline_start(trigger="schedule")
    assert (pipeline.status, pipeline.is_active) == (Pipeline.Status.SKIPPED, False)
    assert "60 new judgments since the last snapshot; a pipeline needs 61" in pipeline.reason
    DatasetSnapshot.objects.create(name="s", uri="/s", judgment_watermark=10**9)  # everything exported already
    assert "0 new judgments" in pipeline_start(params={"min_new_judgments": 1}).reason
    assert pipeline_start(params={"min_new_judgments": 1}, force=True).is_active


def test_one_pipeline_at_a_time(judged, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        first = pipeline_start(params={"min_new_judgments": 1})
    assert first.is_active and len(callbacks) == 1  # the canvas is sent after the commit
    with pytest.raises(PipelineBusy, match=f"pipeline #{first.pk} .* one pipeline runs at a time"):
        pipeline_start(params={"min_new_judgments": 1})
    assert pipeline_cancel(pipeline=first) and not Pipeline.objects.get(pk=first.pk).is_active
    assert pipeline_start(params={"min_new_judgments": 1}).is_active  # free again
    with pytest.raises(ValueError, match="alignment_method 'ppo'"):
        pipeline_start(params={"alignment_method": "ppo"}, force=True)


def test_the_canvas_chains_each_stage_on_its_queue_then_finishes():
    canvas = pipeline_canvas(7)
    tasks = [(task.task, tuple(task.args), task.immutable) for task in canvas.tasks]
    assert tasks == [
        ("workers.tasks.default.pipeline_export", (7,), True),
        ("workers.tasks.gpu.pipeline_reward", (7,), True),
        ("workers.tasks.gpu.pipeline_align", (7,), True),
        ("workers.tasks.gpu.pipeline_generate", (7,), True),
        ("workers.tasks.default.pipeline_finish", (7,), True),
    ]


def test_a_failed_stage_fails_the_pipeline_and_later_stages_do_nothing(
    judged, monkeypatch, django_capture_on_commit_callbacks
):
    pipeline = pipeline_start(params={"min_new_judgments": 1})

    def broken(job):
        raise OSError("No space left on device")

    monkeypatch.setattr("workers.services.snapshots.snapshot_work", broken)
    with pytest.raises(OSError):
        pipeline_stage_run(pipeline_id=pipeline.pk, stage="export")
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.FAILED and not pipeline.is_active
    assert "stage export" in pipeline.reason and "No space left on device" in pipeline.reason
    assert Job.objects.get(pipeline=pipeline).status == Job.Status.FAILED
    assert pipeline_stage_run(pipeline_id=pipeline.pk, stage="reward") is None
    assert Job.objects.filter(pipeline=pipeline).count() == 1


def test_export_stage_runs_as_a_job_of_the_pipeline_and_feeds_the_next(judged, settings, tmp_path):
    settings.SNAPSHOT_ROOT = tmp_path
    pipeline = pipeline_start(params={"min_new_judgments": 1})
    result = pipeline_stage_run(pipeline_id=pipeline.pk, stage="export")
    job = Job.objects.get(pipeline=pipeline, kind=Job.Kind.EXPORT)
    assert job.status == Job.Status.SUCCEEDED and result["counts"]["pairs"] == 20
    assert pipeline_stage_run(pipeline_id=pipeline.pk, stage="export") == result  # delivered twice: same job, no redo
    assert Job.objects.filter(pipeline=pipeline).count() == 1
    from workers.services.pipelines import pipeline_stage_params

    assert pipeline_stage_params(Pipeline.objects.get(pk=pipeline.pk), "reward") == (
        Job.Kind.REWARD,
        {"snapshot_id": result["snapshot_id"], "config": {}},
    )


def test_stages_come_in_the_chains_order_with_their_jobs(db):
    from workers.services.pipelines import STAGE_QUEUES, pipeline_stages

    pipeline = Pipeline.objects.create(params={"alignment_method": "rwr"}, status=Pipeline.Status.RUNNING)
    first = Job.objects.create(kind=Job.Kind.EXPORT, pipeline=pipeline, status=Job.Status.FAILED)
    again = Job.objects.create(kind=Job.Kind.EXPORT, pipeline=pipeline, status=Job.Status.SUCCEEDED)
    stages = pipeline_stages(pipeline)
    assert [stage["name"] for stage in stages] == list(STAGE_QUEUES) == ["export", "reward", "align", "generate"]
    assert [stage["kind"] for stage in stages] == [
        Job.Kind.EXPORT,
        Job.Kind.REWARD,
        Job.Kind.FLOW_RWR,
        Job.Kind.GENERATE,
    ]
    assert stages[0]["job"] == again != first and [stage["job"] for stage in stages[1:]] == [None, None, None]


def test_the_status_page_is_read_only_polls_while_active_and_cancels_by_post(
    staff_client, django_capture_on_commit_callbacks
):
    pipeline = Pipeline.objects.create(
        params={"alignment_method": "dpo", "generate_pairs": 24}, status=Pipeline.Status.RUNNING, stage="reward"
    )
    export = Job.objects.create(
        kind=Job.Kind.EXPORT,
        pipeline=pipeline,
        status=Job.Status.SUCCEEDED,
        progress=1.0,
        progress_text="done: snapshot s (40 pairs)",
    )
    reward = Job.objects.create(
        kind=Job.Kind.REWARD, pipeline=pipeline, status=Job.Status.RUNNING, progress=0.37, progress_text="epoch 2 of 5"
    )
    page = staff_client.get(f"/admin/workers/pipeline/{pipeline.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200 and 'hx-trigger="every 2s"' in html
    assert "_save" not in html and "DELETE" not in html and "deletelink" not in html and 'type="checkbox"' not in html
    assert html.count('<tr class="stage ') == 4 and "stage 2 of 4: reward" in html
    assert (
        f'href="/admin/workers/job/{export.pk}/change/"' in html
        and f'href="/admin/workers/job/{reward.pk}/change/"' in html
    )
    assert "37 %" in html and "epoch 2 of 5" in html and "Flow-DPO" in html
    assert f'action="/admin/workers/pipeline/{pipeline.pk}/cancel/"' in html and "csrfmiddlewaretoken" in html

    assert staff_client.get(f"/admin/workers/pipeline/{pipeline.pk}/cancel/").status_code == 405
    assert staff_client.post(f"/admin/workers/pipeline/{pipeline.pk}/delete/").status_code == 403  # a record, kept
    response = staff_client.post(f"/admin/workers/pipeline/{pipeline.pk}/cancel/")
    assert response.status_code == 302 and response["Location"] == f"/admin/workers/pipeline/{pipeline.pk}/change/"
    pipeline.refresh_from_db()
    assert (pipeline.status, pipeline.is_active, Job.objects.get(pk=reward.pk).status) == (
        "cancelled",
        False,
        "cancelled",
    )
    live = staff_client.get(f"/admin/workers/pipeline/{pipeline.pk}/live/").content.decode()
    assert "hx-trigger" not in live and "/cancel/" not in live and "Cancelled:</strong> cancelled by" in live
    again = staff_client.post(f"/admin/workers/pipeline/{pipeline.pk}/cancel/", follow=True)
    assert "had already ended" in again.content.decode()


def test_the_status_page_is_for_staff_with_permission(client, make_user):
    pipeline = Pipeline.objects.create(params={}, status=Pipeline.Status.RUNNING)
    client.force_login(make_user())  # not staff: to the admin login
    assert client.get(f"/admin/workers/pipeline/{pipeline.pk}/change/").status_code == 302
    assert client.post(f"/admin/workers/pipeline/{pipeline.pk}/cancel/").status_code == 302
    client.force_login(make_user(staff=True))  # staff without the pipeline permissions
    assert client.get(f"/admin/workers/pipeline/{pipeline.pk}/live/").status_code == 403
    assert client.post(f"/admin/workers/pipeline/{pipeline.pk}/cancel/").status_code == 403
    assert Pipeline.objects.get(pk=pipeline.pk).is_active


def test_a_skipped_pipeline_shows_why_and_the_list_shows_each_status(staff_client, judged, settings):
    settings.VIDPREF_PIPELINE_MIN_NEW_JUDGMENTS = 500
    skipped = pipeline_start(trigger="schedule")
    html = staff_client.get(f"/admin/workers/pipeline/{skipped.pk}/change/").content.decode()
    assert "Skipped:</strong> 60 new judgments since the last snapshot" in html and "hx-trigger" not in html
    assert html.count("did not run") == 4 and "/cancel/" not in html
    listing = staff_client.get("/admin/workers/pipeline/").content.decode()
    assert f'href="/admin/workers/pipeline/{skipped.pk}/change/"' in listing
    assert '<span class="badge list-badge status-skipped">Skipped</span>' in listing


def test_the_pipeline_aligns_with_flow_grpo_from_its_reward_model(db):
    """``alignment_method=grpo`` (``VIDPREF_ALIGNMENT_METHOD=grpo``): the align stage is a Flow-GRPO job given the
    reward stage's model, and the generate stage samples that policy."""
    from workers.services.pipelines import pipeline_stage_params, pipeline_stages

    pipeline = Pipeline.objects.create(
        params={"alignment_method": "grpo", "generate_pairs": 8}, status=Pipeline.Status.RUNNING
    )
    Job.objects.create(kind=Job.Kind.EXPORT, pipeline=pipeline, status=Job.Status.SUCCEEDED, result={"snapshot_id": 7})
    Job.objects.create(
        kind=Job.Kind.REWARD, pipeline=pipeline, status=Job.Status.SUCCEEDED, result={"model_version_id": 11}
    )
    assert [stage["kind"] for stage in pipeline_stages(pipeline)][2] == Job.Kind.FLOW_GRPO
    kind, params = pipeline_stage_params(pipeline, "align")
    assert kind == Job.Kind.FLOW_GRPO and params["reward_model_version_id"] == 11 and params["snapshot_id"] == 7
    Job.objects.create(
        kind=Job.Kind.FLOW_GRPO, pipeline=pipeline, status=Job.Status.SUCCEEDED, result={"model_version_id": 12}
    )
    kind, params = pipeline_stage_params(pipeline, "generate")
    assert kind == Job.Kind.GENERATE and params["policy_model_version_id"] == 12
