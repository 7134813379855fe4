"""Import pairs from a VideoAlign training CSV or a JSONL manifest (docs/architecture.md §2).

Every row is checked on its own: a bad row (missing file, not a video, no video stream, the same video
twice, …) is reported with its line number and reason and skipped; every good row is imported.
Re-running an import creates nothing new: videos are found by the sha256 of the original file, pairs
by their two videos.
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, transaction

from alignment.labels import DIMENSION_NAME, DIMENSIONS
from annotate.models import Batch, Campaign, Label, Pair, Prompt, Video, default_campaign_pk, text_sha256
from annotate.services import media

Progress = Callable[[int, int, str], None]

_LABELS = {"a": Label.A, "b": Label.B, "same": Label.TIE, "tie": Label.TIE, "TIE": Label.TIE}


class ManifestError(ValueError):
    """The manifest itself cannot be read (as opposed to one bad row)."""


@dataclass(frozen=True)
class ImportRow:
    line: int
    prompt: str
    path_a: str
    path_b: str
    generator_a: str = ""
    generator_b: str = ""
    labels: dict[str, str] | None = None
    reason: str = ""  # why the labels (gold pairs): the feedback a qualification pair shows


@dataclass
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    manifest: str
    rows: int = 0
    pairs_created: int = 0
    pairs_existing: int = 0
    videos_created: int = 0
    videos_reused: int = 0
    skipped: list[RowError] = field(default_factory=list)
    batch_id: int | None = None

    @property
    def imported(self) -> int:
        return self.pairs_created + self.pairs_existing

    def summary(self) -> str:
        return (
            f"{self.manifest}: {self.rows} rows, {self.pairs_created} pairs created, "
            f"{self.pairs_existing} already present, {len(self.skipped)} skipped; "
            f"videos: {self.videos_created} new, {self.videos_reused} reused"
        )

    def as_dict(self) -> dict:
        return {
            "manifest": self.manifest,
            "rows": self.rows,
            "pairs_created": self.pairs_created,
            "pairs_existing": self.pairs_existing,
            "videos_created": self.videos_created,
            "videos_reused": self.videos_reused,
            "skipped": [{"line": e.line, "reason": e.reason} for e in self.skipped],
            "batch_id": self.batch_id,
        }


def _label(value, *, column: str) -> str:
    text = str(value).strip()
    label = _LABELS.get(text.lower()) or _LABELS.get(text)
    if label is None:
        raise ValueError(f"{column}: {text!r} is not a label (use A, B or same/tie)")
    return label.value


def _labels(raw: dict, *, keys: dict[str, str]) -> dict[str, str] | None:
    present = {dim: raw.get(key) for dim, key in keys.items() if raw.get(key) not in (None, "")}
    if not present:
        return None
    missing = [keys[d] for d in DIMENSIONS if d not in present]
    if missing:
        raise ValueError(f"labels incomplete: {', '.join(missing)} missing")
    return {dim: _label(value, column=keys[dim]) for dim, value in present.items()}


def _checked(row: ImportRow) -> ImportRow:
    """Refuse text PostgreSQL cannot store (a NUL byte) as this row's problem, not the whole import's."""
    for column in ("prompt", "path_a", "path_b", "generator_a", "generator_b"):
        if "\x00" in getattr(row, column):
            raise ValueError(f"{column} contains a NUL byte (0x00), which cannot be stored; remove it")
    return row


def read_manifest(path: Path) -> tuple[list[ImportRow], list[RowError]]:
    """Parse a VideoAlign CSV (``path_A,path_B,prompt,VQ,MQ,TA,…``) or a JSONL manifest.

    JSONL rows: ``{"prompt", "video_a", "video_b", "generator_a"?, "generator_b"?,
    "labels"?: {"vq": "A"|"B"|"tie", "mq": …, "ta": …}}``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: manifest not found") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8 CSV or JSONL") from exc
    rows: list[ImportRow] = []
    errors: list[RowError] = []
    stripped = text.lstrip()
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"} or stripped.startswith("{"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    raise ValueError("not a JSON object")
                missing = [k for k in ("prompt", "video_a", "video_b") if not raw.get(k)]
                if missing:
                    raise ValueError(f"missing {', '.join(missing)}")
                labels = raw.get("labels")
                if labels is not None:
                    labels = _labels(labels, keys={d: d for d in DIMENSIONS})
                rows.append(
                    _checked(
                        ImportRow(
                            number,
                            str(raw["prompt"]),
                            str(raw["video_a"]),
                            str(raw["video_b"]),
                            str(raw.get("generator_a") or ""),
                            str(raw.get("generator_b") or ""),
                            labels,
                            str(raw.get("reason") or "").strip(),
                        )
                    )
                )
            except (ValueError, TypeError) as exc:
                errors.append(RowError(number, f"{exc}"))
        return rows, errors
    reader = csv.DictReader(text.splitlines())
    header = set(reader.fieldnames or [])
    required = {"path_A", "path_B", "prompt"}
    if not required <= header:
        raise ManifestError(
            f"{path}: the header must name {', '.join(sorted(required))} "
            f"(VideoAlign CSV); found {', '.join(reader.fieldnames or []) or 'no header'}"
        )
    for raw in reader:
        number = reader.line_num
        try:
            if not (raw.get("path_A") and raw.get("path_B") and (raw.get("prompt") or "").strip()):
                raise ValueError("path_A, path_B and prompt must not be empty")
            labels = _labels(raw, keys=DIMENSION_NAME)
            rows.append(
                _checked(
                    ImportRow(
                        number,
                        raw["prompt"].strip(),
                        raw["path_A"].strip(),
                        raw["path_B"].strip(),
                        (raw.get("A_model") or raw.get("generator_A") or "").strip(),
                        (raw.get("B_model") or raw.get("generator_B") or "").strip(),
                        labels,
                        (raw.get("reason") or "").strip(),
                    )
                )
            )
        except ValueError as exc:
            errors.append(RowError(number, str(exc)))
    return rows, errors


def _resolve(path_text: str, media_root: Path, *, confine: bool = False) -> Path:
    """The path as written (absolute, or relative to ``media_root``); failing that, a file of the same name
    directly in ``media_root`` (uploads arrive flat, without the manifest's folders). With ``confine`` (an
    uploaded manifest), a path that leads outside ``media_root`` — absolute, ``..``, a symlink — is refused."""
    candidate = Path(path_text)
    resolved = (candidate if candidate.is_absolute() else media_root / candidate).resolve()
    if not resolved.exists() and not candidate.is_absolute() and (media_root / candidate.name).is_file():
        resolved = (media_root / candidate.name).resolve()
    if confine and not resolved.is_relative_to(media_root.resolve()):
        raise media.MediaError(
            f"{path_text}: outside the import's folder; an uploaded manifest may only name the files uploaded with it"
        )
    return resolved


def video_ingest(
    *,
    source: Path,
    prompt: Prompt,
    generator: str = "",
    origin: str = Video.Origin.IMPORTED,
    generation_params: dict | None = None,
    sha256: str | None = None,
) -> tuple[Video, bool]:
    """Store one video (transcoded, with a poster). Returns (video, created); an identical file is reused.
    ``sha256`` of ``source`` may be passed when the caller already hashed it."""
    sha256 = sha256 or media.file_sha256(source)
    existing = Video.objects.filter(sha256=sha256).first()
    if existing is not None:
        if existing.prompt_id != prompt.pk:
            raise media.MediaError(
                f"this file is already stored as video {existing.pk} for another prompt "
                f"({str(existing.prompt)!r}); a video belongs to one prompt"
            )
        return existing, False
    info = media.probe(source)
    with tempfile.TemporaryDirectory(prefix="vidpref-ingest-") as tmp:
        out_path = Path(tmp) / f"{sha256[:16]}.mp4"
        poster_path = Path(tmp) / f"{sha256[:16]}.jpg"
        out = media.transcode(source, out_path, info)
        media.poster(out_path, poster_path, out)
        video = Video(
            prompt=prompt,
            sha256=sha256,
            generator=generator[:200],
            origin=origin,
            generation_params=generation_params or {},
            duration_s=out.duration_s,
            fps=out.fps,
            width=out.width,
            height=out.height,
            num_frames=out.num_frames,
        )
        with open(out_path, "rb") as video_file, open(poster_path, "rb") as poster_file:
            video.file.save(out_path.name, File(video_file), save=False)
            video.poster.save(poster_path.name, File(poster_file), save=False)
        try:
            with transaction.atomic():
                video.save()
        except IntegrityError:
            # Another import stored the same file a moment ago: use that one.
            video.file.delete(save=False)
            video.poster.delete(save=False)
            return Video.objects.get(sha256=sha256), False
    return video, True


def _prompt_for(text: str, source: str) -> Prompt:
    prompt, _ = Prompt.objects.get_or_create(text_sha256=text_sha256(text), defaults={"text": text, "source": source})
    return prompt


def _swap(labels: dict[str, str] | None) -> dict[str, str] | None:
    flip = {"A": "B", "B": "A", "TIE": "TIE"}
    return None if labels is None else {dim: flip[value] for dim, value in labels.items()}


def pair_create(
    *,
    prompt: Prompt,
    video_1: Video,
    video_2: Video,
    overlap: int,
    priority: float = 0.0,
    gold_labels: dict[str, str] | None = None,
    gold_reason: str = "",
    batch: Batch | None = None,
) -> tuple[Pair, bool]:
    """The pair of two videos (unordered: the lower id is stored as A, labels flipped to match)."""
    if video_1.pk == video_2.pk:
        raise media.MediaError("both sides are the same video")
    if video_1.pk > video_2.pk:
        video_1, video_2 = video_2, video_1
        gold_labels = _swap(gold_labels)
    pair, created = Pair.objects.get_or_create(
        video_a=video_1,
        video_b=video_2,
        defaults={
            "prompt": prompt,
            "overlap": overlap,
            "priority": priority,
            "batch": batch,
            "campaign_id": batch.campaign_id if batch is not None else default_campaign_pk(),
            "is_gold": gold_labels is not None,
            "gold_labels": gold_labels,
            "gold_reason": gold_reason if gold_labels is not None else "",
        },
    )
    return pair, created


def pairs_import(
    *,
    manifest: Path,
    media_root: Path | None = None,
    gold: bool = False,
    overlap: int | None = None,
    created_by=None,
    progress: Progress | None = None,
    confine_to_media_root: bool = False,
    campaign: Campaign | None = None,
    qualification: bool = False,
) -> ImportReport:
    """Import every good row of ``manifest``; report the bad ones by line. Video paths are relative to
    ``media_root`` (default: the manifest's folder). ``confine_to_media_root`` for manifests that came from
    outside (uploads): their paths may not leave ``media_root``.

    ``campaign`` (default: the default campaign) receives the batch and its pairs, and its ``overlap`` is the
    default k; ``qualification`` (with ``gold``) makes the gold pairs that campaign's qualification set."""
    manifest = Path(manifest)
    rows, errors = read_manifest(manifest)
    media_root = Path(media_root) if media_root else manifest.parent
    if qualification and not gold:
        raise ManifestError("qualification pairs need reference answers: import them with gold (--gold)")
    overlap = overlap or (campaign.overlap if campaign is not None else settings.VIDPREF["DEFAULT_OVERLAP"])
    report = ImportReport(manifest=manifest.name, rows=len(rows) + len(errors), skipped=list(errors))
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    batch, _ = Batch.objects.get_or_create(
        source=f"import:{digest}",
        defaults={
            "name": manifest.name,
            "created_by": created_by,
            "campaign_id": campaign.pk if campaign is not None else default_campaign_pk(),
        },
    )
    report.batch_id = batch.pk
    seen: dict[tuple[str, str], int] = {}
    for done, row in enumerate(rows, start=1):
        if progress:
            progress(done - 1, len(rows), f"line {row.line}")
        try:
            _import_row(
                row,
                media_root=media_root,
                gold=gold,
                overlap=overlap,
                batch=batch,
                report=report,
                seen=seen,
                confine=confine_to_media_root,
            )
        except (media.MediaError, ValueError) as exc:
            report.skipped.append(RowError(row.line, str(exc)))
    report.skipped.sort(key=lambda error: error.line)
    batch.report = report.as_dict()
    batch.save(update_fields=["report"])
    if qualification:
        batch.campaign.qualification_pairs.add(*batch.pairs.filter(is_gold=True))
    if progress:
        progress(len(rows), len(rows), "done")
    return report


def _import_row(
    row: ImportRow,
    *,
    media_root: Path,
    gold: bool,
    overlap: int,
    batch: Batch,
    report: ImportReport,
    seen: dict,
    confine: bool = False,
) -> None:
    if gold and row.labels is None:
        raise ValueError("--gold import, but the row has no VQ/MQ/TA labels")
    path_a = _resolve(row.path_a, media_root, confine=confine)
    path_b = _resolve(row.path_b, media_root, confine=confine)
    for name, path in ((row.path_a, path_a), (row.path_b, path_b)):
        if not path.is_file():
            raise media.MediaError(f"{name}: file not found (looked in {path.parent})")
    if path_a == path_b:
        raise media.MediaError(f"{row.path_a}: the same video on both sides")
    key = (str(path_a), str(path_b))
    if key in seen:
        report.pairs_existing += 1
        return
    digests = {path: media.file_sha256(path) for path in (path_a, path_b)}
    for name, path in ((row.path_a, path_a), (row.path_b, path_b)):
        # Check both before storing either, so a bad side leaves nothing behind.
        if not Video.objects.filter(sha256=digests[path]).exists():
            try:
                media.probe(path)
            except media.MediaError as exc:
                raise media.MediaError(f"{name}: {exc}") from exc
    prompt = _prompt_for(row.prompt, source=f"import:{report.manifest}")
    videos = []
    for name, path, generator in ((row.path_a, path_a, row.generator_a), (row.path_b, path_b, row.generator_b)):
        try:
            video, created = video_ingest(source=path, prompt=prompt, generator=generator, sha256=digests[path])
        except media.MediaError as exc:
            raise media.MediaError(f"{name}: {exc}") from exc
        videos.append(video)
        if created:
            report.videos_created += 1
        else:
            report.videos_reused += 1
    if videos[0].pk == videos[1].pk:
        raise media.MediaError(f"{row.path_a} and {row.path_b} are the same video (identical content)")
    _, created = pair_create(
        prompt=prompt,
        video_1=videos[0],
        video_2=videos[1],
        overlap=overlap,
        gold_labels=row.labels if gold else None,
        gold_reason=row.reason,
        batch=batch,
    )
    seen[key] = row.line
    if created:
        report.pairs_created += 1
    else:
        report.pairs_existing += 1


@dataclass(frozen=True)
class GeneratedPair:
    """Two videos a model generated for one prompt, to be judged; ``priority`` orders the queue."""

    prompt: str
    video_a: Path
    video_b: Path
    generator_a: str
    generator_b: str
    params_a: dict
    params_b: dict
    priority: float = 0.0


def generated_pairs_queue(
    *,
    pairs: list[GeneratedPair],
    source: str,
    name: str,
    overlap: int | None = None,
    created_by=None,
    progress: Progress | None = None,
) -> ImportReport:
    """Store generated pairs (transcoded, deduplicated) as one batch and open them for judging, the most
    uncertain first (``priority``). ``source`` names the batch: a second call with it adds nothing new."""
    overlap = overlap or settings.VIDPREF["DEFAULT_OVERLAP"]
    report = ImportReport(manifest=name, rows=len(pairs))
    batch, _ = Batch.objects.get_or_create(source=source, defaults={"name": name, "created_by": created_by})
    report.batch_id = batch.pk
    for done, item in enumerate(pairs, start=1):
        if progress:
            progress(done - 1, len(pairs), f"pair {done} of {len(pairs)}")
        try:
            prompt = _prompt_for(item.prompt, source)
            video_1, new_1 = video_ingest(
                source=item.video_a,
                prompt=prompt,
                generator=item.generator_a,
                origin=Video.Origin.GENERATED,
                generation_params=item.params_a,
            )
            video_2, new_2 = video_ingest(
                source=item.video_b,
                prompt=prompt,
                generator=item.generator_b,
                origin=Video.Origin.GENERATED,
                generation_params=item.params_b,
            )
            _, created = pair_create(
                prompt=prompt, video_1=video_1, video_2=video_2, overlap=overlap, priority=item.priority, batch=batch
            )
        except (media.MediaError, ValueError) as exc:
            report.skipped.append(RowError(done, f"{item.video_a.name} / {item.video_b.name}: {exc}"))
            continue
        report.pairs_created += int(created)
        report.pairs_existing += int(not created)
        report.videos_created += int(new_1) + int(new_2)
        report.videos_reused += 2 - int(new_1) - int(new_2)
    batch.report = report.as_dict()
    batch.save(update_fields=["report"])
    if progress:
        progress(len(pairs), len(pairs), "done")
    return report
