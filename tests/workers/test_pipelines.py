"""The pipeline: skipped without enough new judgments, one at a time, a chain of stage tasks, failures stop it."""

import pytest
from django.db import connection

from tests.conftest import seed_judged_pairs
from workers.models import DatasetSnapshot, Job, Pipeline
from workers.services.pipelines import (
    PipelineBusy,
    pipeline_canvas,
    pipeline_cancel,
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
    assert tasks == [("workers.tasks.default.pipeline_export", (7,), True), ("workers.tasks.gpu.pipeline_reward", (7,), True),
                     ("workers.tasks.gpu.pipeline_align", (7,), True), ("workers.tasks.gpu.pipeline_generate", (7,), True),
                     ("workers.tasks.default.pipeline_finish", (7,), True)]


def test_a_failed_stage_fails_the_pipeline_and_later_stages_do_nothing(judged, monkeypatch,
                                                                       django_capture_on_commit_callbacks):
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
    from workers.services.pipelines import _stage_params

    assert _stage_params(Pipeline.objects.get(pk=pipeline.pk), "reward") == (
        Job.Kind.REWARD, {"snapshot_id": result["snapshot_id"], "config": {}})
