"""Model instances from hand-written SQL on the hot path (docs/architecture.md §3): the select list of a model's
columns, built once per process, and the instance from its slice of a row, as the ORM would load it."""

from __future__ import annotations

import functools

from django.db import connection


@functools.cache
def select_list(model, alias: str) -> tuple[tuple[str, ...], str]:
    """(attribute names, ``alias."column", …``) of every concrete field of ``model``, in the model's order."""
    fields = model._meta.concrete_fields
    return tuple(f.attname for f in fields), ", ".join(f'{alias}."{f.column}"' for f in fields)


def from_row(model, values):
    """``model`` loaded from ``values``: its concrete fields' values in ``select_list``'s order."""
    return model.from_db(connection.alias, list(select_list(model, "_")[0]), list(values))
