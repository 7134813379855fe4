import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "data" / "videoalign-samples"


def database_url_for_children(settings_dict: dict) -> str:
    """A DATABASE_URL naming the database this test session uses (the test database)."""
    from urllib.parse import quote

    host = settings_dict["HOST"] or "localhost"
    user = settings_dict["USER"] or "postgres"
    password = f":{quote(settings_dict['PASSWORD'], safe='')}" if settings_dict.get("PASSWORD") else ""
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    host_part = quote(host, safe="") if host.startswith("/") else host
    return f"postgres://{user}{password}@{host_part}{port}/{settings_dict['NAME']}"


CHILD_APPLICATION_NAME = "vidpref-test-child"


def free_port() -> int:
    """A TCP port nothing listens on now, for a server a test starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra) -> dict:
    """Environment for a subprocess that must see this session's test database and broker."""
    from django.conf import settings
    from django.db import connection

    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    env["DATABASE_URL"] = database_url_for_children(connection.settings_dict)
    env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
    env["PGAPPNAME"] = CHILD_APPLICATION_NAME  # libpq names the child's sessions, so a test can wait for them alone
    env.update(extra)
    return env


@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model

    def make(username=None, *, staff=False, password="pw-for-tests-1"):
        user = get_user_model().objects.create_user(
            username=username or f"user-{uuid.uuid4().hex[:8]}", password=password, is_staff=staff
        )
        return user

    return make


@pytest.fixture
def staff_client(client, make_user):
    """Django's test client logged in as a superuser."""
    admin = make_user(staff=True)
    admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    return client


@pytest.fixture
def make_pairs(db):
    """Pairs on placeholder video rows (no files): for assignment logic, not playback."""
    from annotate.models import Pair, Prompt, Video

    def make(count=1, *, overlap=3, priority=0.0, is_gold=False, gold_labels=None, campaign=None, gold_reason=""):
        tag = uuid.uuid4().hex[:8]
        prompts = Prompt.objects.bulk_create(
            [Prompt(text=f"prompt {tag} {i}", text_sha256=f"{tag}{i:056d}") for i in range(count)]
        )
        videos = Video.objects.bulk_create(
            [
                Video(prompt=prompt, file=f"videos/{tag}-{i}-{side}.mp4", sha256=f"{tag}{side}{i:055d}", fps=24.0)
                for i, prompt in enumerate(prompts)
                for side in "ab"
            ]
        )
        return Pair.objects.bulk_create(
            [
                Pair(
                    prompt=prompts[i],
                    video_a=videos[2 * i],
                    video_b=videos[2 * i + 1],
                    overlap=overlap,
                    priority=priority,
                    is_gold=is_gold,
                    gold_labels=gold_labels,
                    gold_reason=gold_reason,
                    **({"campaign": campaign} if campaign is not None else {}),
                )
                for i in range(count)
            ]
        )

    return make


def start_celery_worker(
    log: Path, *, queues: str = "default,media,gpu", pool: str | None = None, **env
) -> subprocess.Popen:
    """A real `celery worker` as the demo and docker-compose.yml run it (config/processes.py: the prefork pool,
    one child, prefetch 1), in its own process group, on this session's broker and test database; returns once
    it is ready. ``pool`` names a pool explicitly (``--pool prefork``, ``--pool solo``); None: the demo's.
    ``env`` adds environment variables (e.g. a short visibility timeout)."""
    from config.processes import worker_command

    name = f"test-{uuid.uuid4().hex[:6]}@%h"
    command = worker_command(queues=queues, concurrency=1, hostname=name) + ["--without-gossip", "--without-mingle"]
    if pool is not None:
        command += ["--pool", pool]
    start = log.stat().st_size if log.exists() else 0  # a log shared by successive workers: read only ours
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=child_env(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while b"ready." not in log.read_bytes()[start:]:
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the celery worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    process.log_path = log
    return process


def stop_celery_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """A real `celery worker` process on this session's broker and test database (not eager mode)."""
    process = start_celery_worker(tmp_path / "worker.log")
    yield process
    stop_celery_worker(process)
    wait_for_child_sessions_to_end()


def wait_for_child_sessions_to_end(timeout: float = 10.0, *, children_only: bool = True) -> None:
    """PostgreSQL notices a dead client's socket a moment later: wait until the sessions of the child processes
    this session started (workers, servers: ``child_env`` names them) are gone, so the test's flush or the
    database's drop does not meet them. ``children_only=False`` waits for every other session, this process's
    live-server threads included (they close only as the process ends)."""
    from django.db import connection

    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()" + (
        " AND application_name = %s" if children_only else ""
    )
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(query, [CHILD_APPLICATION_NAME] if children_only else [])
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.1)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, dropped only once no other session is on it. Workers and servers started
    by this test session close their connections as they stop (PostgreSQL notices a moment later), but the
    live server can leave one of a finished request thread open until the process exits; a drop that found
    one would fail ("being accessed by other users") and leave the database behind. Every session on this
    per-run database is this run's, so what is still there after the wait is ended."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        wait_for_child_sessions_to_end(timeout=2.0, children_only=False)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        wait_for_child_sessions_to_end(children_only=False)


@pytest.fixture
def samples():
    if not (SAMPLES / "example.csv").exists():
        pytest.skip(f"the VideoAlign samples are not at {SAMPLES} (they live in ../shared/data)")
    return SAMPLES


def render_clip(path: Path, *, seconds=1.0, size="64x48", rate=12, source="testsrc2", extra=()):
    """A tiny real video made by ffmpeg (for tests that need playable files)."""
    from django.conf import settings

    subprocess.run(
        [
            settings.FFMPEG_BINARY,
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"{source}=size={size}:rate={rate}",
            "-t",
            str(seconds),
            *extra,
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
    )
    return path


def seed_judged_pairs(
    cursor,
    *,
    pairs: int,
    judgments_per_pair: int,
    pairs_per_prompt: int = 12,
    annotators: int | None = None,
    generators: int | None = None,
) -> None:
    """Insert ``pairs`` pairs (with prompts, videos and placeholder files) judged by ``judgments_per_pair``
    annotators each, straight in SQL: for exports and benchmarks at scale. Labels vary deterministically.

    ``annotators``: a population of that many, each pair judged by ``judgments_per_pair`` different ones of them
    spread over the population, as a real campaign has it: one in ten is a spammer (a label at random), one in
    ten always picks the left video, the rest judge as the pair's labels say (with some disagreement). None: the
    same ``judgments_per_pair`` annotators judge every pair. ``generators``: that many generator names ``gen-NN``
    spread over the videos at random (None: four, in turn, which pair up only two matchups)."""
    from annotate.models import default_campaign_pk

    generator = (
        "'gen-' || (g % 4)"
        if generators is None
        else f"'gen-' || lpad((abs(hashtext((b.videos + g)::text)) % {generators})::text, 2, '0')"
    )
    labels = "(ARRAY['A','B','TIE'])[1 + ({expr}) % 3]"
    if annotators is None:
        population, who = judgments_per_pair, "k"
        kinds = "{careful}"
    else:
        if annotators < judgments_per_pair:
            raise ValueError(f"annotators={annotators}: fewer than judgments_per_pair={judgments_per_pair}")
        stride = annotators // judgments_per_pair  # the k-th judge of a pair is stride further: all different
        population, who = annotators, f"1 + ((g::bigint * 7919 + (k - 1) * {stride}) % {annotators})"
        kinds = (
            "CASE WHEN ({who}) % 10 = 0 THEN "
            + labels.format(expr="g * 31 + ({who}) * 17 + {dim}")
            + " WHEN ({who}) % 10 = 1 THEN CASE WHEN (g + k) % 2 = 0 THEN 'A' ELSE 'B' END ELSE {careful} END"
        )

    def label(expr: str, dim: int) -> str:
        return kinds.format(who=who, dim=dim, careful=labels.format(expr=expr))

    campaign = default_campaign_pk()  # made again after a flush; the columns below have no database default
    sql = f"""
    CREATE TEMP TABLE seed_base AS SELECT
      (SELECT coalesce(max(id), 0) FROM auth_user) AS users, (SELECT coalesce(max(id), 0) FROM annotate_prompt) AS prompts,
      (SELECT coalesce(max(id), 0) FROM annotate_video) AS videos, (SELECT coalesce(max(id), 0) FROM annotate_pair) AS pairs,
      (SELECT coalesce(max(id), 0) FROM annotate_assignment) AS assignments,
      (SELECT coalesce(max(id), 0) FROM annotate_judgment) AS judgments;
    INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined)
      SELECT b.users + k, '!', false, 'seed-annotator-' || (b.users + k), '', '', '', false, true, now()
      FROM seed_base b, generate_series(1, {population}) k;
    INSERT INTO annotate_prompt (id, text, text_sha256, source, created_at)
      SELECT b.prompts + g, 'seeded prompt ' || (b.prompts + g), encode(sha256(convert_to('seeded prompt ' || (b.prompts + g), 'UTF8')), 'hex'), 'seed', now()
      FROM seed_base b, generate_series(1, ({pairs} + {pairs_per_prompt} - 1) / {pairs_per_prompt}) g;
    INSERT INTO annotate_video (id, prompt_id, file, poster, sha256, generator, origin, generation_params, status, error,
                                created_at, fps, num_frames, width, height)
      SELECT b.videos + g, b.prompts + 1 + (g - 1) / (2 * {pairs_per_prompt}), 'videos/seed-' || (b.videos + g) || '.mp4', '',
             md5('seed' || (b.videos + g)) || md5('video' || (b.videos + g)), {generator}, 'imported', '{{}}', 'ready', '',
             now(), 24, 48, 320, 192
      FROM seed_base b, generate_series(1, 2 * {pairs}) g;
    INSERT INTO annotate_pair (id, prompt_id, video_a_id, video_b_id, overlap, priority, status, is_gold, filled,
                               judgment_count, created_at, campaign_id, gold_reason)
      SELECT b.pairs + g, b.prompts + 1 + (g - 1) / {pairs_per_prompt}, b.videos + 2 * g - 1, b.videos + 2 * g,
             {judgments_per_pair}, 0, 'complete', false, {judgments_per_pair}, {judgments_per_pair}, now(), {campaign}, ''
      FROM seed_base b, generate_series(1, {pairs}) g;
    INSERT INTO annotate_assignment (id, pair_id, annotator_id, left_is_a, leased_at, expires_at, state, skip_reason)
      SELECT b.assignments + (g - 1) * {judgments_per_pair} + k, b.pairs + g, b.users + {who}, (g + k) % 2 = 0, now(), now(),
             'submitted', ''
      FROM seed_base b, generate_series(1, {pairs}) g, generate_series(1, {judgments_per_pair}) k;
    INSERT INTO annotate_judgment (id, pair_id, annotator_id, assignment_id, vq, mq, ta, left_is_a, duration_ms,
                                   watched_ms, comment, flag, created_at)
      SELECT b.judgments + (g - 1) * {judgments_per_pair} + k, b.pairs + g, b.users + {who},
             b.assignments + (g - 1) * {judgments_per_pair} + k,
             {label("g * 7 + k * (g % 2)", 0)}, {label("g * 5 + k * (g % 3)", 1)},
             {label("g + k * (g % 5)", 2)}, (g + k) % 2 = 0, 5000 + g % 3000, 4000 + g % 2000, '', '', now()
      FROM seed_base b, generate_series(1, {pairs}) g, generate_series(1, {judgments_per_pair}) k;
    DROP TABLE seed_base;
    """
    cursor.execute(sql)
    for table in (
        "auth_user",
        "annotate_prompt",
        "annotate_video",
        "annotate_pair",
        "annotate_assignment",
        "annotate_judgment",
    ):
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    cursor.execute("ANALYZE")


def pytest_sessionfinish(session, exitstatus):
    """Stop the embedded PostgreSQL and Redis this run started (``make test`` leaves nothing running), unless
    another process still uses them; servers that were already running stay (config/embedded.py)."""
    from django.conf import settings

    if not settings.configured:
        return
    from django.db import connections

    from config import embedded

    connections.close_all()
    stopped, users = embedded.release(Path(settings.VAR_DIR))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and (stopped or (users and embedded.started_here)):
        reporter.ensure_newline()
        reporter.write_line(
            f"embedded servers: stopped {', '.join(stopped)}"
            if stopped
            else f"embedded servers left running: still used by pid {', '.join(map(str, sorted(users)))}"
        )


LANE_MARKS = {"browser": ("browser",), "e2e": ("e2e", "browser"), "studies": ("study",)}
"""Test folder → the markers every test in it carries, so `make test-fast` (-m "not study and not browser")
cannot miss one that forgot its ``pytestmark``."""


def pytest_collection_modifyitems(config, items):
    root = Path(__file__).parent
    for item in items:
        try:
            folder = Path(item.fspath).relative_to(root).parts[0]
        except ValueError:
            continue
        for mark in LANE_MARKS.get(folder, ()):
            if mark not in item.keywords:
                item.add_marker(mark)
