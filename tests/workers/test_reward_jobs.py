"""Reward-model training from the admin: a job on the gpu queue, run by a real worker, registers a ModelVersion."""

import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.alignment.test_reward_train import brightness_snapshot
from workers.models import DatasetSnapshot, Job, ModelVersion
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
    assert job.progress == 1.0 and "step 12 of 12" in job.progress_text and "small CPU backbone" in job.log
    assert client.get("/admin/workers/modelversion/").status_code == 200


def test_bad_training_requests_are_refused_with_the_reason(db, tmp_path):
    evaluation = registered(brightness_snapshot(tmp_path / "eval"), kind=DatasetSnapshot.Kind.EVALUATION)
    with pytest.raises(ValueError, match="evaluation set"):
        reward_job_create(snapshot=evaluation)
    empty = DatasetSnapshot.objects.create(name="empty", uri=str(tmp_path), counts={"pairs": 0, "train": 0})
    with pytest.raises(ValueError, match="no pairs in its train split"):
        reward_job_create(snapshot=empty)
