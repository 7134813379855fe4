"""Shared by the benchmarks that run at scale in their own database: create and migrate it, and run the
script's measuring steps in child processes (each with its own Django on that database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def execute_script(sql: str, params: dict | None = None) -> None:
    """Run ``sql``'s statements (separated by ``;``, none inside a literal) on Django's connection one at a time:
    parameters are bound on the server (config/settings/base.py), and a bound statement is one statement."""
    from django.db import connection

    with connection.cursor() as cursor:
        for statement in filter(str.strip, sql.split(";")):
            cursor.execute(statement, params)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def setup_database(name: str, *, keep: bool = False) -> str:
    """Create (or empty) database ``name`` on the configured server; return its DATABASE_URL. ``keep``: leave an
    existing one as it is (a benchmark measuring what an earlier run seeded)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    from tests.conftest import database_url_for_children

    with connection.cursor() as cursor:
        if keep:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone():
                connection.close()
                return database_url_for_children({**connection.settings_dict, "NAME": name})
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return database_url_for_children({**connection.settings_dict, "NAME": name})


def bench_database_env(name: str, *, keep: bool = False) -> dict:
    """Create (or empty; ``keep``: keep) database ``name`` on the configured server, migrate it; the environment
    that uses it."""
    env = {
        **os.environ,
        "DATABASE_URL": setup_database(name, keep=keep),
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DEBUG": "false",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    return env


def run_child(script: str, env: dict, *args: str) -> dict:
    """Run ``script`` with ``args`` in a child process and return the JSON of its last output line."""
    out = subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def module_at_commit(commit: str, path: str):
    """The module at ``path`` (e.g. ``annotate/stats.py``) as it was at ``commit``, imported as a module of its own
    beside this tree's (it runs on this tree's schema, which only ever gains columns): a benchmark's "before"."""
    import importlib.util
    import tempfile

    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    name = path.removesuffix(".py").replace("/", ".") + "_at_commit"
    file = Path(tempfile.mkdtemp(prefix="vidpref-at-commit-")) / f"{name.rsplit('.', 1)[-1]}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
