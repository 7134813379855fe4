"""Reward-model training from the admin: a job on the gpu queue, run by a real worker, registers a ModelVersion."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.alignment.test_reward_train import brightness_snapshot
from tests.conftest import start_celery_worker, stop_celery_worker, wait_for_child_sessions_to_end
from workers.models import DatasetSnapshot, Job, ModelVersion
from workers.services.jobs import job_cancel, job_folder
from workers.services.reward import reward_job_create


def registered(folder: Path, **fields) -> DatasetSnapshot:
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    return DatasetSnapshot.objects.create(name=folder.name, uri=str(folder), counts=manifest["counts"], **fields)


@pytest.fixture
def prefork_worker(transactional_db, tmp_path):
    """A real worker started as the demo starts it (``-Q default,media,gpu --concurrency 1``) on the prefork pool,
    named explicitly: its task runs in a forked, daemonic child, which may not start processes itself."""
    process = start_celery_worker(tmp_path / "worker.log", queues="default,media,gpu", pool="prefork")
    yield process
    stop_celery_worker(process)
    wait_for_child_sessions_to_end()


def wait_until_finished(job: Job, worker, seconds: float) -> Job:
    deadline = time.monotonic() + seconds
    while not Job.objects.get(pk=job.pk).is_finished:
        assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
        time.sleep(0.5)
    job.refresh_from_db()
    return job


def test_admin_trains_a_reward_model_with_the_default_config_in_a_prefork_worker(
    prefork_worker, client, make_user, tmp_path
):
    """The site's default config loads its training pairs with DataLoader worker processes; the prefork pool's
    task process is daemonic, so the job trains in a child process of its own and the worker follows it."""
    from workers.services.reward import reward_base_config

    assert (
        reward_base_config()["num_workers"] > 0
    )  # what failed with "daemonic processes are not allowed to have children"
    snapshot = registered(brightness_snapshot(tmp_path / "snap-1"))
    admin = make_user(staff=True)
    admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    response = client.post(
        "/admin/workers/datasetsnapshot/", {"action": "train_reward_model", "_selected_action": [snapshot.pk]}
    )
    assert response.status_code == 302
    job = wait_until_finished(Job.objects.get(kind=Job.Kind.REWARD), prefork_worker, 240)  # the default config
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log
    version = ModelVersion.objects.get(job=job)
    assert (version.kind, version.snapshot_id, job.result["model_version_id"]) == ("reward", snapshot.pk, version.pk)
    assert set(version.metrics["validation"]) == {"VQ", "MQ", "TA"} and version.metrics["validation_pairs"] == 12
    assert load_file(Path(version.path) / "model.safetensors")  # the weights are there
    # The default keeps the epoch with the best validation accuracy, and registers that epoch's accuracies.
    metrics = json.loads((Path(version.path).parent / "metrics.json").read_text())
    chosen = next(entry for entry in metrics["eval"] if entry["step"] == metrics["best"]["step"])
    assert version.config["keep_best"] and version.metrics["epoch"] == chosen["epoch"]
    assert version.metrics["validation"]["VQ"] == {
        key: chosen["VQ"][key] for key in ("accuracy_with_ties", "accuracy_without_ties")
    }
    assert version.config["mixed_precision"] == "no" and version.config["num_workers"] == 2
    assert job.progress == 1.0 and [point[0] for point in version.metrics["charts"]["train_loss"]] == list(range(1, 13))
    assert "small CPU backbone" in job.log
    # Trained in a child process of its own, not in the task's process.
    assert "reward-train in a child process (pid " in job.log
    assert job.attempts[-1]["launch_pgid"] != job.attempts[-1]["pid"]
    assert "reward-train: evaluation at step 3 (epoch 1): 12 pairs" in job.log  # the child's events, in the job's log
    output = prefork_worker.log_path.read_text()
    # ... and in the worker's output: one line at INFO per event (start, each evaluation and checkpoint, the end), no
    # line per step, nothing of training at WARNING.
    events = [line for line in output.splitlines() if f"job {job.pk} reward-train:" in line]
    assert any("INFO" in line and "evaluation at step 12" in line for line in events), output[-3000:]
    assert any("INFO" in line and "checkpoint step-00000012 saved" in line for line in events), output[-3000:]
    assert any("INFO" in line and "reward-train: done: 12 steps" in line for line in events), output[-3000:]
    assert len(events) < 20 and not [line for line in output.splitlines() if "WARNING" in line], output[-3000:]
    assert "daemonic" not in output
    assert client.get("/admin/workers/modelversion/").status_code == 200


def test_cancelling_a_training_job_stops_its_child_process_group(prefork_worker, tmp_path):
    snapshot = registered(brightness_snapshot(tmp_path / "snap-cancel"))
    job = reward_job_create(snapshot=snapshot, overrides={"epochs": 200, "batch_size": 4, "num_workers": 1})
    deadline = time.monotonic() + 120
    while not Job.objects.get(pk=job.pk).progress_text.startswith("step "):  # training, DataLoader worker and all
        assert time.monotonic() < deadline, prefork_worker.log_path.read_text()[-3000:]
        time.sleep(0.2)
    job.refresh_from_db()
    pgid = job.attempts[-1]["launch_pgid"]
    os.killpg(pgid, 0)  # the child's group is there
    job_cancel(job=job, by="admin")
    deadline = time.monotonic() + 60
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the child's process group outlived the cancel"
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while Job.objects.get(pk=job.pk).attempts[-1]["outcome"] == "running":
        assert time.monotonic() < deadline, prefork_worker.log_path.read_text()[-3000:]
        time.sleep(0.2)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and job.attempts[-1]["outcome"] == "cancelled"
    assert not ModelVersion.objects.filter(job=job).exists()


def test_a_failing_trainer_fails_the_job_with_the_end_of_its_output(db, tmp_path, settings):
    settings.JOB_ROOT = tmp_path / "jobs"
    snapshot = registered(brightness_snapshot(tmp_path / "snap-bad"))
    job = reward_job_create(snapshot=snapshot, overrides={"model": {"backbone": "qwen2vl"}})  # no Qwen2-VL folder
    from workers.services.jobs import job_execute
    from workers.services.reward import reward_work

    with pytest.raises(RuntimeError, match="reward-train exited with code 1"):
        job_execute(job_id=job.pk, work=reward_work)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "the local Qwen2-VL folder is required for backbone 'qwen2vl'" in job.error  # the child's traceback's end
    assert (job_folder(job) / "reward-train.log").is_file()


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
    job = reward_job_create(
        snapshot=snapshot,
        overrides={
            "epochs": 10,
            "batch_size": 4,
            "save_every_steps": 3,
            "num_workers": 0,
            "warmup_steps": 0,
            "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_frames": 4, "tubelet": [2, 8, 8]},
        },
    )
    log = tmp_path / "workers.log"
    first = start_celery_worker(log, queues="gpu")
    try:
        deadline = time.monotonic() + 180
        checkpoints = job_folder(job) / "reward" / "checkpoints"  # this job's own (not an earlier database's job 42)
        # a checkpoint to resume from, and the job's progress (the worker reads the trainer's every 2 s) under way
        while not list(checkpoints.glob("step-*")) or not Job.objects.get(pk=job.pk).progress:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        job.refresh_from_db()
        assert job.status == Job.Status.RUNNING and not job.is_finished
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        # The task ran in the worker's prefork child, an orphan now: once it is gone (reaped), its attempt is over.
        task_pid, deadline = Job.objects.get(pk=job.pk).attempts[0]["pid"], time.monotonic() + 60
        while Path(f"/proc/{task_pid}").exists():
            assert time.monotonic() < deadline, Path(f"/proc/{task_pid}/status").read_text()[:200]
            time.sleep(0.2)
        step_at_kill = Job.objects.get(pk=job.pk).progress
        # the replacement looks for abandoned messages quickly (production: after CELERY_VISIBILITY_TIMEOUT)
        second = start_celery_worker(
            log,
            queues="gpu",
            CELERY_VISIBILITY_TIMEOUT="1",
            CELERY_UNACKED_RESTORE_INTERVAL="1",
            CELERY_UNACKED_RESTORE_THROTTLE="1",
        )
        try:
            deadline = time.monotonic() + 300
            while not Job.objects.get(pk=job.pk).is_finished:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        finally:
            stop_celery_worker(second)
    finally:
        stop_celery_worker(first)
        wait_for_child_sessions_to_end()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log
    assert [attempt["outcome"] for attempt in job.attempts] == ["lost (worker died or was killed)", "succeeded"]
    assert job.attempts[0]["pid"] != job.attempts[1]["pid"]  # the task processes (prefork: children of the workers)
    with pytest.raises(ProcessLookupError):  # the first attempt's trainer died with its worker
        os.killpg(job.attempts[0]["launch_pgid"], 0)
    assert "resuming from checkpoint step-" in job.log and step_at_kill > 0, job.log
    # 36 training pairs, 4 a step, 10 epochs: nothing repeated or lost
    version = ModelVersion.objects.get(job=job)
    assert [point[0] for point in version.metrics["charts"]["train_loss"]] == list(range(1, 91))
    assert ModelVersion.objects.filter(job=job).count() == 1


def test_training_on_several_processes_goes_through_accelerate_launch(db, tmp_path, settings):
    """``VIDPREF_TRAIN_PROCESSES`` > 1 (on a GPU machine: one per GPU) trains under ``accelerate launch``; the
    worker follows the child's progress file. Here: two CPU processes (gloo)."""
    settings.VIDPREF_TRAIN_PROCESSES = "2"
    settings.JOB_ROOT = tmp_path / "jobs"
    snapshot = registered(brightness_snapshot(tmp_path / "snap-ddp"))
    job = reward_job_create(
        snapshot=snapshot,
        overrides={
            "epochs": 2,
            "batch_size": 8,
            "num_workers": 0,
            "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_frames": 4, "tubelet": [2, 8, 8]},
        },
    )
    from workers.services.jobs import job_execute
    from workers.services.reward import reward_work

    result = job_execute(job_id=job.pk, work=reward_work)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log
    assert "reward-train on 2 processes (CPU) under accelerate launch" in job.log
    assert [point[0] for point in job.metrics["charts"]["train_loss"]] == list(range(1, 11))
    assert load_file(Path(result["path"]) / "model.safetensors")


def test_the_admin_fine_tunes_the_released_videoreward_and_can_start_from_the_result(
    db, staff_client, tmp_path, settings
):
    """Register a VideoAlign checkpoint (a tiny replica in the released format), start a reward job from it in the
    admin form; the job fine-tunes it in its own format and registers a VideoAlign version that loads by path
    and can be started from in turn."""
    from django.core.management import call_command

    from alignment.reward import load_reward_model
    from alignment.reward.tiny import build_tiny_qwen2vl
    from alignment.reward.videoalign import VideoAlignRewardModel
    from tests.alignment.test_videoalign_checkpoint import write_videoalign_replica
    from tests.workers.test_job_forms import as_posted
    from workers.job_specs import JOB_SPECS, JobConfigForm
    from workers.services.jobs import job_execute
    from workers.services.reward import reward_work

    settings.JOB_ROOT = tmp_path / "jobs"
    base = build_tiny_qwen2vl(tmp_path / "qwen2vl")
    write_videoalign_replica(base, tmp_path / "VideoReward")
    call_command(
        "register_videoalign_model", str(tmp_path / "VideoReward"), "--name", "videoreward", "--base-model", str(base)
    )
    released = ModelVersion.objects.get(name="videoreward")
    snapshot = registered(brightness_snapshot(tmp_path / "snap-va", n_videos=6, n_pairs=8))
    ModelVersion.objects.create(kind=ModelVersion.Kind.REWARD, name="small-one", path=str(tmp_path / "x"), config={})

    page = staff_client.get("/admin/workers/job/new/reward/").content.decode()
    assert "start from" in page and "videoreward" in page and "small-one" not in page  # VideoAlign versions only
    posted = {
        **as_posted(JobConfigForm(JOB_SPECS[Job.Kind.REWARD])),
        "snapshot": snapshot.pk,
        "init_version": released.pk,
        "epochs": 1,
        "batch_size": 2,
        "max_steps": 2,
        "num_workers": 0,
        "learning_rate": 1e-3,
    }
    response = staff_client.post("/admin/workers/job/new/reward/", posted)
    assert response.status_code == 302, response.context["form"].errors if response.context else response
    job = Job.objects.get(kind=Job.Kind.REWARD)
    assert job.params["init_version_id"] == released.pk
    job_execute(job_id=job.pk, work=reward_work)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log
    assert "fine-tuning VideoAlign checkpoint videoreward" in job.log
    tuned = ModelVersion.objects.get(job=job)
    assert tuned.config["format"] == "videoalign" and tuned.config["started_from"] == "videoreward"
    model = load_reward_model(tuned.path)  # by path, as generation and pipelines load a version
    assert isinstance(model, VideoAlignRewardModel) and model.base_path == base.resolve()
    again = JobConfigForm(JOB_SPECS[Job.Kind.REWARD])
    assert set(again.fields["init_version"].queryset) == {released, tuned}
    with pytest.raises(ValueError, match="not a VideoAlign reward checkpoint"):
        reward_job_create(snapshot=snapshot, init_version=ModelVersion.objects.get(name="small-one"))
