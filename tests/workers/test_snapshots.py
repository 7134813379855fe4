"""Snapshot export: consensus and filters, the split by prompt, the files, the nightly schedule, crashes."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from alignment.data.snapshot import read_snapshot, split_for_prompt
from annotate.consensus import EXCLUDED_GROUP, ConsensusFilters
from annotate.models import Assignment, Batch, Judgment, Prompt
from tests.conftest import ROOT, child_env
from workers.models import DatasetSnapshot, Job
from workers.services.snapshots import SnapshotEmpty, snapshot_create, snapshot_job_create_if_due, snapshot_nightly_due
from workers.tasks.default import export_snapshot_nightly


def judge(pair, annotator, vq, mq, ta, *, flag="", left_is_a=True, when=None):
    """A submitted judgment straight in the database (labels in A/B terms)."""
    now = when or timezone.now()
    assignment = Assignment.objects.create(
        pair=pair,
        annotator=annotator,
        left_is_a=left_is_a,
        leased_at=now,
        expires_at=now + timedelta(minutes=10),
        state=Assignment.State.SUBMITTED,
    )
    judgment = Judgment.objects.create(
        pair=pair,
        annotator=annotator,
        assignment=assignment,
        vq=vq,
        mq=mq,
        ta=ta,
        left_is_a=left_is_a,
        flag=flag,
        duration_ms=4000,
        watched_ms=3000,
    )
    if when:
        Judgment.objects.filter(pk=judgment.pk).update(created_at=when)
    return judgment


@pytest.fixture
def annotators(make_user):
    return [make_user(f"ann{i}") for i in range(4)]


def pairs_by_id(snapshot):
    return {row["pair_id"]: row for row in pq.read_table(f"{snapshot.uri}/pairs.parquet").to_pylist()}


def test_consensus_labels_agreement_and_default_filters(transactional_db, tmp_path, make_pairs, annotators):
    clear, split, ties, flagged, gold_pair = make_pairs(5)
    gold_pair.is_gold = True
    gold_pair.save(update_fields=["is_gold"])
    a, b, c, d = annotators
    for user in (a, b, c):
        judge(clear, user, "A", "B", "TIE")
    judge(split, a, "A", "A", "A")
    judge(split, b, "B", "A", "B")
    judge(split, c, "TIE", "B", "B")  # VQ: no majority → tie; MQ 2×A; TA 2×B
    judge(ties, a, "TIE", "TIE", "TIE")
    judge(flagged, a, "A", "A", "A", flag="broken")
    judge(gold_pair, a, "A", "A", "A")
    d.is_active = False
    d.save(update_fields=["is_active"])
    judge(ties, d, "A", "A", "A")  # a disabled annotator: not counted

    snapshot = snapshot_create(root=tmp_path)
    rows = pairs_by_id(snapshot)
    assert set(rows) == {clear.pk, split.pk, ties.pk}  # flagged and gold pairs left out by default
    assert (rows[clear.pk]["vq"], rows[clear.pk]["mq"], rows[clear.pk]["ta"]) == (1, -1, 0)
    assert rows[clear.pk]["agreement_vq"] == 1.0 and rows[clear.pk]["n_judgments"] == 3
    assert (rows[split.pk]["vq"], rows[split.pk]["mq"], rows[split.pk]["ta"]) == (0, 1, -1)
    assert rows[split.pk]["agreement_vq"] == pytest.approx(1 / 3) and rows[split.pk]["agreement_mq"] == pytest.approx(
        2 / 3
    )
    assert rows[ties.pk]["n_judgments"] == 1 and rows[ties.pk]["vq"] == 0
    assert rows[clear.pk]["video_a"].startswith("/") and rows[clear.pk]["video_a"].endswith(clear.video_a.file.name)
    assert rows[clear.pk]["split"] == split_for_prompt(clear.prompt.text)

    judgments = pq.read_table(f"{snapshot.uri}/judgments.parquet").to_pylist()
    assert len(judgments) == 7 and {j["annotator_id"] for j in judgments} == {a.pk, b.pk, c.pk}
    first = min(judgments, key=lambda j: j["judgment_id"])
    assert (first["pair_id"], first["vq"], first["mq"], first["ta"], first["left_is_a"]) == (clear.pk, 1, -1, 0, True)
    assert first["created_at"] is not None and first["watched_ms"] == 3000

    manifest = json.loads((tmp_path / snapshot.name / "manifest.json").read_text())
    assert manifest["counts"]["pairs"] == 3 and manifest["counts"]["judgments"] == 7
    assert manifest["agreement"]["VQ"]["labelled_pairs"] == 3
    assert manifest["agreement"]["VQ"]["tie_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert DatasetSnapshot.objects.get().counts == manifest["counts"]
    read = read_snapshot(snapshot.uri)  # every checksum verifies
    assert {p.pair_id: p.labels for p in read.pairs}[split.pk] == (0, 1, -1)


def test_filters_widen_and_narrow_the_export(transactional_db, tmp_path, make_pairs, annotators):
    old, new, flagged, contested = make_pairs(4)
    a, b, c, excluded = annotators
    Group.objects.get_or_create(name=EXCLUDED_GROUP)[0].user_set.add(excluded)
    last_week = timezone.now() - timedelta(days=7)
    judge(old, a, "A", "A", "A", when=last_week)
    judge(new, a, "B", "B", "B")
    judge(new, excluded, "A", "A", "A")
    judge(flagged, a, "A", "A", "A", flag="unclear")
    for user, label in ((a, "A"), (b, "A"), (c, "B")):
        judge(contested, user, label, label, label)
    batch = Batch.objects.create(name="later")
    new.batch = batch
    new.save(update_fields=["batch"])

    def exported(**filters):
        snapshot = snapshot_create(filters=ConsensusFilters(**filters), root=tmp_path)
        return pairs_by_id(snapshot)

    assert set(exported()) == {old.pk, new.pk, contested.pk}
    assert exported()[new.pk]["n_judgments"] == 1  # the excluded annotator's judgment does not count
    assert exported(include_excluded_annotators=True)[new.pk]["n_judgments"] == 2
    assert set(exported(include_flagged=True)) == {old.pk, new.pk, flagged.pk, contested.pk}
    assert set(exported(judged_from=timezone.now() - timedelta(days=1))) == {new.pk, contested.pk}
    assert set(exported(judged_until=timezone.now() - timedelta(days=1))) == {old.pk}
    assert set(exported(batch_ids=(batch.pk,))) == {new.pk}
    assert set(exported(min_judgments=3)) == {contested.pk}
    assert set(exported(min_agreement=0.7)) == {old.pk, new.pk}  # 2 of 3 is below 0.7
    with pytest.raises(SnapshotEmpty, match="no judged pair passes"):
        snapshot_create(filters=ConsensusFilters(min_judgments=4), root=tmp_path)
    with pytest.raises(ValueError, match="no_majority"):
        ConsensusFilters(no_majority="coin flip")


def test_no_majority_can_drop_the_label(transactional_db, tmp_path, make_pairs, annotators):
    (pair,) = make_pairs(1)
    for user, label in zip(annotators, ("A", "B", "TIE")):
        judge(pair, user, label, "A", "A")
    row = pairs_by_id(snapshot_create(filters=ConsensusFilters(no_majority="drop"), root=tmp_path))[pair.pk]
    assert row["vq"] is None and row["agreement_vq"] is None and row["mq"] == 1
    # exported without the videos: storage paths VideoAlign's loader cannot open, so no VideoAlign CSV (an
    # unjudged dimension's empty cell is checked in tests/alignment/test_data.py and the round trip below)
    folder = tmp_path / DatasetSnapshot.objects.get().name
    assert not list(folder.glob("videoalign*.csv"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert f"pair {pair.pk}:" in manifest["videoalign"]["reason"] and "bundled" in manifest["videoalign"]["reason"]


def test_split_in_sql_matches_alignment_split_for_prompt(transactional_db, tmp_path, make_user):
    from annotate.models import Pair, Video

    user = make_user()
    texts = [f"a {colour} ball rolls {i} times — ünïcode ✓" for i in range(120) for colour in ("red",)]
    for i, text in enumerate(texts):
        prompt = Prompt.objects.create(text=text)
        videos = [
            Video.objects.create(prompt=prompt, file=f"videos/s{i}{side}.mp4", sha256=f"{i:062d}{side}0")
            for side in "ab"
        ]
        judge(Pair.objects.create(prompt=prompt, video_a=videos[0], video_b=videos[1]), user, "A", "A", "A")
    snapshot = snapshot_create(root=tmp_path, val_fraction=0.25, test_fraction=0.25)
    rows = pq.read_table(f"{snapshot.uri}/pairs.parquet").to_pylist()
    assert [row["split"] for row in rows] == [
        split_for_prompt(row["prompt"], val_fraction=0.25, test_fraction=0.25) for row in rows
    ]
    assert {row["split"] for row in rows} == {"train", "val", "test"}


def test_nightly_export_runs_only_when_something_new_was_judged(
    transactional_db, tmp_path, settings, make_pairs, annotators, monkeypatch
):
    settings.SNAPSHOT_ROOT = tmp_path
    first, second = make_pairs(2)
    assert not snapshot_nightly_due()
    judge(first, annotators[0], "A", "A", "A")
    assert snapshot_nightly_due()
    snapshot_create(root=tmp_path)
    assert not snapshot_nightly_due() and snapshot_job_create_if_due() is None
    judge(second, annotators[0], "B", "B", "B")
    assert snapshot_nightly_due()
    from celery import current_app

    queued = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args: queued.append(args[0]) or SimpleNamespace(id="t"))
    job_id = export_snapshot_nightly()  # what beat calls
    assert queued == [job_id] and Job.objects.get(pk=job_id).params == {"nightly": True}
    assert (
        settings.CELERY_BEAT_SCHEDULE["nightly snapshot export"]["task"]
        == "workers.tasks.default.export_snapshot_nightly"
    )


def test_command_exports_and_rejects_bad_options(transactional_db, tmp_path, make_pairs, annotators, capsys):
    (pair,) = make_pairs(1)
    judge(pair, annotators[0], "A", "TIE", "B")
    call_command("export_snapshot", "--out", str(tmp_path), "--name", "v1", verbosity=0)
    assert "snapshot v1: 1 pairs" in capsys.readouterr().out
    with pytest.raises(CommandError, match="already exists"):
        call_command("export_snapshot", "--out", str(tmp_path), "--name", "v1", verbosity=0)
    with pytest.raises(CommandError, match="min_agreement"):
        call_command("export_snapshot", "--out", str(tmp_path), "--min-agreement", "2", verbosity=0)
    with pytest.raises(CommandError, match="not a date"):
        call_command("export_snapshot", "--out", str(tmp_path), "--from", "yesterday", verbosity=0)


def _seed_many_judged_pairs(count: int) -> None:
    """``count`` pairs with one judgment each, inserted in SQL (fast enough to make an export take a while)."""
    from django.db import connection

    from tests.conftest import seed_judged_pairs

    with connection.cursor() as cursor:
        seed_judged_pairs(cursor, pairs=count, judgments_per_pair=1)


def test_a_killed_export_leaves_no_snapshot_and_the_next_one_succeeds(transactional_db, tmp_path):
    _seed_many_judged_pairs(60_000)
    out = tmp_path / "snapshots"
    command = [
        sys.executable,
        "manage.py",
        "export_snapshot",
        "--out",
        str(out),
        "--name",
        "killed",
        "--verbosity",
        "0",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(".partial-" in entry.name for entry in out.iterdir())):
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "the export never started writing"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert [entry.name for entry in out.iterdir() if not entry.name.startswith(".")] == []
    assert not DatasetSnapshot.objects.exists()

    snapshot = snapshot_create(root=out, name="killed")  # the same name is free: nothing was published
    assert [entry.name for entry in out.iterdir()] == ["killed"]  # the dead writer's folder was swept
    assert read_snapshot(snapshot.uri).manifest["counts"]["pairs"] == 60_000
    from django.db import connection

    with connection.cursor() as cursor:  # neither export left its consensus table behind
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'snapshot_pairs%%'")
        assert cursor.fetchone()[0] == 0


def test_admin_export_runs_in_a_real_worker(celery_worker_process, client, settings, make_pairs, annotators, make_user):
    (pair,) = make_pairs(1)
    judge(pair, annotators[0], "B", "B", "A")
    admin = make_user(staff=True)
    admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    assert client.get("/admin/workers/datasetsnapshot/").status_code == 200
    assert client.get("/admin/workers/datasetsnapshot/export/").status_code == 200
    name = f"from-worker-{uuid.uuid4().hex[:6]}"
    refused = client.post(
        "/admin/workers/datasetsnapshot/export/",
        {"name": name, "min_judgments": 1, "min_agreement": 3, "no_majority": "tie"},
    )
    assert refused.status_code == 200 and "less than or equal to 1" in refused.content.decode()
    assert not Job.objects.exists()
    response = client.post(
        "/admin/workers/datasetsnapshot/export/",
        {"name": name, "min_judgments": 1, "min_agreement": 0.5, "no_majority": "tie"},
    )
    assert response.status_code == 302
    job = wait_for(Job.objects.get(kind=Job.Kind.EXPORT), celery_worker_process)
    assert job.status == Job.Status.SUCCEEDED, job.error
    snapshot = DatasetSnapshot.objects.get(name=name)
    assert snapshot.job_id == job.pk and job.result["counts"]["pairs"] == 1 and job.progress == 1.0
    assert snapshot.uri == str(settings.SNAPSHOT_ROOT / name) and pairs_by_id(snapshot)[pair.pk]["ta"] == 1
    assert client.get(f"/admin/workers/datasetsnapshot/{snapshot.pk}/change/").status_code == 200
    client.post("/admin/workers/datasetsnapshot/", {"action": "export_again", "_selected_action": [snapshot.pk]})
    again = wait_for(Job.objects.filter(kind=Job.Kind.EXPORT).exclude(pk=job.pk).get(), celery_worker_process)
    assert again.params["min_agreement"] == 0.5 and again.status == Job.Status.SUCCEEDED
    for exported in DatasetSnapshot.objects.all():
        shutil.rmtree(exported.uri)


def wait_for(job, worker, timeout=60):
    deadline = time.monotonic() + timeout
    while job.status not in (Job.Status.SUCCEEDED, Job.Status.FAILED):
        assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
        time.sleep(0.2)
        job.refresh_from_db()
    return job


def test_snapshot_uploads_to_s3_compatible_storage_manifest_last(
    transactional_db, tmp_path, settings, monkeypatch, make_pairs, annotators
):
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        settings.AWS_S3_ENDPOINT_URL = f"http://{host}:{port}"
        settings.SNAPSHOT_STORAGE_URL = "s3://training-data/snapshots"
        client = boto3.client("s3", endpoint_url=settings.AWS_S3_ENDPOINT_URL)
        client.create_bucket(Bucket="training-data")
        uploads = []
        real_client = boto3.client

        def recording_client(*args, **kwargs):  # the exporter's own client, with every PUT's key noted in order
            made = real_client(*args, **kwargs)
            made.meta.events.register(
                "before-call.s3.PutObject", lambda params, **_: uploads.append(params["url_path"])
            )
            return made

        monkeypatch.setattr(boto3, "client", recording_client)
        (pair,) = make_pairs(1)
        judge(pair, annotators[0], "A", "B", "TIE")

        snapshot = snapshot_create(root=tmp_path, name="v7")
        assert snapshot.uri == "s3://training-data/snapshots/v7"
        # pairs, judgments, manifest: no VideoAlign CSV for storage paths (videos not bundled)
        assert uploads[-1].endswith("/snapshots/v7/manifest.json") and len(uploads) == 3
        assert not (tmp_path / "v7").exists()  # the local copy was only a staging area
        manifest = json.loads(
            client.get_object(Bucket="training-data", Key="snapshots/v7/manifest.json")["Body"].read()
        )
        body = client.get_object(Bucket="training-data", Key="snapshots/v7/pairs.parquet")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == manifest["files"]["pairs.parquet"]["sha256"]
    finally:
        server.stop()
