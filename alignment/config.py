"""Config dataclasses from JSON/YAML files, with dotted overrides; saved next to every checkpoint."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound=Any)  # a dataclass type; mypy cannot bound it to DataclassInstance publicly


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


def load_config(cls: type[T], path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> T:
    """``cls`` from ``path`` (JSON or YAML) with ``overrides`` like ``["epochs=3", "model.shared_head=true"]``."""
    values = read_config_file(path) if path is not None else {}
    for override in overrides:
        keys, value = _parse_override(override)
        target = values
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return config_from_dict(cls, values, where=str(path) if path else "config")


MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
"""``mixed_precision`` values; ``auto`` is decided on the machine that trains (``machine_defaults``)."""


def machine_defaults(config: T, *, cuda: bool, bf16: bool) -> T:
    """``config`` with its machine-dependent settings decided for the machine that trains it: ``mixed_precision``
    ``auto`` becomes ``bf16`` on a GPU that supports it and ``no`` (float32) otherwise, and a
    ``gradient_checkpointing`` of None (auto) becomes whether there is a GPU. The form that queues a job runs in
    the web process, which never imports torch, so it offers ``auto`` and the trainer decides."""
    changes: dict[str, Any] = {}
    if getattr(config, "mixed_precision", None) == "auto":
        changes["mixed_precision"] = "bf16" if cuda and bf16 else "no"
    if hasattr(config, "gradient_checkpointing") and config.gradient_checkpointing is None:
        changes["gradient_checkpointing"] = cuda
    return dataclasses.replace(config, **changes) if changes else config


def save_config(config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def start_study(config, config_name: str, *, taken_by: str, what: str = "a study") -> Path:
    """Make a study's ``config.output_dir`` and save ``config`` there as ``config_name``; a folder that
    already holds ``taken_by`` (the study's snapshot, or its result when a rerun resumes) is refused."""
    output_dir = Path(config.output_dir)
    if (output_dir / taken_by).exists():
        raise FileExistsError(f"{output_dir}: already holds {what}; pick a new --output-dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, output_dir / config_name)
    return output_dir


@dataclasses.dataclass(frozen=True)
class ConfigField:
    """One leaf of a config dataclass: what a form or a ``--set`` override addresses."""

    name: str  # dotted: "model.lora_rank"
    kind: Any  # the type hint, Optional unwrapped
    optional: bool
    default: Any  # dataclasses.MISSING when the field is required
    doc: str
    choices: tuple | None = None  # the values it takes, when a fixed set: a Literal, or metadata={"choices": …}
    section: str = ""  # the comment line heading its group in the dataclass's source ("# small backbone")


def _field_comments(cls) -> dict[str, str]:
    """A dataclass's field comments (``name: type = default  # this``) read from its source: the one place
    each option is documented, shown again as the admin form's help text."""
    return _source_comments(cls)[0]


def _source_comments(cls) -> tuple[dict[str, str], dict[str, str]]:
    """(each field's trailing comment, each field's section: the comment line above it that heads a group of
    fields, ``# small backbone``), read from the dataclass's source."""
    import inspect
    import io
    import tokenize

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}, {}
    comments: dict[str, str] = {}
    sections: dict[str, str] = {}
    line_name: dict[int, str] = {}
    section = ""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        row = token.start[0]
        if token.type == tokenize.NAME and row not in line_name and token.start[1] == 4:
            line_name[row] = token.string
            sections.setdefault(token.string, section)
        elif token.type == tokenize.COMMENT and row in line_name:
            comments[line_name[row]] = token.string.lstrip("#").strip()
        elif token.type == tokenize.COMMENT and token.start[1] == 4:
            section = token.string.lstrip("#").strip()
    return comments, sections


def _choices(kind, field: dataclasses.Field) -> tuple | None:
    if field.metadata.get("choices"):
        return tuple(field.metadata["choices"])
    if typing.get_origin(kind) is typing.Literal:
        return typing.get_args(kind)
    return None


def config_fields(cls, prefix: str = "") -> list[ConfigField]:
    """Every leaf field of ``cls``, nested dataclasses flattened into dotted names, in declaration order."""
    hints = typing.get_type_hints(cls)
    comments, sections = {}, {}
    for base in reversed(cls.__mro__):  # a subclass's comment wins over its base's
        if dataclasses.is_dataclass(base):
            base_comments, base_sections = _source_comments(base)
            comments.update(base_comments)
            sections.update(base_sections)
    fields = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        kind, optional = hints[field.name], False
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
            optional = len(args) < len(typing.get_args(kind))
            kind = args[0] if len(args) == 1 else kind
        if _is_dataclass_type(kind):
            fields.extend(config_fields(kind, prefix=f"{prefix}{field.name}."))
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        fields.append(
            ConfigField(
                f"{prefix}{field.name}",
                kind,
                optional,
                default,
                comments.get(field.name, ""),
                _choices(kind, field),
                sections.get(field.name, ""),
            )
        )
    return fields
