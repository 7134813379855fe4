"""Every training job, and every job that samples videos, runs in a child process of its own.

A Celery worker of the prefork pool (the demo's, docker-compose's, Celery's default) runs a task in a forked,
*daemonic* child, which may not start processes of its own (``DataLoader(num_workers > 0)`` fails with
"daemonic processes are not allowed to have children"), and which would hold the GPU's memory and CUDA context
long after the job. So the task never trains in its own process: it starts a fresh interpreter with
``subprocess`` — not daemonic, in a process group of its own, killed if the worker dies (Linux) — and follows
it:

- training: ``python -m alignment <command> --config <job folder>/<command>.config.json --progress-file …``
  on one process, or ``accelerate launch`` with one process per GPU when the machine has several
  (``VIDPREF_TRAIN_PROCESSES``: ``auto``, the default, or a number; on a CPU ``--cpu`` with gloo);
- sampling (pair generation, guided previews): ``python -m alignment sample-plan --plan …``.

The child writes its progress to a JSON file (``alignment.progress``) that the worker turns into the job's
progress, heartbeat and loss curve every ``POLL_S``; the run's events (its start, evaluations, checkpoints,
end) are logged here at INFO, one line each, and added to the job's log. Cancelling the job stops the child's
whole process group at the next poll; a redelivered job first stops what an earlier attempt left running on
this machine, and its trainer resumes from the newest checkpoint. A child that fails fails the job with the
end of its output (``<job folder>/<command>.log``).

The worker itself never initialises CUDA: how many GPUs the machine has is asked of a short-lived
``python -c`` once per worker process.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from workers.models import Job
from workers.services.jobs import job_folder

log = logging.getLogger(__name__)
POLL_S = 2.0
LOG_TAIL_CHARS = 3000


@functools.cache
def gpu_count() -> int:
    """The GPUs a child process of this worker would see, asked of a fresh interpreter (this process must not
    initialise CUDA). 0 when torch is missing or sees none."""
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        return int(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 else 0
    except (ValueError, IndexError):
        return 0


def train_processes() -> int:
    """How many training processes a job starts on this machine: one per GPU (``auto``), or the setting."""
    setting = str(settings.VIDPREF_TRAIN_PROCESSES).strip().lower()
    if setting != "auto":
        return max(1, int(setting))
    return max(1, gpu_count())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


try:  # loaded here, not in the forked child: between fork and exec nothing may import or take a lock
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not Linux / glibc: the child does not die with the worker, a redelivery stops it
    _LIBC = None


def _die_with_parent() -> None:
    """In the child, between fork and exec: SIGKILL when the worker process dies (PR_SET_PDEATHSIG)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)


def _stop_group(pgid: int) -> None:
    """SIGTERM to the child's process group, SIGKILL 15 s later if anything of it is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
        for _ in range(30):
            time.sleep(0.5)
            os.killpg(pgid, 0)
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stop_earlier_launch(job: Job) -> None:
    """A redelivered job first stops what an earlier attempt launched on this machine and left running."""
    for attempt in job.attempts[:-1]:
        pgid = attempt.get("launch_pgid")
        if pgid and attempt.get("worker") == socket.gethostname():
            _stop_group(int(pgid))


def _relay_events(job: Job, name: str, events: list[dict]) -> None:
    """The child's events: a log line each here (at their own level) and a line each in the job's log."""
    for event in events:
        level = logging.getLevelName(event.get("level", "INFO"))
        log.log(level if isinstance(level, int) else logging.INFO, "job %s %s: %s", job.pk, name, event["message"])
        job.append_log(f"{name}: {event['message']}")


def run_child(
    *,
    job: Job,
    name: str,
    argv: list[str],
    progress_file: Path,
    on_progress: Callable[[dict], None],
    env: dict | None = None,
    describe: str = "",
) -> None:
    """Run ``argv`` as the job's child process (see the module docstring) until it exits. ``on_progress(state)``
    gets the child's progress file whenever its step changed (it may raise ``JobCancelled``); between changes
    the job's heartbeat is kept up, which also notices a cancel. Raises RuntimeError with the end of the child's
    output when it fails; stops it on any exception here (a cancel, the worker shutting down)."""
    folder = job_folder(job)
    log_file = folder / f"{name}.log"
    progress_file.unlink(missing_ok=True)
    _stop_earlier_launch(job)
    with open(log_file, "ab") as out:
        out.write(f"--- attempt {len(job.attempts)} on {socket.gethostname()}: {' '.join(argv)}\n".encode())
        out.flush()
        start = out.tell()
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            cwd=settings.BASE_DIR,
            env={**os.environ, **(env or {})},
        )
    job.attempts[-1]["launch_pgid"] = child.pid  # kept in memory too: the job's outcome saves its attempts
    Job.objects.filter(pk=job.pk).update(attempts=job.attempts)
    job.append_log(f"{name} {describe or 'in a child process'} (pid {child.pid}); its output: {log_file}")
    log.info("job %s %s: started %s, pid %s", job.pk, name, describe or "in a child process", child.pid)
    last_step, events_seen, started = None, 0, time.monotonic()

    def follow() -> None:
        nonlocal last_step, events_seen
        state = _read_progress(progress_file) or {}
        events = state.get("events") or []
        _relay_events(job, name, events[events_seen:])
        events_seen = len(events)
        if state.get("total") and state.get("step") != last_step:
            last_step = state["step"]
            on_progress(state)
        else:  # the heartbeat, as it was; raises JobCancelled once the job is cancelled
            job.report_progress(job.progress, 1.0, job.progress_text)

    try:
        while child.poll() is None:
            time.sleep(POLL_S)
            follow()
        follow()
    except BaseException:
        log.info("job %s %s: stopping pid %s", job.pk, name, child.pid)
        _stop_group(child.pid)
        child.wait()
        raise
    finally:
        _stop_group_leftovers(child.pid)
    if child.returncode != 0:
        with open(log_file, "rb") as out:
            out.seek(max(start, os.path.getsize(log_file) - LOG_TAIL_CHARS))
            tail = out.read().decode(errors="replace")
        log.info(
            "job %s %s: failed with exit code %s after %.0f s",
            job.pk,
            name,
            child.returncode,
            time.monotonic() - started,
        )
        raise RuntimeError(f"{name} exited with code {child.returncode}; the end of its output ({log_file}):\n{tail}")
    log.info("job %s %s: finished in %.0f s", job.pk, name, time.monotonic() - started)


def _stop_group_leftovers(pgid: int) -> None:
    """Whatever the child left in its group (a DataLoader worker, an accelerate rank) goes with it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_progress(path: Path) -> dict | None:
    from alignment.progress import progress_file_read  # worker side only: the web imports this module too

    return progress_file_read(path)


def run_trainer(*, job: Job, command: str, config, on_progress: Callable[[dict], None]) -> dict:
    """Train ``config`` (an ``alignment`` config) for ``job`` with ``python -m alignment <command>`` in a child
    process, under ``accelerate launch`` when there are several processes; returns the trainer's metrics."""
    from alignment.config import save_config  # worker side only: the web imports this module too

    folder = job_folder(job)
    config_file, progress_file = folder / f"{command}.config.json", folder / f"{command}.progress.json"
    save_config(config, config_file)
    processes = train_processes()
    entry = ["-m", "alignment", command, "--config", str(config_file), "--progress-file", str(progress_file)]
    if processes == 1:
        argv, env, describe = [sys.executable, *entry], {}, "in a child process"
    else:
        on_gpus = gpu_count() >= processes
        argv = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--dynamo_backend",
            "no",
            "--mixed_precision",
            "no",
            "--main_process_port",
            str(_free_port()),
            "--multi_gpu" if on_gpus else "--cpu",
            *entry,
        ]
        env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # several processes share the cores
        describe = f"on {processes} processes ({'GPUs' if on_gpus else 'CPU'}) under accelerate launch"
    run_child(
        job=job,
        name=command,
        argv=argv,
        progress_file=progress_file,
        on_progress=on_progress,
        env=env,
        describe=describe,
    )
    return json.loads((Path(config.output_dir) / "metrics.json").read_text())


def run_sampling(*, job: Job, plan: dict, name: str = "sample-plan") -> dict:
    """Run a sampling plan (``alignment.cli_sample``) for ``job`` in a child process: the job's progress follows
    the child's; returns the plan's result. An input the plan refuses raises ``SamplingPlanError``."""
    folder = job_folder(job)
    plan_file, progress_file = folder / f"{name}.plan.json", folder / f"{name}.progress.json"
    result_file = folder / f"{name}.result.json"
    plan_file.write_text(json.dumps(plan, indent=2))
    result_file.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "alignment",
        "sample-plan",
        "--plan",
        str(plan_file),
        "--progress-file",
        str(progress_file),
        "--result",
        str(result_file),
    ]

    def on_progress(state: dict) -> None:
        job.report_progress(state["step"], state["total"], state.get("text") or job.progress_text)

    try:
        run_child(job=job, name=name, argv=argv, progress_file=progress_file, on_progress=on_progress)
    except RuntimeError:
        result = _read_progress(result_file)  # the child writes {"error": {"field", "message"}} for an input it refuses
        if result and result.get("error"):
            raise SamplingPlanError(result["error"].get("field"), result["error"]["message"]) from None
        raise
    return json.loads(result_file.read_text())


class SamplingPlanError(ValueError):
    """A sampling plan the child refused (e.g. a latent reward model that does not fit the policy)."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
