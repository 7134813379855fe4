"""`make demo`: migrate, accounts, demo content, then web + worker + beat until Ctrl-C."""

import os
import signal
import subprocess
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from config import embedded, processes
from workers.demo_content import demo_accounts, demo_campaign_load, demo_pairs_load


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Run the whole system on this machine: migrate, create an admin and two annotators, load demo pairs, "
        "then serve the web app (gunicorn) with two Celery workers on the prefork pool (queues default+media, "
        "and gpu), and beat, as docker-compose.yml runs them (config/processes.py). Ctrl-C stops "
        "everything it started, the embedded PostgreSQL and Redis included."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--no-serve", action="store_true", help="set up and load content, then exit")
        parser.add_argument(
            "--verbose", action="store_true", help="also log every HTTP request (gunicorn's access log)"
        )

    def handle(self, *args, port: int, host: str, no_serve: bool, verbose: bool, **options):
        started = time.monotonic()
        call_command("migrate", interactive=False, verbosity=0)
        credentials = demo_accounts(credentials_file=Path(settings.VAR_DIR) / "demo-credentials.json")
        campaign, campaign_reports = demo_campaign_load()
        for report in [*demo_pairs_load(), *campaign_reports]:
            self.stdout.write(f"demo content: {report.summary()}")
            for error in report.skipped:
                self.stderr.write(f"  {error}")
        if no_serve:
            return
        base = f"http://{host}:{port}"
        commands = processes.demo_commands(host=host, port=port, var_dir=Path(settings.VAR_DIR), access_log=verbose)
        children = {
            name: subprocess.Popen(cmd, cwd=settings.BASE_DIR, start_new_session=True) for name, cmd in commands.items()
        }
        # Ctrl-C and SIGTERM both end the demo cleanly, even where the shell started us with SIGINT ignored.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _interrupt)
        self.stdout.write(self.style.SUCCESS(f"\nVidPref is up in {time.monotonic() - started:.1f} s"))
        self.stdout.write(
            f"  annotate:  {base}/\n  admin:     {base}/admin/\n  API:       {base}/api/schema/\n"
            f"  health:    {base}/healthz\n"
            f"  crowd:     {base}/c/{campaign.slug}/?PROLIFIC_PID=TRY-1&STUDY_ID=demo&SESSION_ID=1  (a participant's "
            "way: guidelines, qualification with feedback, judging, the completion code)"
        )
        for name, entry in credentials.items():
            self.stdout.write(f"  {entry['role']:<9}  {name} / {entry['password']}")
        self.stdout.write("Ctrl-C stops everything.")
        try:
            while all(child.poll() is None for child in children.values()):
                time.sleep(0.5)
            dead = [name for name, child in children.items() if child.poll() is not None]
            self.stderr.write(f"{', '.join(dead)} exited; stopping the rest")
        except KeyboardInterrupt:
            self.stdout.write("\nstopping…")
        finally:
            self._stop(children)

    def _stop(self, children: dict) -> None:
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        from django.db import connections

        connections.close_all()
        stopped, users = embedded.release(Path(settings.VAR_DIR))
        self.stdout.write(f"stopped {', '.join(children)}" + (f", embedded {', '.join(stopped)}" if stopped else ""))
        if users:
            self.stdout.write(
                f"the embedded PostgreSQL and Redis stay up: still used by pid {', '.join(map(str, sorted(users)))}"
            )
