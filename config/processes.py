"""The processes VidPref runs, defined once: ``manage.py demo`` starts them, the end-to-end and integration
tests start the same commands, and ``docker-compose.yml`` runs the same pools (``tests/config`` checks it).

Every Celery worker uses the prefork pool (Celery's default): a task runs in a forked, daemonic child of the
worker. Training therefore never runs inside the task's process: it runs in a child process of its own
(``workers/services/launch.py``), which may start DataLoader workers and initialise CUDA.

Nothing here imports Django.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The demo runs docker-compose.yml's two kinds of worker on one machine: one for the quick queues (imports,
# exports, statistics, webhooks), one that runs a single GPU job at a time, so a long training job never holds
# up an import or a statistics recompute.
CPU_QUEUES = "default,media"
GPU_QUEUES = "gpu"
ALL_QUEUES = "default,media,gpu"


WEB_THREADS = 4  # gunicorn threads per worker process: also its database pool's size (VIDPREF_DB_POOL_MAX)
# An idle keep-alive connection is parked in the worker's poller (no thread) this long: longer than a person's think
# time between judgments, so an annotator's browser keeps one connection instead of reconnecting for every judgment
# (gunicorn's default is 2 s). docs/operations.md.
WEB_KEEP_ALIVE_S = 30


def web_command(
    *, host: str, port: int, access_log: bool = False, python: str = sys.executable, workers: int = 2
) -> list[str]:
    """gunicorn as the demo runs it (docker-compose: 4 workers × 4 threads), each worker with a database pool of
    one connection per thread. The access log is off unless asked for: one line per request (static files
    included) buries the events that matter."""
    command = [
        python,
        "-m",
        "gunicorn",
        "config.wsgi",
        "-b",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(WEB_THREADS),
        "--env",
        f"VIDPREF_DB_POOL_MAX={WEB_THREADS}",
        "--keep-alive",
        str(WEB_KEEP_ALIVE_S),
        "--log-level",
        "warning",
    ]
    return command + (["--access-logfile", "-"] if access_log else [])


def worker_command(
    *,
    queues: str = ALL_QUEUES,
    concurrency: int = 1,
    hostname: str = "demo@%h",
    loglevel: str = "INFO",
    python: str = sys.executable,
) -> list[str]:
    """A Celery worker on the prefork pool, as the demo and docker-compose.yml run it. One task at a time per
    child (``--prefetch-multiplier 1``): a long job never holds a second one in its prefetch buffer."""
    return [
        python,
        "-m",
        "celery",
        "--quiet",
        "-A",
        "workers",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        str(concurrency),
        "--prefetch-multiplier",
        "1",
        "--loglevel",
        loglevel,
        "--hostname",
        hostname,
    ]


def beat_command(*, schedule_file: Path, loglevel: str = "INFO", python: str = sys.executable) -> list[str]:
    """Celery beat with django-celery-beat's database scheduler (editable in the admin)."""
    return [
        python,
        "-m",
        "celery",
        "--quiet",
        "-A",
        "workers",
        "beat",
        "--loglevel",
        loglevel,
        "--scheduler",
        "django_celery_beat.schedulers:DatabaseScheduler",
        "--schedule",
        str(schedule_file),
    ]


def demo_commands(*, host: str, port: int, var_dir: Path, access_log: bool = False) -> dict[str, list[str]]:
    """What ``manage.py demo`` starts: the web server, the two workers and beat."""
    return {
        "web": web_command(host=host, port=port, access_log=access_log),
        "worker": worker_command(queues=CPU_QUEUES, concurrency=2, hostname="demo-cpu@%h"),
        "worker-gpu": worker_command(queues=GPU_QUEUES, concurrency=1, hostname="demo-gpu@%h"),
        "beat": beat_command(schedule_file=var_dir / "celerybeat-schedule"),
    }
