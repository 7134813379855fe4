"""Reads of the workers app."""

from __future__ import annotations

from pathlib import Path

from alignment.labels import DIMENSION_NAMES
from workers.models import Job, ModelVersion
from workers.services.jobs import job_folder_path


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def model_versions_compare(*, ids: list[int]) -> dict:
    """Model versions side by side: their validation accuracies, the config values that differ, and the
    curves to overlay. Versions are in the order of ``ids``; unknown ids are reported, not an error."""
    found = {
        version.pk: version for version in ModelVersion.objects.filter(pk__in=ids).select_related("snapshot", "job")
    }
    versions = [found[pk] for pk in ids if pk in found]
    rows = []
    for dim in DIMENSION_NAMES:
        for key, label in (("accuracy_without_ties", "w/o ties"), ("accuracy_with_ties", "w/ ties")):
            values = [((version.metrics.get("validation") or {}).get(dim) or {}).get(key) for version in versions]
            known = [value for value in values if value is not None]
            rows.append({"label": f"{dim} {label}", "values": values, "best": max(known) if known else None})
    configs = [_flatten(version.config or {}) for version in versions]
    keys = sorted(set().union(*configs)) if configs else []
    differences = [
        {"key": key, "values": [config.get(key, "–") for config in configs]}
        for key in keys
        if len({repr(config.get(key)) for config in configs}) > 1 and key not in ("output_dir", "snapshot")
    ]
    curves = [{"name": version.name, "charts": (version.metrics or {}).get("charts") or {}} for version in versions]
    return {
        "versions": versions,
        "missing": [pk for pk in ids if pk not in found],
        "accuracy_rows": rows,
        "config_differences": differences,
        "curves": curves,
    }


def job_file_path(*, job: Job, name: str) -> Path | None:
    """The file ``name`` (relative) inside the job's folder; None when it is missing or lies outside the folder
    (``..``, an absolute path, a symlink out)."""
    folder = job_folder_path(job).resolve()
    path = (folder / name).resolve()
    return path if path.is_relative_to(folder) and path.is_file() else None


def guided_previews(*, ids: list[int]) -> list[Job]:
    """The guided preview jobs among ``ids``, newest first (the personalisation page's history)."""
    return list(Job.objects.filter(pk__in=ids, kind=Job.Kind.PREVIEW).order_by("-pk"))
