"""The whole loop in a real Celery worker: simulated judgments → snapshot → reward model → Flow-DPO → new pairs
in the annotation queue, which an annotator can then judge."""

import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from annotate.models import Batch, Pair, Video
from annotate.services.accounts import annotator_create
from annotate.services.assignment import ScreenLabels, assignment_next, judgment_submit
from annotate.services.ingest import pairs_import
from tests.conftest import start_celery_worker, stop_celery_worker, wait_for_child_sessions_to_end
from workers.models import Job, ModelVersion, Pipeline
from workers.services.pipelines import pipeline_start
from workers.simulation import simulate_annotators

TINY_REWARD = {
    "epochs": 1,
    "batch_size": 8,
    "num_workers": 0,
    "cache_videos": 64,
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_frames": 4, "tubelet": [2, 8, 8]},
}
TINY_DPO = {"max_steps": 2, "batch_size": 2, "lora_rank": 4, "max_eval_items": 2}


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """The worker queues what the tiny CPU policy generates (as a site with a real VIDPREF_BASE_POLICY does; by
    default those noise pairs are held back, see test_generation.py), so the loop can be followed to the end."""
    process = start_celery_worker(tmp_path / "worker.log", VIDPREF_QUEUE_UNTRAINED_POLICY_PAIRS="true")
    yield process
    stop_celery_worker(process)
    wait_for_child_sessions_to_end()


def test_the_loop_closes_in_a_real_worker(live_server, celery_worker_process, tmp_path, settings):
    from alignment.toyworld import export_pairs, make_pairs

    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    manifest = export_pairs(make_pairs(8, 2, seed=5), tmp_path / "toy")
    assert pairs_import(manifest=manifest, overlap=2).pairs_created == 16
    report = simulate_annotators(base_url=live_server.url, annotators=3, judgments=32, mix={"careful": 1})
    assert report.judgments == 32, report.summary()

    pipeline = pipeline_start(
        params={
            "min_new_judgments": 32,
            "generate_pairs": 3,
            "reward_config": TINY_REWARD,
            "alignment_config": TINY_DPO,
            "alignment_method": "dpo",
        }
    )
    deadline = time.monotonic() + 600
    while Pipeline.objects.get(pk=pipeline.pk).is_active:
        assert time.monotonic() < deadline, celery_worker_process.log_path.read_text()[-4000:]
        time.sleep(1)
    pipeline.refresh_from_db()
    jobs = {job.kind: job for job in pipeline.jobs.all()}
    assert pipeline.status == Pipeline.Status.SUCCEEDED, (
        pipeline.reason,
        {k: j.error + j.log[-1500:] for k, j in jobs.items()},
    )
    assert set(jobs) == {Job.Kind.EXPORT, Job.Kind.REWARD, Job.Kind.FLOW_DPO, Job.Kind.GENERATE}
    assert all(job.status == Job.Status.SUCCEEDED for job in jobs.values())
    policy = ModelVersion.objects.get(kind=ModelVersion.Kind.POLICY, job=jobs[Job.Kind.FLOW_DPO])
    reward = ModelVersion.objects.get(kind=ModelVersion.Kind.REWARD)
    assert reward.snapshot == policy.snapshot
    # The worker kept the decoded frames for the next run, in the site's frame cache.
    assert reward.config["frame_cache_dir"] == settings.VIDPREF_FRAME_CACHE
    assert reward.config["frame_cache_max_gb"] == settings.VIDPREF_FRAME_CACHE_MAX_GB > 0
    assert any(Path(settings.VIDPREF_FRAME_CACHE).rglob("*.npy"))

    batch = Batch.objects.get(source=f"generated:job-{jobs[Job.Kind.GENERATE].pk}")
    new_pairs = Pair.objects.filter(batch=batch)
    assert new_pairs.count() == 3 and all(0 < pair.priority <= 1 for pair in new_pairs)
    assert set(Video.objects.filter(origin=Video.Origin.GENERATED).values_list("generator", flat=True)) == {
        policy.name,
        "base",
    }

    annotator_create(username="after-the-loop", password="pw-after-the-loop-1")
    annotator = get_user_model().objects.get(username="after-the-loop")
    judged = 0
    while (lease := assignment_next(annotator=annotator)) is not None:
        if lease.pair.batch_id == batch.pk:
            judgment_submit(
                assignment_id=lease.pk,
                annotator=annotator,
                labels=ScreenLabels("left", "tie", "right"),
                duration_ms=4000,
                watched_ms=4000,
            )
            judged += 1
        else:
            judgment_submit(
                assignment_id=lease.pk,
                annotator=annotator,
                labels=ScreenLabels("tie", "tie", "tie"),
                duration_ms=4000,
                watched_ms=4000,
            )
    assert judged == 3  # the generated pairs are in the queue and take judgments like any other
