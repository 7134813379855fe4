from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from annotate.services.ingest import ManifestError, pairs_import


class Command(BaseCommand):
    help = (
        "Import video pairs from a VideoAlign training CSV (path_A,path_B,prompt,VQ,MQ,TA,…) or a JSONL "
        "manifest (prompt, video_a, video_b, generator_a?, generator_b?, labels?). Videos are probed, "
        "transcoded to browser-safe H.264 and deduplicated; bad rows are reported and skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="the CSV or JSONL manifest")
        parser.add_argument("--gold", action="store_true", help="the rows' labels become gold answers")
        parser.add_argument(
            "--campaign",
            default=None,
            metavar="SLUG",
            help="the campaign the pairs go to (default: the default campaign; its k is the default --overlap)",
        )
        parser.add_argument(
            "--qualification",
            action="store_true",
            help="with --gold: the pairs become the campaign's qualification set (a 'reason' column/key is the "
            "feedback shown after each)",
        )
        parser.add_argument("--overlap", type=int, default=None, metavar="K", help="judgments wanted per pair")
        parser.add_argument(
            "--media-root",
            type=Path,
            default=None,
            metavar="DIR",
            help="folder the video paths are relative to (default: the manifest's folder)",
        )

    def handle(self, *args, file: Path, gold: bool, overlap: int | None, media_root: Path | None, **options):
        from annotate.models import Campaign

        if overlap is not None and overlap < 1:
            raise CommandError(f"--overlap {overlap}: must be at least 1")
        campaign = None
        if options["campaign"]:
            campaign = Campaign.objects.filter(slug=options["campaign"]).first()
            if campaign is None:
                slugs = ", ".join(Campaign.objects.values_list("slug", flat=True)) or "none"
                raise CommandError(f"--campaign {options['campaign']}: no such campaign (there are: {slugs})")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=True, disable=options["verbosity"] == 0) as bar:
            task = bar.add_task(f"importing {file.name}", total=None)

            def progress(done: int, total: int, what: str) -> None:
                bar.update(task, completed=done, total=total, description=f"importing {file.name} ({what})")

            try:
                report = pairs_import(
                    manifest=file,
                    media_root=media_root,
                    gold=gold,
                    overlap=overlap,
                    progress=progress,
                    campaign=campaign,
                    qualification=options["qualification"],
                )
            except ManifestError as exc:
                raise CommandError(str(exc)) from exc
        for error in report.skipped:
            self.stderr.write(f"{file.name} {error}; the row was skipped")
        self.stdout.write(report.summary())
