from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotate.services.ingest import ManifestError, pairs_import
from workers.services.snapshots import SnapshotEmpty, snapshot_from_rewardbench


class Command(BaseCommand):
    help = (
        "Import a VideoGen-RewardBench CSV (path_A,path_B,A_model,B_model,prompt,VQ,MQ,TA,Overall,fps_A,"
        "num_frames_A,fps_B,num_frames_B) as an evaluation snapshot for `python -m alignment reward-eval`, "
        "and with --gold also as gold-labelled pairs that are mixed into the annotators' queues to score them."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="the RewardBench CSV")
        parser.add_argument(
            "--videos",
            type=Path,
            default=None,
            metavar="DIR",
            help="folder the CSV's video paths are relative to (default: the CSV's folder)",
        )
        parser.add_argument("--name", default=None, help="the evaluation snapshot's name (default: rewardbench-<time>)")
        parser.add_argument(
            "--out", type=Path, default=None, metavar="DIR", help="snapshot folder (default: SNAPSHOT_ROOT)"
        )
        parser.add_argument("--bundle-videos", action="store_true", help="copy the videos into the snapshot")
        parser.add_argument(
            "--gold",
            action="store_true",
            help="also import the pairs as gold pairs (videos transcoded into the media store)",
        )

    def handle(
        self,
        *args,
        file: Path,
        videos: Path | None,
        name: str | None,
        out: Path | None,
        bundle_videos: bool,
        gold: bool,
        **options,
    ):
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            snapshot, problems = snapshot_from_rewardbench(
                csv_path=file, video_root=videos, name=name, root=out, bundle_videos=bundle_videos
            )
        except (SnapshotEmpty, FileExistsError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        for problem in problems:
            self.stderr.write(problem)
        self.stdout.write(
            f"evaluation snapshot {snapshot.name}: {snapshot.counts['pairs']} pairs "
            f"({len(problems)} rows skipped) → {snapshot.uri}"
        )
        if gold:
            try:
                report = pairs_import(manifest=file, media_root=videos, gold=True)
            except ManifestError as exc:
                raise CommandError(str(exc)) from exc
            for error in report.skipped:
                self.stderr.write(f"{file.name} {error}; the row was skipped")
            self.stdout.write(f"gold pairs: {report.summary()}")
