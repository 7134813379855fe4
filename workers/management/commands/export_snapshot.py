import time
from datetime import datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from annotate.consensus import ConsensusFilters
from workers.services.snapshots import SnapshotEmpty, snapshot_create


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(f"{text!r}: not a date; write 2026-11-25 or 2026-11-25T18:00") from exc
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


class Command(BaseCommand):
    help = (
        "Export the judged pairs as a versioned snapshot (DESIGN §5): pairs.parquet with each pair's consensus "
        "labels and agreement, judgments.parquet, videoalign.csv and manifest.json with checksums. Split into "
        "train/val/test by prompt, the same way in every snapshot. The folder appears only when complete."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--out",
            type=Path,
            default=None,
            metavar="DIR",
            help="folder that receives the snapshot folder (default: SNAPSHOT_ROOT, var/snapshots)",
        )
        parser.add_argument("--name", default=None, help="the snapshot's folder name (default: a timestamp)")
        parser.add_argument(
            "--from",
            dest="judged_from",
            type=_moment,
            default=None,
            metavar="DATE",
            help="only judgments made at or after DATE",
        )
        parser.add_argument(
            "--until",
            dest="judged_until",
            type=_moment,
            default=None,
            metavar="DATE",
            help="only judgments made before DATE",
        )
        parser.add_argument(
            "--batch",
            dest="batch_ids",
            type=int,
            action="append",
            default=[],
            metavar="ID",
            help="only pairs of this import batch (repeatable)",
        )
        parser.add_argument("--min-judgments", type=int, default=1, metavar="N", help="pairs judged at least N times")
        parser.add_argument(
            "--min-agreement",
            type=float,
            default=0.0,
            metavar="SHARE",
            help="pairs whose every label is backed by at least SHARE of its judgments (e.g. 0.66)",
        )
        parser.add_argument(
            "--no-majority",
            choices=["tie", "drop"],
            default="tie",
            help="a dimension with no strict majority: a tie (default) or no label",
        )
        parser.add_argument("--include-flagged", action="store_true", help="keep pairs an annotator flagged")
        parser.add_argument(
            "--include-excluded-annotators",
            action="store_true",
            help="count judgments of disabled annotators and of the 'excluded from training' group",
        )
        parser.add_argument("--include-gold", action="store_true", help="export gold pairs too")
        parser.add_argument(
            "--bundle-videos",
            action="store_true",
            help="copy the videos into the snapshot (portable to a cluster without the media store)",
        )
        parser.add_argument("--val-fraction", type=float, default=0.1)
        parser.add_argument("--test-fraction", type=float, default=0.1)

    def handle(self, *args, **options):
        try:
            filters = ConsensusFilters(
                judged_from=options["judged_from"],
                judged_until=options["judged_until"],
                batch_ids=tuple(options["batch_ids"]),
                min_judgments=options["min_judgments"],
                min_agreement=options["min_agreement"],
                include_flagged=options["include_flagged"],
                include_excluded_annotators=options["include_excluded_annotators"],
                include_gold=options["include_gold"],
                no_majority=options["no_majority"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not (
            0 <= options["val_fraction"]
            and 0 <= options["test_fraction"]
            and options["val_fraction"] + options["test_fraction"] < 1
        ):
            raise CommandError("--val-fraction and --test-fraction must be ≥ 0 and leave something to train on")
        started = time.perf_counter()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=True, disable=options["verbosity"] == 0) as bar:
            task = bar.add_task("exporting", total=None)

            def progress(done: int, total: int, what: str) -> None:
                bar.update(task, completed=done, total=total, description=f"exporting ({what})")

            try:
                snapshot = snapshot_create(
                    filters=filters,
                    name=options["name"],
                    root=options["out"],
                    bundle_videos=options["bundle_videos"],
                    val_fraction=options["val_fraction"],
                    test_fraction=options["test_fraction"],
                    progress=progress,
                )
            except (SnapshotEmpty, FileExistsError) as exc:
                raise CommandError(str(exc)) from exc
        counts = snapshot.counts
        self.stdout.write(
            f"snapshot {snapshot.name}: {counts['pairs']:,} pairs (train {counts['train']:,}, val {counts['val']:,}, "
            f"test {counts['test']:,}), {counts.get('judgments', 0):,} judgments, {snapshot.bytes / 1e6:.1f} MB "
            f"in {time.perf_counter() - started:.1f} s → {snapshot.uri}"
        )
