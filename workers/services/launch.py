"""Running a trainer on every GPU of the machine: ``accelerate launch`` in a child process group.

With ``VIDPREF_TRAIN_PROCESSES`` at ``auto`` (the default) a job trains in the worker's own process on
a machine with one GPU (or none), and under ``accelerate launch --multi_gpu`` with one process per GPU
on a machine with several. An integer forces that many processes (on a CPU: ``--cpu``, gloo), which is
how the tests exercise this path. The child writes its progress to a JSON file
(``python -m alignment … --progress-file``) that the worker turns into the job's progress, heartbeat and
loss curve; cancelling the job stops the child's whole process group.
"""

from __future__ import annotations

import ctypes
import json
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

POLL_S = 2.0


def train_processes() -> int:
    """How many training processes a job starts on this machine."""
    setting = str(settings.VIDPREF_TRAIN_PROCESSES).strip().lower()
    if setting != "auto":
        return max(1, int(setting))
    import torch

    return max(1, torch.cuda.device_count())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: SIGKILL when the worker dies (Linux), and a process group of its own to stop as one."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _stop_group(pgid: int) -> None:
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


def run_trainer(*, job: Job, command: str, config, train_in_process: Callable,
                on_step: Callable[[int, int, float], None]) -> dict:
    """Train ``config`` for ``job``: in this process, or under ``accelerate launch`` on several processes.
    Returns the trainer's metrics."""
    processes = train_processes()
    if processes == 1:
        return train_in_process(config, on_step=on_step)
    return launch_trainer(job=job, command=command, config=config, processes=processes, on_step=on_step)


def launch_trainer(*, job: Job, command: str, config, processes: int,
                   on_step: Callable[[int, int, float], None]) -> dict:
    import torch

    from alignment.config import save_config
    from alignment.progress import progress_file_read

    folder = job_folder(job)
    config_file, progress_file = folder / f"{command}.config.json", folder / f"{command}.progress.json"
    log_file = folder / f"{command}.launch.log"
    save_config(config, config_file)
    progress_file.unlink(missing_ok=True)
    _stop_earlier_launch(job)
    placement = ["--multi_gpu"] if torch.cuda.is_available() else ["--cpu"]
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
            "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no",
            "--main_process_port", str(_free_port()), *placement,
            "-m", "alignment", command, "--config", str(config_file), "--progress-file", str(progress_file)]
    job.append_log(f"{command} on {processes} processes ({'GPUs' if placement == ['--multi_gpu'] else 'CPU'}) "
                   f"under accelerate launch; its output: {log_file}")
    with open(log_file, "ab") as log:
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                 env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    Job.objects.filter(pk=job.pk).update(attempts=[*job.attempts[:-1], {**job.attempts[-1], "launch_pgid": child.pid}])
    last_step = None
    try:
        while child.poll() is None:
            time.sleep(POLL_S)
            state = progress_file_read(progress_file)
            if state and state["step"] != last_step:
                last_step = state["step"]
                on_step(state["step"], state["total"], state["loss"])
            else:
                job.report_progress(*(state["step"], state["total"]) if state else (0, 0), job.progress_text)
    except BaseException:
        _stop_group(child.pid)
        raise
    state = progress_file_read(progress_file)
    if state and state["step"] != last_step:
        on_step(state["step"], state["total"], state["loss"])
    if child.returncode != 0:
        tail = log_file.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{command} on {processes} processes exited with code {child.returncode}; the end of "
                           f"{log_file}:\n{tail}")
    return json.loads((Path(config.output_dir) / "metrics.json").read_text())
