"""Settings, embedded services, health check, deploy check, compose file, and the no-torch rule."""

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from config import embedded
from tests.conftest import ROOT, child_env


def test_tests_run_on_postgresql(db):
    from django.db import connection

    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        assert int(cursor.fetchone()[0].split(".")[0]) >= 14


def test_healthz_ok(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_healthz_names_the_broker_when_it_is_down(client, db, monkeypatch, tmp_path):
    from workers.celery import app

    monkeypatch.setattr(app.conf, "broker_url", f"redis+socket://{tmp_path}/nothing-here.sock")
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker"]
    assert body["checks"]["database"] == "ok"


def test_healthz_names_the_database_when_it_is_down(client, db, monkeypatch):
    from django.db import OperationalError, connection

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(connection, "cursor", refuse)
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["database"]
    assert "connection refused" in response.json()["checks"]["database"]


def _start_both(var_dir: str) -> tuple[str, str, int]:
    address = embedded.ensure_postgres(Path(var_dir))
    broker = embedded.ensure_redis(Path(var_dir))
    return str(address.socket_dir), broker, os.getpid()


@pytest.mark.slow
def test_embedded_servers_started_at_once_by_four_processes_are_one(tmp_path):
    var_dir = tmp_path / "var"
    try:
        with ProcessPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(_start_both, [str(var_dir)] * 4))
        assert len({r[0] for r in results}) == 1, results
        assert len({r[1] for r in results}) == 1, results
        postmasters = (var_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0]
        assert int(postmasters) > 0
        import psycopg

        with psycopg.connect(host=results[0][0], user="postgres", dbname="vidpref") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stopped = embedded.stop(var_dir)
    assert sorted(stopped) == ["postgres", "redis"]
    assert embedded._postgres_socket_dir(var_dir / "pgdata") is None


def test_no_embedded_server_when_urls_are_given(tmp_path, db):
    from django.db import connection

    var_dir = tmp_path / "var"
    code = textwrap.dedent(
        """
        import django, json, os
        django.setup()
        from django.conf import settings
        print(json.dumps([settings.EMBEDDED_POSTGRES, settings.EMBEDDED_REDIS]))
        """
    )
    env = child_env(VIDPREF_VAR_DIR=str(var_dir))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, False]
    assert not (var_dir / "pgdata").exists()
    assert connection.vendor == "postgresql"


def test_check_deploy_is_clean_in_production_mode(db):
    env = child_env(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY="x" * 20 + "a-long-random-production-secret-key-0123456789",
        ALLOWED_HOSTS="vidpref.example.com",
        DEBUG="false",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_web_process_never_imports_torch(db):
    code = textwrap.dedent(
        """
        import sys, django
        django.setup()
        from django.urls import get_resolver, URLPattern, URLResolver
        def walk(patterns):
            for p in patterns:
                if isinstance(p, URLResolver):
                    yield from walk(p.url_patterns)
                else:
                    yield p.callback
        views = list(walk(get_resolver().url_patterns))
        import annotate.views, annotate.api.views, workers.admin, workers.api
        import workers.services.snapshots, workers.services.pipelines  # alignment's torch-free parts only
        import workers.services.generation, workers.services.previews
        from workers.job_specs import JOB_SPECS, JobConfigForm
        forms = [JobConfigForm(spec) for spec in JOB_SPECS.values() if spec.config_class]  # reads alignment's configs
        assert forms and all(form.fields for form in forms)
        ml = ("torch", "transformers", "diffusers", "peft", "accelerate", "safetensors")
        heavy = sorted(m for m in ml if m in sys.modules)
        print(len(views), ",".join(heavy) or "-")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), cwd=ROOT, capture_output=True, text=True, check=True
    )
    count, heavy = out.stdout.split()
    assert int(count) > 20
    assert heavy == "-", f"the web process imported {heavy}"


def test_ffmpeg_is_found_and_named():
    assert settings.FFMPEG_BINARY and Path(settings.FFMPEG_BINARY).exists()
    from config.tools import MissingToolError, find_ffmpeg, require_ffmpeg

    ffmpeg, _ = find_ffmpeg("/opt/custom/ffmpeg", "")
    assert ffmpeg == "/opt/custom/ffmpeg"
    with pytest.raises(MissingToolError, match="FFMPEG_BINARY"):
        require_ffmpeg("")


def test_imageio_ffmpeg_fallback_when_no_system_binary(monkeypatch):
    import shutil

    from config.tools import find_ffmpeg

    monkeypatch.setattr(shutil, "which", lambda name: None)
    ffmpeg, ffprobe = find_ffmpeg()
    assert "imageio_ffmpeg" in ffmpeg and Path(ffmpeg).exists()
    assert ffprobe is None


def test_compose_services_run_real_modules():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "worker-gpu", "worker-media", "beat", "postgres", "redis"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert "-Q" in services["worker-gpu"]["command"] and "gpu" in services["worker-gpu"]["command"]
    assert (ROOT / "Dockerfile").exists()
    import importlib

    for name, service in services.items():
        command = service.get("command")
        if not command or name in {"postgres", "redis"}:
            continue
        text = " ".join(command)
        if "gunicorn" in text:
            module = text.split("gunicorn ")[1].split()[0]
            assert importlib.import_module(module).application
        if "celery" in text:
            module = text.split("-A ")[1].split()[0]
            assert importlib.import_module(module).celery_app.main == "vidpref"
        if "--scheduler" in text:
            path = text.split("--scheduler ")[1].split()[0]
            module, attr = path.split(":")
            assert getattr(importlib.import_module(module), attr)


def _nested_pytest(var_dir: Path) -> subprocess.CompletedProcess:
    """`make test`'s command on one quick test, with the embedded servers in ``var_dir``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    }
    env.update(VIDPREF_VAR_DIR=str(var_dir), VIDPREF_TEST_DB="test_vidpref_nested")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/config/test_foundation.py::test_tests_run_on_postgresql",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _running(var_dir: Path) -> dict[str, bool]:
    return {
        "postgres": embedded._postgres_socket_dir(var_dir / "pgdata") is not None,
        "redis": embedded._redis_answers(embedded._redis_paths(var_dir)[1]),
    }


@pytest.mark.slow
def test_a_test_run_stops_the_embedded_servers_it_started_and_leaves_running_ones_alone(tmp_path):
    var_dir = tmp_path / "var"
    run = _nested_pytest(var_dir)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "embedded servers: stopped" in run.stdout, run.stdout[-2000:]
    assert _running(var_dir) == {"postgres": False, "redis": False}
    # already running (make services): the run uses them and leaves them up
    subprocess.run(
        [sys.executable, "-m", "config.embedded", "start"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "VIDPREF_VAR_DIR": str(var_dir)},
    )
    try:
        run = _nested_pytest(var_dir)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert _running(var_dir) == {"postgres": True, "redis": True}
    finally:
        embedded.stop(var_dir)


def test_the_demo_and_compose_run_the_same_worker_pools():
    """The tests start what the demo starts (config/processes.py); the demo's workers are docker-compose's:
    the prefork pool, one job at a time on the gpu queue."""
    from config import processes

    demo = processes.demo_commands(host="127.0.0.1", port=8000, var_dir=Path("var"))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, command in [(n, c) for n, c in demo.items() if "worker" in c] + [
        (n, s["command"]) for n, s in compose.items() if "worker" in (s.get("command") or [])
    ]:
        assert not {"--pool", "-P"} & set(command), f"{name} leaves the prefork pool: {command}"
    queues = lambda command: set(command[command.index("-Q") + 1].split(","))  # noqa: E731
    gpu_demo, gpu_compose = demo["worker-gpu"], compose["worker-gpu"]["command"]
    assert queues(gpu_demo) == queues(gpu_compose) == {"gpu"}
    for command in (gpu_demo, gpu_compose):
        assert command[command.index("--concurrency") + 1] == "1"
        assert command[command.index("--prefetch-multiplier") + 1] == "1"
    assert queues(demo["worker"]) == queues(compose["worker-media"]["command"]) == {"default", "media"}


def test_the_demo_and_compose_serve_with_a_pool_per_thread_and_a_long_keep_alive():
    """gunicorn as web_command and docker-compose.yml run it: each worker's database pool holds one connection per
    thread, and an idle connection is kept past a person's think time (issue 30)."""
    from config.processes import WEB_KEEP_ALIVE_S, WEB_THREADS, web_command

    demo = " ".join(web_command(host="127.0.0.1", port=8000))
    compose = " ".join(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]["command"])
    for text in (demo, compose):
        threads = int(text.split("--threads ")[1].split()[0])
        assert f"--env VIDPREF_DB_POOL_MAX={threads}" in text
        assert f"--keep-alive {WEB_KEEP_ALIVE_S}" in text
    assert f"--threads {WEB_THREADS}" in demo
