"""Config dataclasses from JSON/YAML files, with dotted overrides; saved next to every checkpoint."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _is_dataclass_type(kind) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _dataclass_in(kind):
    """The dataclass inside ``kind`` (``X``, ``X | None``), else None."""
    if _is_dataclass_type(kind):
        return kind
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        for arg in typing.get_args(kind):
            if _is_dataclass_type(arg):
                return arg
    return None


def config_from_dict(cls: type[T], values: dict, *, where: str = "config") -> T:
    """Build ``cls`` from a dict; nested dataclasses from nested dicts; unknown keys are errors."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping for {cls.__name__}, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {field.name for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(known)}")
    kwargs = {}
    for key, value in values.items():
        nested = _dataclass_in(hints[key])
        if nested is not None and isinstance(value, dict):
            value = config_from_dict(nested, value, where=f"{where}.{key}")
        elif isinstance(value, list) and typing.get_origin(hints[key]) is tuple:
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from error


def config_to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} is not KEY=VALUE (e.g. model.lora_rank=8)")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    if path.suffix.lower() == ".json":
        return json.loads(text)
    raise ValueError(f"{path}: config files are .json, .yaml or .yml")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """``cls`` from ``path`` (JSON or YAML) with ``overrides`` like ``["epochs=3", "model.shared_head=true"]``."""
    values = read_config_file(path) if path is not None else {}
    for override in overrides:
        keys, value = _parse_override(override)
        target = values
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return config_from_dict(cls, values, where=str(path) if path else "config")


def save_config(config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
