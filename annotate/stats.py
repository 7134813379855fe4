"""Agreement, annotator quality and generator rankings for the dashboard (docs/architecture.md §4).

``agreement_report`` is the one entry point. PostgreSQL does the counting: a fixed handful of
``GROUP BY`` queries (their number does not grow with the data) reduce the judgments to small tables —
the distinct per-pair count patterns of B/TIE/A with how many pairs show each, the judgments of each
annotator grouped by their own labels and their pair's counts, 3×3 confusion counts per two annotators,
win/tie/loss counts per two generators. Python only sees those tables, so a report over 182,000 pairs
costs about as much as the queries.

Which judgments count: those ``annotate.consensus.counted_judgments_sql`` counts (active annotators
outside the ``excluded from training`` group, inside the date filters), on pairs of the chosen batches.
Gold pairs are left out of the agreement statistics (they are picked to be clear, and many annotators
see each) and scored against their gold labels instead. The per-annotator table lists everyone who
judged within the filters, disabled and excluded annotators too; their judgments are scored against the
counted ones but never enter the statistics or anyone else's majority.

Statistics and the libraries that compute them:

- Krippendorff's α, nominal and ordinal with B < TIE < A, from the pattern table, with 95 % percentile
  bootstrap intervals resampling pairs. Resampling pairs with replacement only moves the pattern
  multiplicities (a multinomial draw) and the coincidence matrix is linear in them, so the point
  estimate and ``bootstrap`` resamples are one matrix product (``alpha_from_coincidences``). The
  ``krippendorff`` package cannot weight units — it would need the table expanded to one row per pair,
  six times over — so the tests check this code against it (and against a brute-force definition).
- Fleiss' κ (``statsmodels``) on the pairs with the modal number of judgments (it needs equal raters).
- Cohen's κ for every two annotators who judged at least two pairs in common, from their 3×3 confusion
  counts; the formula is vectorised over all annotator pairs because ``sklearn``'s
  ``cohen_kappa_score`` costs milliseconds a call and a pool of 100 annotators has 14,850 calls to make
  (the tests check every value against it).
- Leave-one-out agreement: how often an annotator's label equals the strict majority of the *other*
  counted judgments of the same pair, on pairs with at least two others and such a majority.
- Generators: Davidson's (1970) Bradley–Terry model with ties, fitted to the consensus label
  (``annotate.consensus.consensus_sql``) of each non-gold pair whose two videos have different,
  named generators; see ``davidson_fit``.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from alignment.labels import DIMENSIONS
from annotate.consensus import (
    EXCLUDED_GROUP,
    PARALLEL_SCANS,
    ConsensusFilters,
    consensus_sql,
    counted_judgments_sql,
    transaction_table,
)

ORDINAL_LABELS = ("B", "TIE", "A")
"""Column order of every label table here: the ordinal order B < TIE < A."""

MIN_SHARED_PAIRS = 2  # Cohen's κ between two annotators needs at least this many pairs judged by both
OUTLIER_MIN_JUDGMENTS = 20  # position bias: the binomial test needs this many answers to mean anything
LOW_AGREEMENT_MIN_JUDGMENTS = 5  # low agreement: scored judgments (pairs with a majority of two or more others)
LOW_AGREEMENT_CEILING = 0.5  # below this the others' majority is missed more often than met
LOW_AGREEMENT_MAD = 3.0  # how many MADs below the others' median ...
LOW_AGREEMENT_MARGIN_MIN = 0.10  # ... but at least this far below (a tight group: MAD ≈ 0) ...
LOW_AGREEMENT_MARGIN_MAX = 0.30  # ... and never more than this (small data: coarse shares, a wide MAD)
POSITION_BIAS_P = 0.001
POSITION_BIAS_EFFECT = 0.15
PRIOR_PRECISION = 0.1  # Davidson fit: Gaussian prior N(0, 1/0.1) on log-strengths and on log ν


def agreement_report(
    *,
    batch_ids: tuple[int, ...] = (),
    judged_from: datetime | None = None,
    judged_until: datetime | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Agreement per dimension, quality per annotator and a ranking of generators, as a JSON-ready dict.

    ``batch_ids`` narrows to pairs of those batches (empty: all); ``judged_from`` / ``judged_until``
    narrow the judgments by ``created_at`` (from inclusive, until exclusive). ``bootstrap`` resamples
    give the 95 % intervals (0: no intervals); ``seed`` makes them reproducible. Floats are rounded to
    4 decimals (p-values to 4 significant digits); a statistic that is undefined for the data is ``None``.
    """
    started = time.perf_counter()
    if bootstrap < 0:
        raise ValueError(f"bootstrap={bootstrap}: the number of resamples, 0 or more")
    filters = ConsensusFilters(
        batch_ids=tuple(sorted(int(batch) for batch in batch_ids)), judged_from=judged_from, judged_until=judged_until
    )
    scope = _Scope.of(filters)
    reliability_rng, generators_rng = (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(2))
    # The numpy bootstraps run in a worker thread while PostgreSQL (a process of its own) answers the
    # remaining queries; only this thread touches the database.
    with ThreadPoolExecutor(max_workers=1) as numpy_work, transaction.atomic(), connection.cursor() as cursor:
        # The recompute's settings, for this transaction only (set_config(…, true) is SET LOCAL), in one statement:
        # - work_mem: each query aggregates every judgment in one pass; with the default 4 MB their hash tables and
        #   sorts spill to disk.
        # - enable_indexscan off: the planner would walk an annotator index to group every judgment by annotator, a
        #   random heap access per judgment (judgments of one person are spread over the table) — 4.6x slower than a
        #   sequential scan and a sort at 1.8M judgments. Bitmap scans stay, for a recompute filtered to a few
        #   batches or days.
        # - plan_cache_mode: a worker's connection prepares a statement after five runs (config/settings/base.py); a
        #   prepared statement may then get a generic plan, blind to the filters' values. A plan costs nothing here.
        # - PARALLEL_SCANS: parallel workers scan, join and sort the judgments beside this process; the per-pair
        #   table is therefore a transaction_table, which they can read.
        cursor.execute(
            "SELECT set_config('work_mem', '64MB', true), set_config('enable_indexscan', 'off', true), "
            f"set_config('plan_cache_mode', 'force_custom_plan', true), {PARALLEL_SCANS}"
        )
        _pairs_create(cursor, scope)
        matchups = _matchups(cursor, scope)
        generators = numpy_work.submit(
            lambda: {
                dim.upper(): _generator_ranking(matchups[dim], bootstrap=bootstrap, rng=generators_rng)
                for dim in DIMENSIONS
            }
        )
        patterns = _label_patterns(cursor, scope)
        reliability = numpy_work.submit(
            lambda: {
                dim.upper(): _reliability(*patterns[dim], bootstrap=bootstrap, rng=reliability_rng)
                for dim in DIMENSIONS
            }
        )
        progress = _progress(cursor, scope)
        annotator_groups = _annotator_groups(cursor, scope)
        annotator_details = _annotator_details(cursor, scope)
        confusions = _confusions(cursor, scope)
        cursor.execute(f"DROP TABLE {scope.pairs}")  # with the transaction: also when the caller's goes on

    annotators = _annotator_table(annotator_groups, annotator_details)
    counted = set(annotator_groups["annotator"][annotator_groups["own"]].tolist())
    judges = [row["id"] for row in annotators if row["id"] in counted]
    dimensions = {
        dim.upper(): {**reliability.result()[dim.upper()], "cohen_kappa": _cohen_matrix(judges, confusions, index)}
        for index, dim in enumerate(DIMENSIONS)
    }
    return {
        "filters": {
            "batch_ids": list(filters.batch_ids),
            "judged_from": judged_from.isoformat() if judged_from else None,
            "judged_until": judged_until.isoformat() if judged_until else None,
        },
        "seconds": round(time.perf_counter() - started, 4),
        "progress": progress,
        "dimensions": dimensions,
        "annotators": annotators,
        "generators": generators.result(),
    }


# --- SQL: each function is one query ------------------------------------------------------------------

PAIRS = "stats_pairs"
"""The prefix of the per-pair table's name (``_Scope.pairs``: ``stats_pairs_<pid>_<random>``, one per recompute).
An unlogged table created in the recompute's transaction (gone with it if the worker dies), one row per pair of
the chosen batches with a judgment within the dates: ``pair_id``, its videos and their ``generator_a/b``,
``is_gold``, ``gold_vq/mq/ta`` and, over its counted judgments (none on gold pairs), ``n`` and per dimension the
label counts packed in one number, ``<dim>_counts = B + 1000·TIE + 1000²·A`` (one grouping key instead of three;
``_unpack`` splits it)."""

PACK = 1000


@dataclasses.dataclass(frozen=True)
class _Scope:
    """SQL pieces shared by the queries. ``dates`` is a condition on ``j`` (annotate_judgment);
    ``judges`` a subquery ``(id, counts)`` telling for each user whether their judgments count; ``pairs`` the name
    of this recompute's per-pair table (see ``PAIRS``)."""

    filters: ConsensusFilters
    dates: str
    judges: str
    params: dict
    pairs: str

    @classmethod
    def of(cls, filters: ConsensusFilters) -> _Scope:
        # counted_judgments_sql is "the annotator's judgments count AND the judgment is within the
        # dates": evaluated once per user without the dates, and once per judgment with only the dates.
        dates, date_params = counted_judgments_sql(dataclasses.replace(filters, include_excluded_annotators=True))
        rule, rule_params = counted_judgments_sql(dataclasses.replace(filters, judged_from=None, judged_until=None))
        judges = f"(SELECT u.id, {rule} AS counts FROM auth_user u)"
        params = {**date_params, **rule_params, "batch_ids": list(filters.batch_ids)}
        return cls(filters, dates, judges, params, transaction_table(PAIRS))

    def judgments(self) -> str:
        """``FROM`` the judgments within the filters, as ``j``, with their pair's row of ``stats_pairs`` as ``c``
        (which holds only pairs of the chosen batches)."""
        return f"annotate_judgment j JOIN {self.pairs} c ON c.pair_id = j.pair_id"


def _pairs_create(cursor, scope: _Scope) -> None:
    """The per-pair table: the judgments grouped by pair alone (narrow rows, sorted by pair and annotator in
    parallel workers), then joined to their pairs — grouping the judgments joined to their pairs first sorted every
    judgment with its pair's columns, 10 % slower at 1.82M pairs. Gold pairs keep no counted figures."""
    packed = ", ".join(
        f"sum(CASE j.{dim} WHEN 'B' THEN 1 WHEN 'TIE' THEN {PACK} ELSE {PACK**2} END) FILTER (WHERE k.counts) "
        f"AS {dim}_counts"
        for dim in DIMENSIONS
    )
    code = " + ".join(
        f"{3**index} * CASE j.{dim} WHEN 'B' THEN 0 WHEN 'TIE' THEN 1 ELSE 2 END"
        for index, dim in enumerate(DIMENSIONS)
    )
    gold = ", ".join(f"p.gold_labels ->> '{dim}' AS gold_{dim}" for dim in DIMENSIONS)
    counted = ", ".join(
        f"CASE WHEN p.is_gold THEN NULL ELSE a.{column} END AS {column}"
        for column in (*(f"{dim}_counts" for dim in DIMENSIONS), "judges", "codes")
    )
    batch = (
        "AND j.pair_id IN (SELECT id FROM annotate_pair WHERE batch_id = ANY(%(batch_ids)s))"
        if scope.filters.batch_ids
        else ""
    )
    cursor.execute(
        f"""
        CREATE UNLOGGED TABLE {scope.pairs} AS
            SELECT p.id AS pair_id, p.video_a_id, p.video_b_id, p.generator_a, p.generator_b, p.is_gold, {gold},
                   CASE WHEN p.is_gold THEN 0 ELSE a.n END AS n, {counted},
                   NOT p.is_gold AND a.flagged AS flagged
            FROM (
                SELECT j.pair_id, count(*) FILTER (WHERE k.counts)::int AS n, {packed},
                       coalesce(bool_or(j.flag <> '') FILTER (WHERE k.counts), false) AS flagged,
                       array_agg(j.annotator_id ORDER BY j.annotator_id) FILTER (WHERE k.counts) AS judges,
                       array_agg(({code})::smallint ORDER BY j.annotator_id) FILTER (WHERE k.counts) AS codes
                FROM annotate_judgment j JOIN {scope.judges} k ON k.id = j.annotator_id
                WHERE {scope.dates} {batch}
                GROUP BY j.pair_id
            ) a JOIN annotate_pair p ON p.id = a.pair_id
        """,
        scope.params,
    )
    cursor.execute(f"ANALYZE {scope.pairs} (pair_id)")  # a row count for the planner: without it, nested loops


def _progress(cursor, scope: _Scope) -> dict:
    """Pairs of the chosen batches by status (the date filters apply to judgments, not pairs), and every
    judgment within the filters — counted or not — by local day."""
    batch = "p.batch_id = ANY(%(batch_ids)s)" if scope.filters.batch_ids else "TRUE"
    judgments = scope.judgments() if scope.filters.batch_ids else "annotate_judgment j"
    cursor.execute(
        f"""
        SELECT NULL::date, count(*), count(*) FILTER (WHERE p.status = 'complete'),
               count(*) FILTER (WHERE p.status = 'open'), count(*) FILTER (WHERE p.status = 'retired')
        FROM annotate_pair p WHERE {batch}
        UNION ALL
        SELECT timezone(%(tz)s, j.created_at)::date AS day, count(*), NULL, NULL, NULL
        FROM {judgments} WHERE {scope.dates} GROUP BY day
        """,
        {**scope.params, "tz": timezone.get_current_timezone_name()},
    )
    rows = cursor.fetchall()
    ((_, total, complete, open_, retired),) = [row for row in rows if row[0] is None]
    days = sorted(row for row in rows if row[0] is not None)
    return {
        "pairs_total": total,
        "pairs_complete": complete,
        "pairs_open": open_,
        "pairs_retired": retired,
        "judgments_total": sum(row[1] for row in days),
        "judgments_per_day": [{"day": row[0].isoformat(), "judgments": row[1]} for row in days],
    }


def _label_patterns(cursor, scope: _Scope) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per dimension: the distinct rows of the pairs × (B, TIE, A) count table, ``(patterns (K, 3), pairs (K,))``."""
    columns = ", ".join(f"{dim}_counts" for dim in DIMENSIONS)
    sets = ", ".join(f"({dim}_counts)" for dim in DIMENSIONS)
    cursor.execute(f"SELECT {columns}, count(*) FROM {scope.pairs} WHERE n > 0 GROUP BY GROUPING SETS ({sets})")
    rows = cursor.fetchall()
    result = {}
    for index, dim in enumerate(DIMENSIONS):
        mine = [(row[index], row[-1]) for row in rows if row[index] is not None]  # the other columns are NULL
        packed = np.array([packed for packed, _ in mine], dtype=np.int64)
        result[dim] = (_unpack(packed).reshape(-1, 3), np.array([pairs for _, pairs in mine], dtype=np.int64))
    return result


_LOO_SETS = {0b011: 0, 0b101: 1, 0b110: 2}  # GROUPING(vq_counts, mq_counts, ta_counts) → dimension
_ANSWERS_SET = 0b111


def _annotator_groups(cursor, scope: _Scope) -> dict:
    """Every judgment within the filters, counted per annotator in small tables whose size does not grow with
    the number of pairs: per dimension by (whether it counts, its label, its pair's counts) for the
    leave-one-out agreement, and by (whether it counts, its labels, screen side, flag, gold score) for the
    rest. Two levels: one pass over the judgments groups by all of these together, then grouping sets
    split that (already small) result. Returned as numpy columns."""
    gold_answered = " + ".join(f"(c.gold_{dim} IS NOT NULL)::int" for dim in DIMENSIONS)
    gold_correct = " + ".join(f"coalesce((j.{dim} = c.gold_{dim})::int, 0)" for dim in DIMENSIONS)
    # The inner GROUP BY has a few thousand groups, but the planner multiplies its 13 columns' distinct counts,
    # expects one per judgment and sorts every judgment by 13 keys (4 s at 1.8M judgments) instead of hashing them:
    # a materialized CTE, hashed (no sorts allowed here), and the grouping sets over its small result.
    cursor.execute("SET LOCAL enable_sort = off")
    cursor.execute(
        f"""
        WITH g AS MATERIALIZED (
            SELECT j.annotator_id AS annotator, k.counts AND NOT c.is_gold AS own, j.vq, j.mq, j.ta, j.left_is_a,
                   j.flag <> '' AS flagged, CASE WHEN c.is_gold THEN {gold_answered} END AS gold_answered,
                   CASE WHEN c.is_gold THEN {gold_correct} END AS gold_correct,
                   c.n, c.vq_counts, c.mq_counts, c.ta_counts, count(*) AS judgments
            FROM {scope.judgments()} JOIN {scope.judges} k ON k.id = j.annotator_id
            WHERE {scope.dates}
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13
        )
        SELECT GROUPING(vq_counts, mq_counts, ta_counts), annotator, own, vq, mq, ta, left_is_a, flagged,
               gold_answered, gold_correct, n, vq_counts, mq_counts, ta_counts, sum(judgments)
        FROM g
        GROUP BY GROUPING SETS ((annotator, own, vq, n, vq_counts), (annotator, own, mq, n, mq_counts),
                                (annotator, own, ta, n, ta_counts),
                                (annotator, own, vq, mq, ta, left_is_a, flagged, gold_answered, gold_correct))
        """,
        scope.params,
    )
    rows = cursor.fetchall()
    cursor.execute("SET LOCAL enable_sort = on")
    code = {label: index for index, label in enumerate(ORDINAL_LABELS)}
    loo = []
    for dimension in range(len(DIMENSIONS)):
        mine = [row for row in rows if _LOO_SETS.get(row[0]) == dimension]
        loo.append(
            {
                "annotator": np.array([row[1] for row in mine], dtype=np.int64),
                "own": np.array([row[2] for row in mine], dtype=np.int64),
                "label": np.array([code[row[3 + dimension]] for row in mine], dtype=np.int64),
                "voters": np.array([row[10] for row in mine], dtype=np.int64),
                "counts": _unpack(np.array([row[11 + dimension] or 0 for row in mine], dtype=np.int64)).reshape(-1, 3),
                "judgments": np.array([row[14] for row in mine], dtype=np.int64),
            }
        )
    answers = [row for row in rows if row[0] == _ANSWERS_SET]
    return {
        "loo": loo,
        "annotator": np.array([row[1] for row in answers], dtype=np.int64),
        "own": np.array([row[2] for row in answers], dtype=bool),
        "labels": np.array([[code[label] for label in row[3:6]] for row in answers], dtype=np.int64).reshape(-1, 3),
        "left_is_a": np.array([row[6] for row in answers], dtype=bool),
        "flagged": np.array([row[7] for row in answers], dtype=bool),
        "gold": np.array([row[8] is not None for row in answers], dtype=bool),
        "gold_answered": np.array([row[8] or 0 for row in answers], dtype=np.int64),
        "gold_correct": np.array([row[9] or 0 for row in answers], dtype=np.int64),
        "judgments": np.array([row[14] for row in answers], dtype=np.int64),
    }


def _annotator_details(cursor, scope: _Scope) -> list[tuple]:
    """``(id, username, is_active, excluded, median duration in ms)`` of every annotator with a judgment
    within the filters, by id."""
    judgments = scope.judgments() if scope.filters.batch_ids else "annotate_judgment j"
    cursor.execute(
        f"""
        SELECT u.id, u.username, u.is_active,
               EXISTS (SELECT 1 FROM auth_user_groups ug JOIN auth_group g ON g.id = ug.group_id
                       WHERE ug.user_id = u.id AND g.name = %(excluded_group)s),
               d.median_ms
        FROM (SELECT j.annotator_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY j.duration_ms) AS median_ms
              FROM {judgments} WHERE {scope.dates} GROUP BY j.annotator_id) d
        JOIN auth_user u ON u.id = d.annotator_id
        ORDER BY u.id
        """,
        {**scope.params, "excluded_group": EXCLUDED_GROUP},
    )
    return cursor.fetchall()


def _confusions(cursor, scope: _Scope) -> dict[tuple[int, int], np.ndarray]:
    """``(first, second) → (3, 3, 3)`` counts (dimension, first's label, second's label) over the non-gold
    pairs both judged, for every two counted annotators ``first < second``: every two judges of a pair
    from its ``judges`` / ``codes`` arrays (sorted by annotator), grouped by both annotators and codes,
    then folded into one row of 27 counts per two annotators."""
    cells = ", ".join(
        f"sum(shared) FILTER (WHERE x_code / {3**index} % 3 = {first} AND y_code / {3**index} % 3 = {second})"
        for index in range(len(DIMENSIONS))
        for first in range(3)
        for second in range(3)
    )
    # (size, i, m) for every two positions i < m in an array of each size: joined on a pair's size, it lists
    # the pair's two-judge combinations (a hash join, much cheaper than generate_series per pair).
    positions = f"""
        SELECT size, i, m FROM generate_series(2, (SELECT max(n) FROM {scope.pairs})) size,
               generate_series(1, size) i, generate_series(1, size) m WHERE i < m"""
    cursor.execute(
        f"""
        SELECT first, second, {cells}
        FROM (
            SELECT judges[i] AS first, judges[m] AS second, codes[i] AS x_code, codes[m] AS y_code, count(*) AS shared
            FROM {scope.pairs} s JOIN ({positions}) ix ON ix.size = s.n
            GROUP BY 1, 2, 3, 4
        ) g
        GROUP BY first, second
        """
    )
    return {
        (row[0], row[1]): np.array([count or 0 for count in row[2:]], dtype=np.int64).reshape(3, 3, 3)
        for row in cursor.fetchall()
    }


def _matchups(cursor, scope: _Scope) -> dict[str, list[tuple[str, str, int, int, int]]]:
    """Per dimension: ``(generator_a, generator_b, a wins, ties, b wins)`` over the consensus labels of the
    pairs whose two videos have different, named generators.

    The consensus is ``consensus_sql``'s, taken from each pair's counted labels already in ``stats_pairs`` (one
    pass over the pairs instead of another over every judgment); filters whose consensus rules differ from the
    defaults take ``_matchups_from_consensus``, and a test holds the two to the same answer."""
    filters, defaults = scope.filters, ConsensusFilters()
    rules = ("min_judgments", "min_agreement", "include_flagged", "include_excluded_annotators", "include_gold")
    if any(getattr(filters, rule) != getattr(defaults, rule) for rule in (*rules, "no_majority")):
        return _matchups_from_consensus(cursor, scope)

    def label(dim: str) -> str:  # a strict majority of A or B, else a tie (the default no_majority="tie")
        a, b = f"({dim}_counts / {PACK**2})", f"({dim}_counts %% {PACK})"
        return f"CASE WHEN 2 * {a} > n THEN 1 WHEN 2 * {b} > n THEN -1 ELSE 0 END"

    counts = ", ".join(f"count(*) FILTER (WHERE {label(dim)} = {code})" for dim in DIMENSIONS for code in (1, 0, -1))
    cursor.execute(
        f"""
        SELECT generator_a, generator_b, {counts}
        FROM {scope.pairs}
        WHERE n >= %(min_judgments)s AND NOT is_gold AND NOT flagged
          AND generator_a <> '' AND generator_b <> '' AND generator_a <> generator_b
        GROUP BY 1, 2
        """,
        {"min_judgments": defaults.min_judgments},
    )
    return _matchup_rows(cursor.fetchall())


def _matchups_from_consensus(cursor, scope: _Scope) -> dict[str, list[tuple[str, str, int, int, int]]]:
    """``_matchups`` from ``consensus_sql`` itself: another pass over every judgment."""
    consensus, params = consensus_sql(scope.filters)
    counts = ", ".join(f"count(*) FILTER (WHERE c.{dim} = {code})" for dim in DIMENSIONS for code in (1, 0, -1))
    cursor.execute(
        f"""
        SELECT s.generator_a, s.generator_b, {counts}
        FROM ({consensus}) c JOIN {scope.pairs} s ON s.pair_id = c.pair_id
        WHERE s.generator_a <> '' AND s.generator_b <> '' AND s.generator_a <> s.generator_b
        GROUP BY 1, 2
        """,
        params,
    )
    return _matchup_rows(cursor.fetchall())


def _matchup_rows(rows) -> dict[str, list[tuple[str, str, int, int, int]]]:
    return {
        dim: sorted((row[0], row[1], *row[2 + 3 * index : 5 + 3 * index]) for row in rows)
        for index, dim in enumerate(DIMENSIONS)
    }


def _unpack(packed: np.ndarray) -> np.ndarray:
    """``B + 1000·TIE + 1000²·A`` → ``(…, 3)`` counts in the order B, TIE, A."""
    return np.stack([packed % PACK, packed // PACK % PACK, packed // PACK**2], axis=-1)


# --- reliability ---------------------------------------------------------------------------------------


def coincidence_contributions(patterns: np.ndarray) -> np.ndarray:
    """Each unit's contribution to Krippendorff's coincidence matrix: ``(K, V, V)`` from counts ``(K, V)``,
    ``(n_c n_k − [c = k] n_c) / (m − 1)`` with ``m`` the unit's number of values; zero for ``m < 2``."""
    patterns = np.asarray(patterns, dtype=np.float64)
    values = patterns.shape[1]
    outer = patterns[:, :, None] * patterns[:, None, :] - patterns[:, :, None] * np.eye(values)
    judged = patterns.sum(axis=1)
    return outer / np.maximum(judged - 1, 1)[:, None, None]


def alpha_from_coincidences(coincidences: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's α for each of ``(R, V, V)`` coincidence matrices (values in ordinal order);
    NaN where it is undefined (fewer than two pairable values, or a single value used)."""
    observed = np.asarray(coincidences, dtype=np.float64)
    by_value = observed.sum(axis=2)  # (R, V)
    total = by_value.sum(axis=1)  # (R,)
    values = by_value.shape[1]
    if level == "nominal":
        distance = np.broadcast_to(1.0 - np.eye(values), observed.shape)
    elif level == "ordinal":
        # δ²(c, k) = (Σ_{g=c..k} n_g − (n_c + n_k) / 2)²
        below = np.concatenate([np.zeros_like(total)[:, None], np.cumsum(by_value, axis=1)], axis=1)
        order = np.arange(values)
        low, high = np.minimum.outer(order, order), np.maximum.outer(order, order)
        between = below[:, high + 1] - below[:, low]
        distance = (between - (by_value[:, :, None] + by_value[:, None, :]) / 2) ** 2
    else:
        raise ValueError(f"level={level!r}: 'nominal' or 'ordinal'")
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = by_value[:, :, None] * by_value[:, None, :] - by_value[:, :, None] * np.eye(values)
        expected /= (total - 1)[:, None, None]
        alpha = 1.0 - (observed * distance).sum(axis=(1, 2)) / (expected * distance).sum(axis=(1, 2))
    return np.where(np.isfinite(alpha), alpha, np.nan)


def _reliability(patterns: np.ndarray, pairs: np.ndarray, *, bootstrap: int, rng: np.random.Generator) -> dict:
    from statsmodels.stats.inter_rater import fleiss_kappa

    label_totals = (patterns * pairs[:, None]).sum(axis=0)  # (B, TIE, A)
    judgments = int(label_totals.sum())
    contributions = coincidence_contributions(patterns).reshape(len(pairs), 9)  # (K, 9)
    weights = pairs[None, :]  # the data itself: every pattern as often as the pairs show it
    if bootstrap and len(pairs):
        resampled = rng.multinomial(int(pairs.sum()), pairs / pairs.sum(), size=bootstrap)  # (R, K) pairs per pattern
        weights = np.concatenate([weights, resampled])
    coincidences = (weights @ contributions).reshape(-1, 3, 3)
    alphas = {}
    for level in ("nominal", "ordinal"):
        values = alpha_from_coincidences(coincidences, level) if len(pairs) else np.full(1, np.nan)
        low = high = None
        if bootstrap and not np.isnan(values[0]):
            low, high = _percentile_interval(values[1:])
        alphas[f"alpha_{level}"] = {"value": _round(values[0]), "ci_low": low, "ci_high": high}

    judged = patterns.sum(axis=1)
    fleiss = None
    eligible = judged >= 2
    if eligible.any():
        sizes, at = np.unique(judged[eligible], return_inverse=True)
        modal = sizes[np.bincount(at, weights=pairs[eligible]).argmax()]
        table = np.repeat(patterns[judged == modal], pairs[judged == modal], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            fleiss = float(fleiss_kappa(table, method="fleiss"))
    return {
        **alphas,
        "fleiss_kappa": _round(fleiss),
        "tie_rate": _round(label_totals[1] / judgments if judgments else None),
        "label_distribution": {"A": int(label_totals[2]), "B": int(label_totals[0]), "TIE": int(label_totals[1])},
    }


def cohen_kappa_from_confusions(confusions: np.ndarray) -> np.ndarray:
    """Cohen's κ for each of ``(P, V, V)`` confusion-count matrices; NaN where undefined (no items, or both
    annotators always gave one and the same label so chance agreement is 1)."""
    confusions = np.asarray(confusions, dtype=np.float64)
    total = confusions.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = np.trace(confusions, axis1=1, axis2=2) / total
        chance = (confusions.sum(axis=2) * confusions.sum(axis=1)).sum(axis=1) / total**2
        kappa = (observed - chance) / (1.0 - chance)
    return np.where(np.isfinite(kappa), kappa, np.nan)


def _cohen_matrix(judges: list[int], confusions: dict[tuple[int, int], np.ndarray], dimension: int) -> dict:
    position = {judge: index for index, judge in enumerate(judges)}
    size = len(judges)
    matrix: list[list[float | None]] = [[1.0 if i == j else None for j in range(size)] for i in range(size)]
    shared = [
        (first, second)
        for (first, second), counts in confusions.items()
        if counts[dimension].sum() >= MIN_SHARED_PAIRS and first in position and second in position
    ]
    if shared:
        kappas = cohen_kappa_from_confusions(np.stack([confusions[key][dimension] for key in shared]))
        for (first, second), kappa in zip(shared, kappas, strict=True):
            i, j = position[first], position[second]
            matrix[i][j] = matrix[j][i] = _round(kappa)
    return {"annotators": judges, "matrix": matrix}


# --- annotators ----------------------------------------------------------------------------------------


def _annotator_table(groups: dict, details: list[tuple]) -> list[dict]:
    """Per-annotator figures from the grouped judgments (see ``_annotator_groups``); vectorised over groups."""
    from scipy.stats import binomtest

    ids = np.array([row[0] for row in details], dtype=np.int64)

    def per_annotator(annotators: np.ndarray, values) -> np.ndarray:
        """Sums per annotator, in the order of ``details`` (the grouped annotators are the same ones)."""
        return np.bincount(np.searchsorted(ids, annotators), weights=values, minlength=len(ids))

    scored, agreements = [], []
    for loo in groups["loo"]:
        # Leave one out: the others are the pair's counted judgments less this one when it is among them.
        others = loo["counts"] - loo["own"][:, None] * (loo["label"][:, None] == np.arange(3))  # (G, labels)
        voters = loo["voters"] - loo["own"]
        majority = (voters >= 2) & (2 * others.max(axis=1) > voters)
        agreed = majority & (2 * others[np.arange(len(voters)), loo["label"]] > voters)
        scored.append(per_annotator(loo["annotator"], loo["judgments"] * majority))
        agreements.append(per_annotator(loo["annotator"], loo["judgments"] * agreed))
    first = groups["loo"][0]
    loo_judgments = per_annotator(first["annotator"], first["judgments"] * (first["voters"] - first["own"] >= 2))

    labels, weight, annotators = groups["labels"], groups["judgments"], groups["annotator"]
    decided = labels != ORDINAL_LABELS.index("TIE")
    left = decided & ((labels == ORDINAL_LABELS.index("A")) == groups["left_is_a"][:, None])
    judgments = per_annotator(annotators, weight)
    decided_total = per_annotator(annotators, weight * decided.sum(axis=1))
    left_total = per_annotator(annotators, weight * left.sum(axis=1))
    gold_judgments = per_annotator(annotators, weight * groups["gold"])
    gold_answered = per_annotator(annotators, weight * groups["gold_answered"])
    gold_correct = per_annotator(annotators, weight * groups["gold_correct"])
    flags = per_annotator(annotators, weight * groups["flagged"])

    means, rates, p_values, table = [], [], [], []
    for i, (annotator_id, username, is_active, excluded, median_ms) in enumerate(details):
        per_dimension = {dim.upper(): _share(agreements[d][i], scored[d][i]) for d, dim in enumerate(DIMENSIONS)}
        known = [value for value in per_dimension.values() if value is not None]
        means.append(float(np.mean(known)) if known else None)
        rates.append(_share(left_total[i], decided_total[i]))
        p_values.append(
            float(binomtest(int(left_total[i]), int(decided_total[i]), 0.5).pvalue) if decided_total[i] else None
        )
        table.append(
            {
                "id": annotator_id,
                "username": username,
                "is_active": is_active,
                "excluded": excluded,
                "judgments": int(judgments[i]),
                "loo_agreement": {
                    **{dim: _round(value) for dim, value in per_dimension.items()},
                    "mean": _round(means[i]),
                },
                "gold_judgments": int(gold_judgments[i]),
                "gold_accuracy": _round(_share(gold_correct[i], gold_answered[i])),
                "median_seconds": _round(median_ms / 1000 if median_ms is not None else None),
                "left_pick_rate": _round(rates[i]),
                "left_pick_p_value": _round_p(p_values[i]),
                "flags": int(flags[i]),
                "outlier": [],
            }
        )
    reference = [entry["is_active"] and not entry["excluded"] for entry in table]
    for i in low_agreement_annotators(means, loo_judgments, reference):
        table[i]["outlier"].append("low agreement")
    for i in _position_bias(rates, p_values, judgments):
        table[i]["outlier"].append("position bias")
    return table


def low_agreement_annotators(means: list[float | None], loo_judgments: np.ndarray, reference: list[bool]) -> list[int]:
    """Indices of annotators with low agreement, by a robust rule that also works on small data.

    An annotator is marked when their mean leave-one-out agreement (over the dimensions), from at least
    ``LOW_AGREEMENT_MIN_JUDGMENTS`` (5) judgments on pairs where two or more others form a majority, is

    - below ``LOW_AGREEMENT_CEILING`` (0.5: the others' majority is missed more often than met), *and*
    - below the median of the *other* reference annotators (counted: active, not excluded; with 5 such
      judgments too; at least two of them, otherwise nobody is "far below the others") by more than a
      margin: 3 × their MAD (median absolute deviation, unscaled), kept between 0.10 and 0.30.

    Median and MAD ignore a few bad annotators, so spammers cannot hide by lowering the bar together.
    The floor keeps a tight group (MAD ≈ 0) from marking whoever is a little lower. The cap is what makes
    the rule work on small data: with a handful of judgments each, shares are coarse (1/7, 2/7, …) and
    careful annotators spread over 0.6–1.0, so 3 MADs can span most of the scale and hide a spammer at
    0.14–0.29; below 0.5 *and* 0.3 under the typical annotator is low however spread the others are.
    """
    eligible = [
        i for i, mean in enumerate(means) if mean is not None and loo_judgments[i] >= LOW_AGREEMENT_MIN_JUDGMENTS
    ]
    flagged = []
    for i in eligible:
        others = np.array([means[j] for j in eligible if j != i and reference[j]])
        if len(others) < 2:
            continue
        median = float(np.median(others))
        mad = float(np.median(np.abs(others - median)))
        margin = min(max(LOW_AGREEMENT_MAD * mad, LOW_AGREEMENT_MARGIN_MIN), LOW_AGREEMENT_MARGIN_MAX)
        if means[i] < LOW_AGREEMENT_CEILING and means[i] < median - margin:
            flagged.append(i)
    return flagged


def _position_bias(rates: list[float | None], p_values: list[float | None], judgments: np.ndarray) -> list[int]:
    """Indices of annotators with a position bias: at least 20 judgments, a two-sided binomial test of left
    picks among their non-tie answers gives p < 0.001 *and* the left-pick rate is more than 0.15 from 0.5
    (significant and large: a busy careful annotator at 0.52 over thousands of answers is not flagged)."""
    return [
        i
        for i, (rate, p_value) in enumerate(zip(rates, p_values, strict=True))
        if judgments[i] >= OUTLIER_MIN_JUDGMENTS
        and p_value is not None
        and p_value < POSITION_BIAS_P
        and abs(rate - 0.5) > POSITION_BIAS_EFFECT
    ]


# --- generators ----------------------------------------------------------------------------------------


def davidson_fit(
    wins: np.ndarray,
    ties: np.ndarray,
    losses: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    items: int,
    *,
    initial: np.ndarray | None = None,
    prior_precision: float = PRIOR_PRECISION,
    tolerance: float = 1e-7,
    max_iterations: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Davidson's Bradley–Terry model with ties, fitted by Newton's method for ``R`` data sets at once.

    For items ``i, j`` with log-strengths ``s_i, s_j`` and tie parameter ``ν = e^η``:

        P(i ≻ j) = e^{s_i} / D,   P(j ≻ i) = e^{s_j} / D,   P(tie) = ν e^{(s_i + s_j) / 2} / D,
        D = e^{s_i} + e^{s_j} + ν e^{(s_i + s_j) / 2}.

    ``wins``, ``ties``, ``losses``: ``(R, M)`` counts for matchup ``m`` between ``first[m]`` and
    ``second[m]`` (``wins``: ``first`` won); each unordered matchup appears once. The log-likelihood is
    concave in ``(s, η)``; a Gaussian prior ``N(0, 1 / prior_precision)`` on every ``s_i`` and on ``η``
    keeps the maximum finite when an item wins or loses every comparison, or the comparison graph is
    disconnected, and centres the log-strengths (``Σ s_i = 0`` at the optimum, because the likelihood
    only sees differences). Steps are halved until the penalised log-likelihood does not decrease.
    ``initial`` (``(items + 1,)``: log-strengths, then ``η``) starts every data set there (bootstrap
    resamples from the full data's fit: a few steps each); zeros by default.

    Returns ``(log_strengths (R, items), eta (R,))``.
    """
    wins, ties, losses = (np.atleast_2d(np.asarray(counts, dtype=np.float64)) for counts in (wins, ties, losses))
    replicates, matchups = wins.shape
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    incidence = np.zeros((matchups, items))
    incidence[np.arange(matchups), first] = 1.0
    incidence[np.arange(matchups), second] = -1.0
    played = wins + ties + losses

    def objective(params: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        strengths, eta = params[:, :items], params[:, items, None]
        half = (strengths @ incidence.T) / 2  # (R, M): (s_first − s_second) / 2
        shift = np.maximum(np.abs(half), eta)  # D = e^half + e^-half + e^eta, computed as e^shift · (…) ≤ 3 e^shift
        win, loss, tie = np.exp(half - shift), np.exp(-half - shift), np.exp(eta - shift)
        total = win + loss + tie
        log_denominator = shift + np.log(total)
        value = ((wins - losses) * half + ties * eta - played * log_denominator).sum(axis=1)
        value -= prior_precision / 2 * (np.square(params).sum(axis=1))
        p_win, p_loss, p_tie = win / total, loss / total, tie / total
        return value, (p_win, p_loss, p_tie)

    params = np.zeros((replicates, items + 1)) if initial is None else np.tile(initial, (replicates, 1))
    value, probabilities = objective(params)
    rows = np.arange(replicates)[:, None]
    for _ in range(max_iterations):
        p_win, p_loss, p_tie = probabilities
        gradient_delta = ((wins - played * p_win) - (losses - played * p_loss)) / 2  # ∂/∂(s_first − s_second)
        gradient = (
            np.concatenate([gradient_delta @ incidence, (ties - played * p_tie).sum(axis=1, keepdims=True)], axis=1)
            - prior_precision * params
        )
        # Negative Hessian: the covariance of the log-sum-exp features (±1/2 for s, 1 for η), times the counts.
        curvature_dd = played * ((p_win + p_loss) - (p_win - p_loss) ** 2) / 4
        curvature_de = -played * (p_win - p_loss) / 2 * p_tie
        curvature_ee = played * p_tie * (1 - p_tie)
        hessian = np.zeros((replicates, items + 1, items + 1))
        hessian[rows, first, second] = -curvature_dd
        hessian[rows, second, first] = -curvature_dd
        diagonal = curvature_dd @ np.abs(incidence)
        hessian[:, np.arange(items), np.arange(items)] = diagonal
        cross = curvature_de @ incidence
        hessian[:, :items, items] = cross
        hessian[:, items, :items] = cross
        hessian[:, items, items] = curvature_ee.sum(axis=1)
        hessian += prior_precision * np.eye(items + 1)
        step = np.linalg.solve(hessian, gradient[:, :, None])[:, :, 0]
        scale = np.ones(replicates)
        for _ in range(30):
            trial_value, trial_probabilities = objective(params + scale[:, None] * step)
            worse = trial_value < value - 1e-12 * np.abs(value)
            if not worse.any():
                break
            scale = np.where(worse, scale / 2, scale)
        params = params + scale[:, None] * step
        value, probabilities = trial_value, trial_probabilities
        if np.abs(scale[:, None] * step).max() < tolerance:
            break
    return params[:, :items], params[:, items]


def _generator_ranking(
    matchups: list[tuple[str, str, int, int, int]], *, bootstrap: int, rng: np.random.Generator
) -> list[dict]:
    names = sorted({name for row in matchups for name in row[:2]})
    if not names:
        return []
    index = {name: position for position, name in enumerate(names)}
    outcomes: dict[tuple[int, int], np.ndarray] = {}
    for name_a, name_b, a_wins, a_ties, b_wins in matchups:
        first, second = sorted((index[name_a], index[name_b]))
        counts = (a_wins, a_ties, b_wins) if index[name_a] == first else (b_wins, a_ties, a_wins)
        outcomes[first, second] = outcomes.get((first, second), np.zeros(3, dtype=np.int64)) + counts
    keys = sorted(key for key, counts in outcomes.items() if counts.sum())
    if not keys:
        return []
    first, second = (np.array(side) for side in zip(*keys, strict=True))
    counts = np.stack([outcomes[key] for key in keys])  # (M, 3): first wins, ties, second wins
    comparisons = np.zeros(len(names), dtype=np.int64)
    np.add.at(comparisons, first, counts.sum(axis=1))
    np.add.at(comparisons, second, counts.sum(axis=1))
    strengths, eta = davidson_fit(counts[None, :, 0], counts[None, :, 1], counts[None, :, 2], first, second, len(names))
    low = high = [None] * len(names)
    if bootstrap:
        # Resampling pairs with replacement redraws the (matchup, outcome) counts from one multinomial.
        flat = counts.reshape(-1)
        resampled = rng.multinomial(int(flat.sum()), flat / flat.sum(), size=bootstrap).reshape(bootstrap, -1, 3)
        replicate_strengths, _ = davidson_fit(
            resampled[:, :, 0],
            resampled[:, :, 1],
            resampled[:, :, 2],
            first,
            second,
            len(names),
            initial=np.append(strengths[0], eta[0]),
        )
        low, high = ([_round(value) for value in np.percentile(replicate_strengths, q, axis=0)] for q in (2.5, 97.5))
    ranking = [
        {
            "generator": name,
            "score": _round(strengths[0, position]),
            "ci_low": low[position],
            "ci_high": high[position],
            "comparisons": int(comparisons[position]),
        }
        for position, name in enumerate(names)
        if comparisons[position]
    ]
    return sorted(ranking, key=lambda entry: -entry["score"])


# --- small helpers -------------------------------------------------------------------------------------


def _percentile_interval(samples: np.ndarray) -> tuple[float | None, float | None]:
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        return None, None
    low, high = np.percentile(samples, [2.5, 97.5])
    return _round(low), _round(high)


def _share(part, whole) -> float | None:
    return part / whole if whole else None


def _round(value) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), 4) + 0.0  # + 0.0 turns a rounded -0.0 into 0.0


def _round_p(value: float | None) -> float | None:
    """p-values keep 4 significant digits: rounding to 4 decimals would turn 3e-9 into 0."""
    return None if value is None else float(f"{value:.4g}")
