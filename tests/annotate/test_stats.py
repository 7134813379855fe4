"""Agreement statistics (annotate/stats.py) against independent computations, on real PostgreSQL."""

import itertools
import json
from dataclasses import dataclass
from datetime import timedelta

import krippendorff
import numpy as np
import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from scipy.optimize import minimize
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score

from alignment.toyworld.annotators import ANNOTATOR_PROFILES, SimulatedAnnotator
from annotate.consensus import EXCLUDED_GROUP
from annotate.models import Assignment, Batch, Judgment, Pair, Video
from annotate.stats import (
    agreement_report,
    alpha_from_coincidences,
    coincidence_contributions,
    davidson_fit,
    low_agreement_annotators,
)

LABELS = ("B", "TIE", "A")  # codes 0, 1, 2: the ordinal order B < TIE < A
DIMS = ("vq", "mq", "ta")


@dataclass
class Row:
    pair: Pair
    user: object
    vq: str
    mq: str
    ta: str
    left_is_a: bool = True
    duration_ms: int | None = 4000
    flag: str = ""


def bulk_judge(rows: list[Row]) -> list[Judgment]:
    """Submitted judgments straight in the database, a few queries for any number."""
    now = timezone.now()
    assignments = Assignment.objects.bulk_create(
        [
            Assignment(
                pair=row.pair,
                annotator=row.user,
                left_is_a=row.left_is_a,
                leased_at=now,
                expires_at=now + timedelta(minutes=10),
                state=Assignment.State.SUBMITTED,
            )
            for row in rows
        ]
    )
    return Judgment.objects.bulk_create(
        [
            Judgment(
                pair=row.pair,
                annotator=row.user,
                assignment=assignment,
                vq=row.vq,
                mq=row.mq,
                ta=row.ta,
                left_is_a=row.left_is_a,
                duration_ms=row.duration_ms,
                flag=row.flag,
            )
            for row, assignment in zip(rows, assignments, strict=True)
        ]
    )


def name_generators(pairs, names_a, names_b) -> None:
    videos = []
    for pair, name_a, name_b in zip(pairs, names_a, names_b, strict=True):
        pair.video_a.generator, pair.video_b.generator = name_a, name_b
        videos += [pair.video_a, pair.video_b]
    Video.objects.bulk_update(videos, ["generator"], batch_size=2000)


def in_batch(pairs, name: str) -> Batch:
    batch = Batch.objects.create(name=name)
    Pair.objects.filter(pk__in=[pair.pk for pair in pairs]).update(batch=batch)
    return batch


# --- independent reference implementations -------------------------------------------------------------


def brute_force_alpha(units: list[list[int]], level: str) -> float:
    """Krippendorff's α from its definition: coincidences of every ordered pair of values within a unit."""
    o = [[0.0] * 3 for _ in range(3)]
    for values in units:
        if len(values) < 2:
            continue
        for i, j in itertools.permutations(range(len(values)), 2):
            o[values[i]][values[j]] += 1 / (len(values) - 1)
    n_c = [sum(row) for row in o]
    n = sum(n_c)

    def delta(c, k):
        if level == "nominal":
            return float(c != k)
        lo, hi = min(c, k), max(c, k)
        return (sum(n_c[g] for g in range(lo, hi + 1)) - (n_c[c] + n_c[k]) / 2) ** 2

    observed = sum(o[c][k] * delta(c, k) for c in range(3) for k in range(3))
    expected = sum(n_c[c] * n_c[k] * delta(c, k) for c in range(3) for k in range(3) if c != k) / (n - 1)
    return 1 - observed / expected


def hand_fleiss(units: list[list[int]]) -> float:
    """Fleiss' κ by its textbook formula on units that all have the same number of ratings."""
    raters = len(units[0])
    counts = np.array([[values.count(c) for c in range(3)] for values in units], dtype=float)
    p_j = counts.sum(axis=0) / counts.sum()
    p_i = ((counts**2).sum(axis=1) - raters) / (raters * (raters - 1))
    return (p_i.mean() - (p_j**2).sum()) / (1 - (p_j**2).sum())


# --- tests ---------------------------------------------------------------------------------------------


def test_reliability_matches_brute_force_and_the_libraries(make_user, make_pairs):
    rng = np.random.default_rng(7)
    users = [make_user(f"rater{i}") for i in range(6)]
    disabled, excluded = make_user("disabled"), make_user("excluded")
    disabled.is_active = False
    disabled.save(update_fields=["is_active"])
    Group.objects.get_or_create(name=EXCLUDED_GROUP)[0].user_set.add(excluded)
    pairs = make_pairs(90)
    gold = make_pairs(3, is_gold=True, gold_labels={"vq": "A", "mq": "A", "ta": "A"})
    rows, counted = [], []  # counted: (pair index, user index, codes)
    for index, pair in enumerate(pairs):
        truth = rng.integers(0, 3, size=3)
        size = [1, 2, 3, 3, 3, 4][index % 6]  # varying judges per pair, 3 the mode
        for user_index in rng.choice(len(users), size=size, replace=False):
            codes = np.where(rng.random(3) < 0.7, truth, rng.integers(0, 3, size=3))
            rows.append(Row(pair, users[user_index], *(LABELS[c] for c in codes)))
            counted.append((index, int(user_index), codes))
        # not counted: a disabled and an excluded annotator always disagree with the truth
        for outsider in (disabled, excluded):
            rows.append(Row(pair, outsider, *(LABELS[(c + 1) % 3] for c in truth)))
    for pair in gold:  # gold pairs stay out of the agreement statistics
        rows += [Row(pair, user, "B", "B", "B") for user in users[:3]]
    bulk_judge(rows)

    report = agreement_report(bootstrap=200)
    assert json.loads(json.dumps(report, allow_nan=False)) == report

    for d, dim in enumerate(DIMS):
        stats = report["dimensions"][dim.upper()]
        units = [[codes[d] for (i, _, codes) in counted if i == index] for index in range(len(pairs))]
        reliability_data = np.full((len(users), len(pairs)), np.nan)
        for index, user_index, codes in counted:
            reliability_data[user_index, index] = codes[d]
        for level in ("nominal", "ordinal"):
            expected = brute_force_alpha(units, level)
            library = krippendorff.alpha(
                reliability_data=reliability_data, value_domain=[0, 1, 2], level_of_measurement=level
            )
            assert expected == pytest.approx(library, abs=1e-9)
            interval = stats[f"alpha_{level}"]
            assert interval["value"] == pytest.approx(expected, abs=1e-4)
            assert interval["ci_low"] <= interval["value"] <= interval["ci_high"]
        modal = [values for values in units if len(values) == 3]
        assert stats["fleiss_kappa"] == pytest.approx(hand_fleiss(modal), abs=1e-4)
        labels = [codes[d] for (_, _, codes) in counted]
        assert stats["label_distribution"] == {"A": labels.count(2), "B": labels.count(0), "TIE": labels.count(1)}
        assert stats["tie_rate"] == pytest.approx(labels.count(1) / len(labels), abs=1e-4)

        cohen = stats["cohen_kappa"]
        assert cohen["annotators"] == [user.pk for user in users]  # not the disabled or excluded one
        for a, b in itertools.product(range(len(users)), repeat=2):
            value = cohen["matrix"][a][b]
            if a == b:
                assert value == 1.0
                continue
            shared = sorted({i for (i, u, _) in counted if u == a} & {i for (i, u, _) in counted if u == b})
            if len(shared) < 2:
                assert value is None
                continue
            first = [reliability_data[a, i] for i in shared]
            second = [reliability_data[b, i] for i in shared]
            assert value == pytest.approx(cohen_kappa_score(first, second), abs=1e-4), (a, b, dim)


def test_bootstrap_point_estimate_is_the_library_alpha():
    rng = np.random.default_rng(3)
    patterns = np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3], [2, 1, 0], [0, 2, 1], [1, 1, 1], [1, 0, 1], [0, 1, 0]])
    multiplicity = rng.integers(1, 40, size=len(patterns))
    contributions = coincidence_contributions(patterns).reshape(len(patterns), -1)
    for level in ("nominal", "ordinal"):
        ours = alpha_from_coincidences((multiplicity @ contributions).reshape(1, 3, 3), level)[0]
        units = np.repeat(patterns, multiplicity, axis=0)
        assert ours == pytest.approx(krippendorff.alpha(value_counts=units, level_of_measurement=level), abs=1e-12)


def test_per_annotator_figures_on_a_hand_made_example(make_user, make_pairs):
    a, b, c, d, disabled, excluded = (make_user(name) for name in ("a", "b", "c", "d", "e", "x"))
    disabled.is_active = False
    disabled.save(update_fields=["is_active"])
    Group.objects.get_or_create(name=EXCLUDED_GROUP)[0].user_set.add(excluded)
    p1, p2 = make_pairs(2)
    (gold,) = make_pairs(1, is_gold=True, gold_labels={"vq": "A", "mq": "B", "ta": "TIE"})
    judgments = bulk_judge(
        [
            Row(p1, a, "A", "A", "A", left_is_a=True, duration_ms=4000),
            Row(p1, b, "A", "B", "TIE", left_is_a=False, duration_ms=1000),
            Row(p1, c, "B", "B", "TIE"),
            Row(p1, d, "A", "TIE", "A"),
            Row(p1, disabled, "B", "B", "B"),
            Row(p2, a, "B", "B", "B", left_is_a=False, duration_ms=6000),
            Row(p2, b, "B", "B", "A", left_is_a=True, duration_ms=2000, flag="unclear"),
            Row(p2, excluded, "B", "B", "B"),
            Row(gold, a, "A", "B", "A", left_is_a=True, duration_ms=11000),
            Row(gold, b, "A", "B", "TIE", duration_ms=None),
            Row(gold, c, "A", "B", "TIE"),
            Row(gold, excluded, "B", "B", "TIE"),
        ]
    )
    two_days_ago = timezone.now() - timedelta(days=2)
    Judgment.objects.filter(pk__in=[judgments[0].pk, judgments[1].pk]).update(created_at=two_days_ago)

    report = agreement_report(bootstrap=0)
    assert set(report) == {"filters", "seconds", "progress", "dimensions", "annotators", "generators"}
    assert set(report["dimensions"]) == {"VQ", "MQ", "TA"}
    assert set(report["dimensions"]["VQ"]) == {
        "alpha_nominal",
        "alpha_ordinal",
        "fleiss_kappa",
        "tie_rate",
        "label_distribution",
        "cohen_kappa",
    }
    assert report["dimensions"]["VQ"]["alpha_nominal"]["ci_low"] is None  # no resamples asked for
    assert set(report["annotators"][0]) == {
        "id",
        "username",
        "is_active",
        "excluded",
        "judgments",
        "loo_agreement",
        "gold_judgments",
        "gold_accuracy",
        "median_seconds",
        "left_pick_rate",
        "left_pick_p_value",
        "flags",
        "outlier",
    }
    rows = {row["username"]: row for row in report["annotators"]}
    assert [row["username"] for row in report["annotators"]] == ["a", "b", "c", "d", "e", "x"]
    # Leave-one-out majorities worked out by hand (P1's VQ: A A B A; MQ: A B B TIE; TA: A TIE TIE A).
    assert rows["a"]["loo_agreement"] == {"VQ": 1.0, "MQ": 0.0, "TA": 0.0, "mean": 0.3333}
    assert rows["b"]["loo_agreement"] == {"VQ": 1.0, "MQ": None, "TA": 0.0, "mean": 0.5}
    assert rows["c"]["loo_agreement"] == {"VQ": 0.0, "MQ": None, "TA": 0.0, "mean": 0.0}
    assert rows["d"]["loo_agreement"] == {"VQ": 1.0, "MQ": 0.0, "TA": 0.0, "mean": 0.3333}
    assert rows["e"]["loo_agreement"] == {"VQ": 0.0, "MQ": None, "TA": None, "mean": 0.0}
    assert rows["x"]["loo_agreement"] == {"VQ": 1.0, "MQ": 1.0, "TA": None, "mean": 1.0}
    assert (rows["e"]["is_active"], rows["e"]["excluded"], rows["x"]["is_active"], rows["x"]["excluded"]) == (
        False,
        False,
        True,
        True,
    )
    assert [rows[name]["judgments"] for name in "abcdex"] == [3, 3, 2, 1, 1, 2]
    assert [rows[name]["gold_judgments"] for name in "abcdex"] == [1, 1, 1, 0, 0, 1]
    assert [rows[name]["gold_accuracy"] for name in "abcdex"] == [0.6667, 1.0, 1.0, None, None, 0.6667]
    assert rows["a"]["median_seconds"] == 6.0 and rows["b"]["median_seconds"] == 1.5  # a null duration is skipped
    # a: P1 A,A,A with A on the left; P2 B,B,B with B on the left; gold A,B,A with A on the left → 8 of 9 left
    assert rows["a"]["left_pick_rate"] == pytest.approx(8 / 9, abs=1e-4)
    assert rows["a"]["left_pick_p_value"] == pytest.approx(binomtest(8, 9, 0.5).pvalue, rel=1e-3)
    # b: P1 A,B (A right) → 1 left; P2 B,B,A (A left) → 1 left; gold A,B (A left) → 1 left: 3 of 7
    assert rows["b"]["left_pick_rate"] == pytest.approx(3 / 7, abs=1e-4)
    assert [rows[name]["flags"] for name in "abcdex"] == [0, 1, 0, 0, 0, 0]
    assert all(row["outlier"] == [] for row in rows.values())  # too few judgments to call anyone an outlier

    vq = report["dimensions"]["VQ"]["cohen_kappa"]
    assert vq["annotators"] == [a.pk, b.pk, c.pk, d.pk]
    # a and b share P1 and P2 (the only two annotators with two pairs in common)
    assert vq["matrix"][0][1] == 1.0 and vq["matrix"][0][2] is None
    assert report["dimensions"]["MQ"]["cohen_kappa"]["matrix"][1][0] == 0.0
    assert report["dimensions"]["TA"]["cohen_kappa"]["matrix"][0][1] == pytest.approx(-1 / 3, abs=1e-4)

    progress = report["progress"]
    assert (progress["pairs_total"], progress["pairs_open"], progress["judgments_total"]) == (3, 3, 12)
    today = timezone.localdate()
    assert progress["judgments_per_day"] == [
        {"day": (today - timedelta(days=2)).isoformat(), "judgments": 2},
        {"day": today.isoformat(), "judgments": 10},
    ]

    recent = agreement_report(judged_from=timezone.now() - timedelta(days=1), bootstrap=0)
    assert recent["filters"]["judged_from"] is not None and recent["progress"]["judgments_total"] == 10
    assert {row["username"]: row["judgments"] for row in recent["annotators"]}["a"] == 2
    batch = in_batch([p2], "second")
    narrowed = agreement_report(batch_ids=(batch.pk,), bootstrap=0)
    assert narrowed["filters"]["batch_ids"] == [batch.pk]
    assert (narrowed["progress"]["pairs_total"], narrowed["progress"]["judgments_total"]) == (1, 3)
    assert narrowed["dimensions"]["VQ"]["label_distribution"] == {"A": 0, "B": 2, "TIE": 0}


def test_davidson_fit_maximises_its_likelihood():
    """The vectorised Newton fit lands where a general optimiser does on the same penalised likelihood."""
    first, second = np.array([0, 0, 0, 1, 1, 2]), np.array([1, 2, 3, 2, 3, 3])
    wins = np.array([30, 12, 40, 9, 25, 0])
    ties = np.array([10, 5, 6, 11, 4, 3])
    losses = np.array([8, 10, 2, 7, 6, 14])

    def negative(params):
        s, eta = params[:4], params[4]
        si, sj = s[first], s[second]
        log_d = np.logaddexp(np.logaddexp(si, sj), eta + (si + sj) / 2)
        ll = wins * (si - log_d) + losses * (sj - log_d) + ties * (eta + (si + sj) / 2 - log_d)
        return -(ll.sum() - 0.1 / 2 * (params**2).sum())

    reference = minimize(negative, np.zeros(5), method="BFGS", options={"gtol": 1e-10}).x
    strengths, eta = davidson_fit(wins, ties, losses, first, second, 4)
    assert strengths[0] == pytest.approx(reference[:4], abs=1e-5)
    assert eta[0] == pytest.approx(reference[4], abs=1e-5)
    assert strengths.sum() == pytest.approx(0.0, abs=1e-9)


def test_generator_ranking_recovers_known_strengths(make_user, make_pairs):
    rng = np.random.default_rng(11)
    truth = {"gen-strong": 1.0, "gen-good": 0.35, "gen-fair": -0.3, "gen-weak": -1.05}
    names, nu = list(truth), 0.7
    pairs = make_pairs(700)
    chosen = [rng.choice(4, size=2, replace=False) for _ in pairs]
    name_generators(pairs, [names[i] for i, _ in chosen], [names[j] for _, j in chosen])
    odd = make_pairs(2)  # same generator on both sides, and an unnamed one: skipped
    name_generators(odd, ["gen-strong", ""], ["gen-strong", "gen-weak"])
    user = make_user("judge")
    rows = []
    for pair, (i, j) in zip(pairs, chosen, strict=True):
        labels = []
        for _ in DIMS:
            si, sj = truth[names[i]], truth[names[j]]
            weights = np.array([np.exp(si), np.exp(sj), nu * np.exp((si + sj) / 2)])
            labels.append(("A", "B", "TIE")[rng.choice(3, p=weights / weights.sum())])
        rows.append(Row(pair, user, *labels))
    rows += [Row(pair, user, "A", "A", "A") for pair in odd]
    bulk_judge(rows)

    report = agreement_report(bootstrap=300, seed=4)
    again = agreement_report(bootstrap=300, seed=4)
    assert {**report, "seconds": 0} == {**again, "seconds": 0}  # the seed fixes every resample
    for dim in ("VQ", "MQ", "TA"):
        ranking = report["generators"][dim]
        assert [entry["generator"] for entry in ranking] == names
        assert sum(entry["comparisons"] for entry in ranking) == 2 * len(pairs)
        assert sum(entry["score"] for entry in ranking) == pytest.approx(0.0, abs=1e-3)
        for entry in ranking:
            assert entry["ci_low"] <= entry["score"] <= entry["ci_high"]
            assert entry["score"] == pytest.approx(truth[entry["generator"]], abs=0.3)


def simulate(pairs, pool, rng, *, strengths=(0.15, 0.05, -0.05, -0.15)) -> None:
    """Three distinct annotators of ``pool`` judge each pair; labels from toyworld's annotator model on a
    score difference made of the generators' strengths plus pair-level noise; screen side at random."""
    chosen = [rng.choice(len(strengths), size=2, replace=False) for _ in pairs]
    name_generators(pairs, [f"gen-{i}" for i, _ in chosen], [f"gen-{j}" for _, j in chosen])
    rows = []
    for pair, (i, j) in zip(pairs, chosen, strict=True):
        delta = strengths[i] - strengths[j] + rng.normal(0, 0.15, size=3)  # A − B per dimension
        for index in rng.choice(len(pool), size=3, replace=False):
            user, annotator = pool[index]
            left_is_a = bool(rng.integers(2))
            screen = annotator.judge_codes(delta if left_is_a else -delta, rng)  # +1 left, −1 right, 0 tie
            labels = [("A" if (code == 1) == left_is_a else "B") if code else "TIE" for code in screen]
            rows.append(Row(pair, user, *labels, left_is_a=left_is_a, duration_ms=int(rng.integers(3000, 9000))))
    bulk_judge(rows)


def make_pool(make_user, kinds: dict[str, int]):
    return [
        (make_user(f"{kind}-{i}"), SimulatedAnnotator(f"{kind}-{i}", ANNOTATOR_PROFILES[kind]))
        for kind, count in kinds.items()
        for i in range(count)
    ]


def test_simulated_spammer_and_left_biased_annotators_are_flagged(make_user, make_pairs):
    rng = np.random.default_rng(2026)
    pool = make_pool(make_user, {"careful": 4, "noisy": 2, "spammer": 1, "left_biased": 1})
    simulate(make_pairs(300), pool, rng)
    report = agreement_report(bootstrap=100)
    flagged = {row["username"]: row["outlier"] for row in report["annotators"]}
    assert flagged == {
        user.username: {"spammer": ["low agreement"], "left_biased": ["position bias"]}.get(annotator.kind, [])
        for user, annotator in pool
    }
    by_kind = {annotator.kind: row for (_, annotator), row in zip(pool, report["annotators"], strict=True)}
    assert by_kind["left_biased"]["left_pick_rate"] > 0.65 and by_kind["careful"]["left_pick_rate"] < 0.65
    assert (
        by_kind["spammer"]["loo_agreement"]["mean"]
        < by_kind["noisy"]["loo_agreement"]["mean"]
        < by_kind["careful"]["loo_agreement"]["mean"]
    )


SPAMMER = (0.14, 0.29, 0.29)  # 1/7, 2/7, 2/7 of the others' majorities met, per dimension (VQ, MQ, TA)


def low_agreement_of(per_dimension: list[tuple[float, float, float]], judgments: list[int]) -> list[int]:
    means = [float(np.mean(values)) for values in per_dimension]
    return low_agreement_annotators(means, np.array(judgments), [True] * len(means))


@pytest.mark.parametrize(
    "careful",
    [
        # careful annotators at 0.6–1.0 per dimension: spread evenly, and split into two camps (the widest MAD)
        [(0.6, 0.71, 0.86), (1.0, 0.86, 1.0), (0.71, 0.6, 0.71), (0.86, 1.0, 0.86)],
        [(0.6, 0.6, 0.6), (0.6, 0.6, 0.6), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)],
    ],
)
def test_low_agreement_marks_a_spammer_among_careful_annotators_on_small_data(careful):
    """The case from the pilot: 7 scored judgments each, the spammer at 0.14 / 0.29 / 0.29. Too few judgments for
    the old minimum of 20, and among two camps at 0.6 and 1.0 the MAD (0.2) put 3 MADs below the median at 0.2."""
    assert low_agreement_of([*careful, SPAMMER], [7] * 5) == [4]
    assert low_agreement_of([SPAMMER, *careful], [7] * 5) == [0]  # wherever it is in the table
    assert low_agreement_of([*careful, SPAMMER], [7, 7, 7, 7, 4]) == []  # 4 judgments: too few to say
    assert low_agreement_of([careful[0], careful[2], SPAMMER], [7] * 3) == [2]  # two others are enough
    assert low_agreement_of([careful[0], SPAMMER], [7] * 2) == []  # one other is not


@pytest.mark.parametrize(
    "group",
    [
        [(0.8, 0.75, 0.71), (0.86, 0.8, 0.75), (0.71, 0.86, 0.8), (0.75, 0.71, 0.86), (0.8, 0.8, 0.8)],
        # hard data: everyone near 0.45, below the 0.5 ceiling, yet nobody far below the others
        [(0.43, 0.43, 0.57), (0.43, 0.57, 0.43), (0.29, 0.43, 0.57), (0.57, 0.43, 0.43), (0.43, 0.43, 0.43)],
        # a tight group (MAD 0): the floor keeps 0.05 lower from counting as far below
        [(0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (0.45, 0.45, 0.45)],
    ],
)
def test_low_agreement_marks_nobody_in_a_group_of_similar_annotators(group):
    assert low_agreement_of(group, [7] * len(group)) == []


def test_the_spammer_of_a_small_study_is_marked_and_nobody_else(make_user, make_pairs):
    from tests.annotate.test_dashboard import small_study

    spammer = small_study(make_user, make_pairs)
    report = agreement_report(bootstrap=50)
    marked = {row["username"]: row["outlier"] for row in report["annotators"]}
    assert marked == {**{f"careful-{i}": [] for i in range(4)}, spammer.username: ["low agreement"]}
    assert max(row["judgments"] for row in report["annotators"]) < 20  # small data: the old minimum saw nobody


def test_bootstrap_intervals_narrow_with_more_data(make_user, make_pairs):
    rng = np.random.default_rng(5)
    pool = make_pool(make_user, {"careful": 3, "noisy": 2})
    small, large = make_pairs(60), make_pairs(600)
    simulate(small, pool, rng, strengths=(1.0, 0.3, -0.3, -1.0))
    simulate(large, pool, rng, strengths=(1.0, 0.3, -0.3, -1.0))
    reports = [
        agreement_report(batch_ids=(in_batch(pairs, name).pk,), bootstrap=400)
        for pairs, name in ((small, "small"), (large, "large"))
    ]

    def width(interval):
        assert interval["ci_low"] <= interval["value"] <= interval["ci_high"]
        return interval["ci_high"] - interval["ci_low"]

    for dim in ("VQ", "MQ", "TA"):
        for level in ("alpha_nominal", "alpha_ordinal"):
            few, many = (width(report["dimensions"][dim][level]) for report in reports)
            assert many < few / 2  # 10× the pairs: about 1/√10 the width
        few, many = (
            {entry["generator"]: entry["ci_high"] - entry["ci_low"] for entry in report["generators"][dim]}
            for report in reports
        )
        assert all(many[name] < few[name] for name in many)


def test_query_count_does_not_grow_with_the_data(make_user, make_pairs):
    rng = np.random.default_rng(1)
    pool = make_pool(make_user, {"careful": 4})
    simulate(make_pairs(5), pool, rng)
    with CaptureQueriesContext(connection) as few:
        agreement_report(bootstrap=10)
    simulate(make_pairs(200), pool, rng)
    with CaptureQueriesContext(connection) as many:
        agreement_report(bootstrap=10)
    assert (
        len(few) == len(many) <= 16
    )  # savepoint, the settings, the per-pair table + ANALYZE, 6 reads (one between 2 SETs), DROP, release


def test_an_empty_selection_gives_a_report_of_nothing(db):
    report = agreement_report()
    with connection.cursor() as cursor:  # the per-pair table went with the recompute
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'stats_pairs%%'")
        assert cursor.fetchone()[0] == 0
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["progress"]["pairs_total"] == report["progress"]["judgments_total"] == 0
    vq = report["dimensions"]["VQ"]
    assert vq["alpha_nominal"] == {"value": None, "ci_low": None, "ci_high": None}
    assert vq["fleiss_kappa"] is None and vq["tie_rate"] is None
    assert vq["cohen_kappa"] == {"annotators": [], "matrix": []}
    assert report["annotators"] == [] and report["generators"] == {"VQ": [], "MQ": [], "TA": []}


def test_matchups_from_the_pairs_counts_are_the_consensus_matchups(make_user, make_pairs):
    """The generator matchups come from ``stats_pairs``' counted labels; they must be the snapshot consensus's
    (``consensus_sql``) whatever the data: flagged pairs, excluded and inactive annotators, gold pairs, ties, no
    majority, judgments outside the dates, a batch filter."""
    from django.contrib.auth.models import Group
    from django.db import connection, transaction

    from annotate.consensus import EXCLUDED_GROUP, ConsensusFilters
    from annotate.stats import _matchups, _matchups_from_consensus, _pairs_create, _Scope

    rng = np.random.default_rng(30)
    users = [make_user(f"m-{i}") for i in range(6)]
    users[4].groups.add(Group.objects.get_or_create(name=EXCLUDED_GROUP)[0])
    users[5].is_active = False
    users[5].save()
    pairs = make_pairs(240)
    gold = make_pairs(10, is_gold=True, gold_labels={"vq": "A", "mq": "B", "ta": "TIE"})
    names = ["g0", "g1", "g2", ""]
    picks = [rng.choice(4, size=2) for _ in pairs + gold]
    name_generators(pairs + gold, [names[i] for i, _ in picks], [names[j] for _, j in picks])
    half = in_batch(pairs[:120], "half")
    rows = []
    for pair in pairs + gold:
        for index in rng.choice(6, size=int(rng.integers(1, 5)), replace=False):
            labels = rng.choice(LABELS, size=3)
            flag = "broken" if rng.random() < 0.05 else ""
            rows.append(Row(pair, users[index], *labels, flag=flag))
    judgments = bulk_judge(rows)
    early = [j.pk for j in judgments[::7]]
    Judgment.objects.filter(pk__in=early).update(created_at=timezone.now() - timedelta(days=3))

    for filters in (
        ConsensusFilters(),
        ConsensusFilters(batch_ids=(half.pk,)),
        ConsensusFilters(judged_from=timezone.now() - timedelta(days=1)),
    ):
        scope = _Scope.of(filters)
        with transaction.atomic(), connection.cursor() as cursor:
            _pairs_create(cursor, scope)
            fast, reference = _matchups(cursor, scope), _matchups_from_consensus(cursor, scope)
            cursor.execute(f"DROP TABLE {scope.pairs}")
        assert fast == reference and sum(len(rows) for rows in fast.values()) > 0
