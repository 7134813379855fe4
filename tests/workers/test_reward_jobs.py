"""Reward-model training from the admin: a job on the gpu queue, run by a real worker, registers a ModelVersion."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.alignment.test_reward_train import brightness_snapshot
from tests.conftest import _wait_for_other_sessions_to_end, start_celery_worker, stop_celery_worker
from workers.models import DatasetSnapshot, Job, ModelVersion
from workers.services.jobs import job_folder
from workers.services.training import reward_job_create


def registered(folder: Path, **fields) -> DatasetSnapshot:
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    return DatasetSnapshot.objects.create(name=folder.name, uri=str(folder), counts=manifest["counts"], **fields)


def test_admin_trains_a_reward_model_in_the_worker(celery_worker_process, client, make_user, tmp_path):
    snapshot = registered(brightness_snapshot(tmp_path / "snap-1"))
    admin = make_user(staff=True)
    admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    response = client.post("/admin/workers/datasetsnapshot/", {"action": "train_reward_model",
                                                              "_selected_action": [snapshot.pk]})
    assert response.status_code == 302
    job = Job.objects.get(kind=Job.Kind.REWARD)  # with the default config: the small CPU backbone
    deadline = time.monotonic() + 240
    while job.status not in (Job.Status.SUCCEEDED, Job.Status.FAILED):
        assert time.monotonic() < deadline, celery_worker_process.log_path.read_text()[-3000:]
        time.sleep(0.5)
        job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log
    version = ModelVersion.objects.get(job=job)
    assert (version.kind, version.snapshot_id, job.result["model_version_id"]) == ("reward", snapshot.pk, version.pk)
    assert set(version.metrics["validation"]) == {"VQ", "MQ", "TA"} and version.metrics["validation_pairs"] == 12
    assert load_file(Path(version.path) / "model.safetensors")  # the weights are there
    # The default keeps the epoch with the best validation accuracy, and registers that epoch's accuracies.
    metrics = json.loads((Path(version.path).parent / "metrics.json").read_text())
    chosen = next(entry for entry in metrics["eval"] if entry["step"] == metrics["best"]["step"])
    assert version.config["keep_best"] and version.metrics["epoch"] == chosen["epoch"]
    assert version.metrics["validation"]["VQ"] == {key: chosen["VQ"][key]
                                                   for key in ("accuracy_with_ties", "accuracy_without_ties")}
    assert job.progress == 1.0 and "step 12 of 12" in job.progress_text and "small CPU backbone" in job.log
    assert client.get("/admin/workers/modelversion/").status_code == 200


def test_bad_training_requests_are_refused_with_the_reason(db, tmp_path):
    evaluation = registered(brightness_snapshot(tmp_path / "eval"), kind=DatasetSnapshot.Kind.EVALUATION)
    with pytest.raises(ValueError, match="evaluation set"):
        reward_job_create(snapshot=evaluation)
    empty = DatasetSnapshot.objects.create(name="empty", uri=str(tmp_path), counts={"pairs": 0, "train": 0})
    with pytest.raises(ValueError, match="no pairs in its train split"):
        reward_job_create(snapshot=empty)


def test_a_worker_killed_mid_training_is_replaced_and_the_job_resumes_from_its_checkpoint(transactional_db, tmp_path):
    """SIGKILL of the whole worker (no chance to clean up): the unacknowledged task goes back to the queue,
    a new worker resumes from the newest checkpoint, and the job record shows both attempts."""
    snapshot = registered(brightness_snapshot(tmp_path / "snap-kill"))
    job = reward_job_create(snapshot=snapshot, overrides={
        "epochs": 10, "batch_size": 4, "save_every_steps": 3, "num_workers": 0, "warmup_steps": 0,
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_frames": 4, "tubelet": [2, 8, 8]}})
    log = tmp_path / "workers.log"
    first = start_celery_worker(log, queues="gpu")
    try:
        deadline = time.monotonic() + 180
        checkpoints = job_folder(job) / "reward" / "checkpoints"  # this job's own (not an earlier database's job 42)
        while not list(checkpoints.glob("step-*")):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        job.refresh_from_db()
        assert job.status == Job.Status.RUNNING and not job.is_finished
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        step_at_kill = Job.objects.get(pk=job.pk).progress
        # the replacement looks for abandoned messages quickly (production: after CELERY_VISIBILITY_TIMEOUT)
        second = start_celery_worker(log, queues="gpu", CELERY_VISIBILITY_TIMEOUT="1",
                                     CELERY_UNACKED_RESTORE_INTERVAL="1", CELERY_UNACKED_RESTORE_THROTTLE="1")
        try:
            deadline = time.monotonic() + 300
            while not Job.objects.get(pk=job.pk).is_finished:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        finally:
            stop_celery_worker(second)
    finally:
        stop_celery_worker(first)
        _wait_for_other_sessions_to_end()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log
    assert [attempt["outcome"] for attempt in job.attempts] == ["lost (worker died or was killed)", "succeeded"]
    assert job.attempts[0]["pid"] == first.pid and job.attempts[1]["pid"] != first.pid
    assert "resuming from checkpoint step-" in job.log and step_at_kill > 0
    assert "step 90 of 90" in job.progress_text  # 36 training pairs, 4 a step, 10 epochs: nothing repeated or lost
    assert ModelVersion.objects.filter(job=job).count() == 1


def test_training_on_several_processes_goes_through_accelerate_launch(db, tmp_path, settings):
    """``VIDPREF_TRAIN_PROCESSES`` > 1 (on a GPU machine: one per GPU) trains under ``accelerate launch``; the
    worker follows the child's progress file. Here: two CPU processes (gloo)."""
    settings.VIDPREF_TRAIN_PROCESSES = "2"
    settings.JOB_ROOT = tmp_path / "jobs"
    snapshot = registered(brightness_snapshot(tmp_path / "snap-ddp"))
    job = reward_job_create(snapshot=snapshot, overrides={
        "epochs": 2, "batch_size": 8, "num_workers": 0,
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_frames": 4, "tubelet": [2, 8, 8]}})
    from workers.services.jobs import job_execute
    from workers.services.training import reward_work

    result = job_execute(job_id=job.pk, work=reward_work)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log
    assert "reward-train on 2 processes (CPU) under accelerate launch" in job.log
    assert "step 10 of 10" in job.progress_text  # 36 pairs, 8 a step over both processes, 2 epochs
    assert [point[0] for point in job.metrics["charts"]["train_loss"]] == list(range(1, 11))
    assert load_file(Path(result["path"]) / "model.safetensors")
