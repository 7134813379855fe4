"""The system as ``make demo`` runs it, on a fresh embedded PostgreSQL and Redis of its own.

The fixture starts ``manage.py demo`` itself (the command ``make demo`` runs): the same gunicorn, the same
Celery workers and pools, the same beat (``config/processes.py``), no test settings, no DATABASE_URL. The test
talks to it only over HTTP, as a person or a script would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.browser.conftest import chromium
from tests.conftest import ROOT, free_port

SCREENSHOTS = ROOT / "var" / "screenshots" / "e2e"


@dataclass
class Demo:
    url: str
    var_dir: Path
    log: Path
    process: subprocess.Popen
    env: dict
    credentials: dict = field(default_factory=dict)
    up_s: float = 0.0  # from `manage.py demo` to /healthz answering 200

    def manage(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """``manage.py ARGS`` against the demo's database (what a person types in a second terminal)."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def demo_env(var_dir: Path) -> dict:
    """The environment of a person's shell: nothing of this test session (no test settings, no test database,
    no broker URL), the demo's own var folder."""
    drop = {
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "DJANGO_SETTINGS_MODULE",
        "DJANGO_ALLOW_ASYNC_UNSAFE",
        "VIDPREF_TEST_DB",
        "PYTEST_CURRENT_TEST",
        "PYTEST_VERSION",
    }
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(VIDPREF_VAR_DIR=str(var_dir), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("demo-var")
    port = free_port()
    env = demo_env(var_dir)
    log = var_dir / "demo.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    running = Demo(url=f"http://127.0.0.1:{port}", var_dir=var_dir, log=log, process=process, env=env)
    try:
        deadline = time.monotonic() + 600
        while "VidPref is up" not in running.log_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"make demo did not come up:\n{running.log_text()[-4000:]}")
            time.sleep(0.5)
        while True:  # gunicorn and the workers start after the banner
            try:
                with urllib.request.urlopen(f"{running.url}/healthz", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo's /healthz never answered 200:\n{running.log_text()[-4000:]}")
            time.sleep(0.5)
        running.up_s = time.monotonic() - started
        running.credentials = json.loads((var_dir / "demo-credentials.json").read_text())
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C, as a person stops it
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


class PageProblems:
    """Every console error, uncaught exception, failed request and HTTP error a page meets."""

    def __init__(self):
        self.problems: list[str] = []
        self.loads: list[str] = []

    def watch(self, page) -> None:
        page.on("console", lambda msg: msg.type == "error" and self.problems.append(f"console: {msg.text}"))
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        page.on("load", lambda: self.loads.append(page.url))

    def _failed(self, request) -> None:
        failure = request.failure or ""
        # A <video> or poster whose pair was swapped out (the next pair came in) has its pending request
        # cancelled by the browser: that is the page working, not a failure.
        if "ERR_ABORTED" in failure and request.resource_type in {"media", "image"}:
            return
        self.problems.append(f"request failed: {request.url} ({failure})")

    def assert_none(self) -> None:
        assert not self.problems, "\n".join(self.problems)


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
