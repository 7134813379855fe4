"""Consensus labels per pair and dimension, computed in SQL (docs/architecture.md §4).

A pair's label on a dimension is the strict majority of its judgments (A, B or TIE); with no strict
majority it is a tie, or no label when ``no_majority="drop"``. Its agreement is the share of the
judgments that back that label (2 of 3 → 0.67). Judgments of disabled annotators (``is_active``
off) and of members of the ``excluded from training`` group are left out unless asked for.

The query is one ``GROUP BY`` over the judgments, so it runs inside PostgreSQL whatever the size; the
snapshot export wraps it (``workers.services.snapshots``) and the dashboard can reuse it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime

from alignment.labels import DIMENSIONS

EXCLUDED_GROUP = "excluded from training"

PARALLEL_SCANS = "set_config('parallel_setup_cost', '0', true), set_config('parallel_tuple_cost', '0.001', true)"
"""Select-list items that let one transaction's scans, joins and sorts over the judgments run in PostgreSQL's parallel
workers (``SELECT {PARALLEL_SCANS}``; ``set_config(…, true)`` is ``SET LOCAL``): their start-up, a few ms, is not
priced, while tables under ``min_parallel_table_scan_size`` (8 MB) still get none (docs/architecture.md §4)."""


def transaction_table(prefix: str) -> str:
    """A fresh name for an unlogged table that one report or export creates, reads and drops in its transaction
    (gone with it if its process dies). Not a temporary table: parallel workers cannot read those, so every query
    joining one would run in a single process (docs/architecture.md §4)."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


"""Members' judgments stay in the database (and in the stats) but not in training snapshots."""

_CODES = {"A": 1, "B": -1, "TIE": 0}


@dataclass(frozen=True)
class ConsensusFilters:
    judged_from: datetime | None = None  # judgments created at or after this
    judged_until: datetime | None = None  # judgments created before this
    batch_ids: tuple[int, ...] = ()  # empty: every batch
    min_judgments: int = 1
    min_agreement: float = 0.0  # every labelled dimension must be backed by at least this share
    include_flagged: bool = False  # a pair any counted judgment flagged (broken, unsafe, unclear) is left out
    include_excluded_annotators: bool = False
    include_gold: bool = False  # gold pairs check annotators; they are not training data
    no_majority: str = "tie"  # "tie" or "drop"

    def __post_init__(self):
        if self.no_majority not in ("tie", "drop"):
            raise ValueError(f"no_majority={self.no_majority!r}: use 'tie' or 'drop'")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement={self.min_agreement}: a share between 0 and 1")
        if self.min_judgments < 1:
            raise ValueError(f"min_judgments={self.min_judgments}: at least 1")

    def as_dict(self) -> dict:
        return {
            "judged_from": self.judged_from.isoformat() if self.judged_from else None,
            "judged_until": self.judged_until.isoformat() if self.judged_until else None,
            "batch_ids": list(self.batch_ids),
            "min_judgments": self.min_judgments,
            "min_agreement": self.min_agreement,
            "include_flagged": self.include_flagged,
            "include_excluded_annotators": self.include_excluded_annotators,
            "include_gold": self.include_gold,
            "no_majority": self.no_majority,
        }


def counted_judgments_sql(filters: ConsensusFilters) -> tuple[str, dict]:
    """``WHERE`` conditions (on ``j`` = annotate_judgment, ``u`` = auth_user) choosing the judgments that count."""
    conditions = ["TRUE"]
    params: dict = {}
    if not filters.include_excluded_annotators:
        conditions.append("u.is_active")
        conditions.append(
            "NOT EXISTS (SELECT 1 FROM auth_user_groups ug JOIN auth_group g ON g.id = ug.group_id "
            "WHERE ug.user_id = u.id AND g.name = %(excluded_group)s)"
        )
        params["excluded_group"] = EXCLUDED_GROUP
    if filters.judged_from:
        conditions.append("j.created_at >= %(judged_from)s")
        params["judged_from"] = filters.judged_from
    if filters.judged_until:
        conditions.append("j.created_at < %(judged_until)s")
        params["judged_until"] = filters.judged_until
    return " AND ".join(conditions), params


def consensus_sql(filters: ConsensusFilters) -> tuple[str, dict]:
    """A ``SELECT`` of one row per pair that passes ``filters``:
    ``pair_id, n_judgments, vq, mq, ta`` (1 / 0 / −1, NULL when dropped) and ``agreement_vq/mq/ta``."""
    where_judgments, params = counted_judgments_sql(filters)
    counts = ",\n".join(
        f"count(*) FILTER (WHERE j.{dim} = '{value}') AS {dim}_{value.lower()}"
        for dim in DIMENSIONS
        for value in _CODES
    )
    no_majority = "0" if filters.no_majority == "tie" else "NULL"
    labels = ",\n".join(
        f"CASE WHEN 2 * {dim}_a > n THEN 1 WHEN 2 * {dim}_b > n THEN -1 WHEN 2 * {dim}_tie > n THEN 0 "
        f"ELSE {no_majority} END AS {dim}"
        for dim in DIMENSIONS
    )
    agreements = ",\n".join(
        f"(CASE {dim} WHEN 1 THEN {dim}_a WHEN -1 THEN {dim}_b WHEN 0 THEN {dim}_tie END)::real / n AS agreement_{dim}"
        for dim in DIMENSIONS
    )
    pair_conditions = ["n >= %(min_judgments)s"]
    params["min_judgments"] = filters.min_judgments
    if not filters.include_gold:
        pair_conditions.append("NOT p.is_gold")
    if not filters.include_flagged:
        pair_conditions.append("NOT flagged")
    if filters.batch_ids:
        pair_conditions.append("p.batch_id = ANY(%(batch_ids)s)")
        params["batch_ids"] = list(filters.batch_ids)
    if filters.min_agreement > 0:
        pair_conditions.extend(f"coalesce(agreement_{dim}, 0) >= %(min_agreement)s" for dim in DIMENSIONS)
        params["min_agreement"] = filters.min_agreement
    sql = f"""
    SELECT l.pair_id, l.n AS n_judgments, {", ".join(f"l.{dim}" for dim in DIMENSIONS)},
           {", ".join(f"l.agreement_{dim}" for dim in DIMENSIONS)}
    FROM (
        SELECT c.*, {agreements}
        FROM (
            SELECT c.*, {labels}
            FROM (
                SELECT j.pair_id, count(*) AS n, bool_or(j.flag <> '') AS flagged,
                {counts}
                FROM annotate_judgment j JOIN auth_user u ON u.id = j.annotator_id
                WHERE {where_judgments}
                GROUP BY j.pair_id
            ) c
        ) c
    ) l
    JOIN annotate_pair p ON p.id = l.pair_id
    WHERE {" AND ".join(pair_conditions)}
    """
    return sql, params
