"""Uploaded imports (API and admin) run on the media queue in a real worker and report progress."""

import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotate.models import Pair
from tests.conftest import render_clip
from workers.models import Job


def _wait(job_id: int, timeout: float = 120) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.is_finished:
            return job
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not finish: {Job.objects.get(pk=job_id).__dict__}")


@pytest.mark.slow
def test_api_upload_import_runs_in_the_worker(celery_worker_process, client, make_user, tmp_path):
    render_clip(tmp_path / "a.mp4")
    render_clip(tmp_path / "b.mp4", source="smptebars")
    manifest = (
        "path_A,path_B,prompt,VQ,MQ,TA\n"
        "videos/a.mp4,videos/b.mp4,an uploaded pair,A,B,same\n"
        "videos/a.mp4,gone.mp4,x,A,A,A\n"
    )
    client.force_login(make_user(staff=True))
    response = client.post(
        "/api/v1/imports/",
        {
            "manifest": SimpleUploadedFile("pairs.csv", manifest.encode()),
            "videos": [
                SimpleUploadedFile("a.mp4", (tmp_path / "a.mp4").read_bytes()),
                SimpleUploadedFile("b.mp4", (tmp_path / "b.mp4").read_bytes()),
            ],
            "gold": "true",
        },
    )
    assert response.status_code == 202, response.content
    job = _wait(response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log
    assert job.progress == 1.0
    assert job.result["pairs_created"] == 1 and job.result["skipped"][0]["line"] == 3
    assert "gone.mp4: file not found" in job.log
    pair = Pair.objects.get()
    assert pair.is_gold and pair.prompt.text == "an uploaded pair"
    assert client.get(f"/api/v1/jobs/{job.pk}/").json()["status"] == "succeeded"


def test_import_upload_is_staff_only(client, make_user):
    client.force_login(make_user())
    response = client.post("/api/v1/imports/", {"manifest": SimpleUploadedFile("m.csv", b"x")})
    assert response.status_code == 403
    assert Job.objects.count() == 0


def test_admin_import_form_queues_a_job(client, make_user, django_capture_on_commit_callbacks, monkeypatch):
    from celery import current_app

    sent = []
    monkeypatch.setattr(
        current_app, "send_task", lambda name, args: sent.append(args[0]) or type("R", (), {"id": "x"})()
    )
    admin = make_user(staff=True)
    admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    rows = json.dumps({"prompt": "p", "video_a": "../../etc/passwd", "video_b": "b.mp4"}) + "\n"
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/workers/job/import/",
            {
                "manifest": SimpleUploadedFile("m.jsonl", rows.encode()),
                "videos": [SimpleUploadedFile("../../evil.mp4", b"data")],
            },
        )
    assert response.status_code == 302
    job = Job.objects.get()
    assert sent == [job.pk]
    upload = job.params["media_root"]
    from pathlib import Path

    assert sorted(p.name for p in Path(upload).iterdir()) == ["evil.mp4", "m.jsonl"]  # no path traversal
    assert client.get(f"/admin/workers/job/{job.pk}/change/").status_code == 200
