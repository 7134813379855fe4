from django.core.management.base import BaseCommand, CommandError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from workers.simulation import simulate_annotators


class Command(BaseCommand):
    help = (
        "Simulated annotators (careful, noisy, spammer, left-biased) judge toy pairs through the running "
        "server's HTTP API: next → download both videos → oracle scores → judgment. Start the server first "
        "(make demo)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--annotators", type=int, default=8, metavar="N")
        parser.add_argument("--judgments", type=int, default=100, metavar="M", help="judgments to submit in all")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--mix", default="", help="e.g. careful=0.5,noisy=0.3,spammer=0.1,left_biased=0.1")

    def handle(self, *args, annotators: int, judgments: int, base_url: str, seed: int, mix: str, **options):
        if annotators < 1 or judgments < 1:
            raise CommandError("--annotators and --judgments must be at least 1")
        try:
            weights = {k: float(v) for k, v in (item.split("=") for item in mix.split(",") if item)} or None
        except ValueError as exc:
            raise CommandError(f"--mix {mix!r}: write kind=weight pairs separated by commas") from exc
        with Progress(
            TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), disable=options["verbosity"] == 0
        ) as bar:
            task = bar.add_task("judgments", total=judgments)
            try:
                report = simulate_annotators(
                    base_url=base_url,
                    annotators=annotators,
                    judgments=judgments,
                    seed=seed,
                    mix=weights,
                    progress=lambda done: bar.update(task, completed=done),
                )
            except ValueError as exc:
                raise CommandError(f"--mix: {exc}") from exc
        for error in report.errors[:10]:
            self.stderr.write(error)
        self.stdout.write(report.summary())
        if not report.reached:
            raise CommandError(report.shortfall())
