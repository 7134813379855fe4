"""The agreement dashboard and API render the stored report; the admin's actions change who counts and what is asked."""

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from annotate.consensus import EXCLUDED_GROUP
from annotate.models import AgreementReport, Assignment, Batch, Pair
from annotate.services.stats import (
    annotator_set_active,
    annotator_set_excluded,
    filters_key,
    pairs_request_more_judgments,
    report_filters,
)
from tests.workers.test_snapshots import judge


def stored_report(annotators, **filters) -> AgreementReport:
    """A report of the shape ``annotate.stats.agreement_report`` returns, stored as the periodic task would."""
    interval = {"value": 0.61, "ci_low": 0.55, "ci_high": 0.66}
    people = [
        {
            "id": user.pk,
            "username": user.username,
            "is_active": True,
            "excluded": False,
            "judgments": 40,
            "loo_agreement": {"VQ": 0.8, "MQ": 0.7, "TA": 0.75, "mean": 0.75},
            "gold_judgments": 4,
            "gold_accuracy": 0.9,
            "median_seconds": 21.5,
            "left_pick_rate": 0.5,
            "left_pick_p_value": 0.9,
            "flags": 1,
            "outlier": [],
        }
        for user in annotators
    ]
    people[-1]["outlier"] = ["low agreement"]
    dimension = {
        "alpha_nominal": interval,
        "alpha_ordinal": interval,
        "fleiss_kappa": 0.58,
        "tie_rate": 0.21,
        "label_distribution": {"A": 50, "B": 45, "TIE": 25},
        "cohen_kappa": {
            "annotators": [u.pk for u in annotators],
            "matrix": [[1.0 if i == j else 0.5 for j in range(len(annotators))] for i in range(len(annotators))],
        },
    }
    report = {
        "filters": report_filters(**filters),
        "seconds": 0.4,
        "progress": {
            "pairs_total": 90,
            "pairs_complete": 40,
            "pairs_open": 50,
            "pairs_retired": 0,
            "judgments_total": 120,
            "judgments_per_day": [{"day": "2026-11-24", "judgments": 120}],
        },
        "dimensions": {"VQ": dimension, "MQ": dimension, "TA": dimension},
        "annotators": people,
        "generators": {
            dim: [
                {"generator": "gen-a", "score": 0.4, "ci_low": 0.2, "ci_high": 0.6, "comparisons": 30},
                {"generator": "gen-b", "score": -0.4, "ci_low": -0.6, "ci_high": -0.2, "comparisons": 30},
            ]
            for dim in ("VQ", "MQ", "TA")
        },
    }
    canonical = report_filters(**filters)
    return AgreementReport.objects.create(
        filters_key=filters_key(canonical), filters=canonical, report=report, seconds=0.4
    )


def small_study(make_user, make_pairs, *, pairs=12, seed=3):
    """Small data as a new project has it: four careful annotators (right 90 % of the time) and a spammer
    (uniformly random labels), each pair judged by four of the five, three generators. Returns the spammer."""
    import random

    from tests.annotate.test_stats import Row, bulk_judge, name_generators

    rng = random.Random(seed)
    careful = [make_user(f"careful-{i}") for i in range(4)]
    spammer = make_user("spammer")
    pool = careful + [spammer]
    made = make_pairs(pairs)
    generators = ["gen-alpha", "gen-beta", "gen-gamma"]
    strength = {"gen-alpha": 2, "gen-beta": 1, "gen-gamma": 0}
    sides = [(generators[i % 3], generators[(i + 1) % 3]) for i in range(pairs)]
    name_generators(made, [a for a, _ in sides], [b for _, b in sides])
    rows = []
    for index, (pair, (gen_a, gen_b)) in enumerate(zip(made, sides, strict=True)):
        better = "A" if strength[gen_a] > strength[gen_b] else "B"
        truth = [better if rng.random() < 0.8 else rng.choice("AB") for _ in range(3)]
        for person in pool[: index % 5] + pool[index % 5 + 1 :]:  # everyone but one, in turn
            if person is spammer:
                labels = [rng.choice(["A", "B", "TIE"]) for _ in truth]
            else:
                labels = [label if rng.random() < 0.9 else rng.choice(["A", "B", "TIE"]) for label in truth]
            rows.append(Row(pair, person, *labels, left_is_a=rng.random() < 0.5, duration_ms=rng.randint(4000, 30000)))
    bulk_judge(rows)
    return spammer


@pytest.fixture
def staff(make_user):
    user = make_user(staff=True)
    user.is_superuser = True
    user.save()
    return user


def test_dashboard_renders_the_stored_report_for_staff_only(client, staff, make_user):
    annotators = [make_user(f"judge-{i}") for i in range(3)]
    stored_report(annotators)
    client.force_login(staff)
    with CaptureQueriesContext(connection) as queries:
        page = client.get("/admin/annotate/agreementreport/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Krippendorff" in html and "judge-2" in html and "low agreement" in html and "gen-a" in html
    assert 'id="agreement-chart-data"' in html and "chart.umd.min.js" in html
    assert len(queries) <= 12  # rendered from the stored row, whatever the data size
    assert (
        "No statistics have been computed"
        in client.get("/admin/annotate/agreementreport/?judged_from=2020-01-01").content.decode()
    )

    client.force_login(annotators[0])
    assert client.get("/admin/annotate/agreementreport/").status_code == 302  # to the admin login


def test_api_returns_the_stored_numbers_and_queues_recomputes(db, staff, make_user, monkeypatch):
    from celery import current_app

    api = APIClient()
    api.force_authenticate(staff)
    missing = api.get("/api/v1/stats/agreement/")
    assert missing.status_code == 404 and "POST" in missing.json()["detail"]
    annotators = [make_user(f"api-judge-{i}") for i in range(2)]
    stored = stored_report(annotators)
    body = api.get("/api/v1/stats/agreement/").json()
    assert body["dimensions"] == stored.report["dimensions"] and body["annotators"][0]["username"] == "api-judge-0"
    assert api.get("/api/v1/stats/agreement/?judged_from=tomorrow").status_code == 400

    sent = []
    monkeypatch.setattr(
        current_app, "send_task", lambda name, kwargs: sent.append((name, kwargs)) or SimpleNamespace(id="t")
    )
    with pytest.MonkeyPatch.context():
        from django.test import TestCase

        with TestCase.captureOnCommitCallbacks(execute=True):
            answer = api.post(
                "/api/v1/stats/agreement/", {"batch": [], "judged_from": "2026-11-01T00:00:00Z"}, format="json"
            )
    assert answer.status_code == 202
    assert sent == [
        (
            "workers.tasks.default.recompute_agreement",
            {"filters": {"batch_ids": [], "judged_from": "2026-11-01T00:00:00+00:00", "judged_until": None}},
        )
    ]

    outsider = APIClient()
    outsider.force_authenticate(annotators[0])
    assert outsider.get("/api/v1/stats/agreement/").status_code == 403


def test_disable_exclude_and_ask_for_more_judgments(transactional_db, make_pairs, make_user):
    from annotate.services.assignment import assignment_next

    people = [make_user(f"p{i}") for i in range(4)]
    agreed, contested = make_pairs(2)
    for user in people[:3]:
        judge(agreed, user, "A", "A", "A")
    for user, label in zip(people[:3], ("A", "B", "TIE")):
        judge(contested, user, label, "A", "A")
    Pair.objects.filter(pk__in=[agreed.pk, contested.pk]).update(
        status=Pair.Status.COMPLETE, filled=3, judgment_count=3
    )

    assert pairs_request_more_judgments(below_agreement=0.67, extra=2) == 1
    contested.refresh_from_db()
    agreed.refresh_from_db()
    assert (contested.overlap, contested.status) == (5, Pair.Status.OPEN)
    assert (agreed.overlap, agreed.status) == (3, Pair.Status.COMPLETE)
    with pytest.raises(ValueError, match="between 1 and 20"):
        pairs_request_more_judgments(below_agreement=0.5, extra=0)

    lease = assignment_next(annotator=people[3])
    assert lease.pair_id == contested.pk and Pair.objects.get(pk=contested.pk).filled == 4
    annotator_set_active(user_id=people[3].pk, active=False)
    people[3].refresh_from_db()
    assert not people[3].is_active
    assert Assignment.objects.get(pk=lease.pk).state == Assignment.State.EXPIRED
    assert Pair.objects.get(pk=lease.pair_id).filled == 3  # the disabled annotator's slot is free again

    annotator_set_excluded(user_id=people[0].pk, excluded=True)
    assert Group.objects.get(name=EXCLUDED_GROUP).user_set.filter(pk=people[0].pk).exists()
    annotator_set_excluded(user_id=people[0].pk, excluded=False)
    assert not Group.objects.get(name=EXCLUDED_GROUP).user_set.exists()


def test_drilldown_shows_judgments_next_to_the_consensus(client, staff, make_pairs, make_user):
    people = [make_user(f"d{i}") for i in range(3)]
    (pair,) = make_pairs(1)
    judge(pair, people[0], "A", "A", "B")
    judge(pair, people[1], "A", "A", "A")
    judge(pair, people[2], "B", "A", "A", when=timezone.now())
    client.force_login(staff)
    page = client.get(f"/admin/annotate/agreementreport/annotator/{people[2].pk}/")
    html = page.content.decode()
    assert page.status_code == 200 and "B / A" in html and 'class="disagrees"' in html
    response = client.post(
        f"/admin/annotate/agreementreport/annotator/{people[2].pk}/set/",
        {"change": "exclude", "next": f"/admin/annotate/agreementreport/annotator/{people[2].pk}/"},
    )
    assert response.status_code == 302
    assert "Excluded from consensus" in client.get(response["Location"]).content.decode()
    assert (
        client.post(f"/admin/annotate/agreementreport/annotator/{staff.pk}/set/", {"change": "disable"}).status_code
        == 302
    )
    staff.refresh_from_db()
    assert staff.is_active  # staff are not disabled from here


# --- "Recompute now": the page polls a status endpoint until the new numbers are in, then reloads once ------


def polling_query(*, requested, after, **filters) -> str:
    from urllib.parse import urlencode

    return urlencode({**filters, "requested": requested.isoformat(), "after": after}, doseq=True)


def store_task_result(status: str, filters: dict, *, error: Exception | None = None) -> str:
    """A recompute task's row in the result store, written by Celery's own backend as a worker writes it."""
    import uuid

    from celery import current_app
    from celery.app.task import Context
    from celery.utils.saferepr import saferepr

    from annotate.services.stats import RECOMPUTE_TASK

    task_id = str(uuid.uuid4())
    kwargs = {"filters": filters}
    request = Context(
        id=task_id,
        task=RECOMPUTE_TASK,
        args=[],
        kwargs=kwargs,
        argsrepr="()",
        kwargsrepr=saferepr(kwargs),
        hostname="worker@test",
        delivery_info={},
        errbacks=None,
    )
    if status == "FAILURE":
        current_app.backend.mark_as_failure(task_id, error, request=request)
    else:
        current_app.backend.store_result(task_id, None, status, request=request)
    return task_id


def test_recompute_polls_until_a_newer_report_then_sends_the_page_once_to_the_plain_dashboard(
    client, staff, make_user, monkeypatch
):
    from celery import current_app

    shown = stored_report([make_user("r0"), make_user("r1")])
    sent = []
    monkeypatch.setattr(current_app, "send_task", lambda name, kwargs: sent.append(kwargs) or SimpleNamespace(id="t"))
    client.force_login(staff)
    answer = client.post("/admin/annotate/agreementreport/recompute/", {"judged_from": "2026-11-01T00:00:00Z"})
    assert sent == [{"filters": {"batch_ids": [], "judged_from": "2026-11-01T00:00:00+00:00", "judged_until": None}}]
    location = answer["Location"]
    assert "requested=" in location and "after=0" in location  # no report for these filters yet

    query = polling_query(requested=timezone.now(), after=shown.pk)
    page = client.get(f"/admin/annotate/agreementreport/?{query}").content.decode()
    assert 'hx-trigger="every 2s"' in page and "recomputing…" in page
    waiting = client.get(f"/admin/annotate/agreementreport/status/?{query}")
    assert waiting.status_code == 200 and "HX-Redirect" not in waiting.headers and "queued" in waiting.content.decode()

    started = store_task_result("STARTED", report_filters())
    running = client.get(f"/admin/annotate/agreementreport/status/?{query}").content.decode()
    assert started and "running on worker@test" in running

    newer = stored_report([make_user("r2"), make_user("newest-reporter")])
    assert newer.pk > shown.pk
    done = client.get(f"/admin/annotate/agreementreport/status/?{query}")
    assert done.headers["HX-Redirect"] == "/admin/annotate/agreementreport/" and "HX-Refresh" not in done.headers
    # A page that loads after the report is in (a quick worker, or the one reload) shows it and does not poll.
    page = client.get(f"/admin/annotate/agreementreport/?{query}").content.decode()
    assert "hx-trigger" not in page and "recomputing" not in page and "newest-reporter" in page

    batch = Batch.objects.create(name="b")
    filtered = polling_query(requested=timezone.now(), after=0, batch=[batch.pk])
    stored_report([make_user("r4")], batch_ids=[batch.pk])
    assert client.get(f"/admin/annotate/agreementreport/status/?{filtered}").headers["HX-Redirect"] == (
        f"/admin/annotate/agreementreport/?batch={batch.pk}"
    )  # the filters stay, the polling parameters go


def test_a_failed_recompute_stops_the_polling_and_says_why(client, staff, make_user):
    shown = stored_report([make_user("f0"), make_user("f1")])
    client.force_login(staff)
    query = polling_query(requested=timezone.now(), after=shown.pk)
    store_task_result("FAILURE", report_filters(judged_from=timezone.now()), error=RuntimeError("other filters"))
    assert client.get(f"/admin/annotate/agreementreport/status/?{query}").status_code == 200  # not this request's task

    store_task_result("FAILURE", report_filters(), error=RuntimeError("the disk is full\nand then some detail"))
    failed = client.get(f"/admin/annotate/agreementreport/status/?{query}")
    html = failed.content.decode()
    assert failed.status_code == 286  # htmx stops polling
    assert "The recompute failed" in html and "RuntimeError: the disk is full)" in html and "hx-trigger" not in html
    assert "the numbers below are the earlier ones" in html
    page = client.get(f"/admin/annotate/agreementreport/?{query}").content.decode()
    assert "The recompute failed" in page and "hx-trigger" not in page


def test_the_polling_gives_up_after_a_while_and_a_broker_that_is_down_is_said_at_once(
    client, staff, make_user, monkeypatch
):
    from celery import current_app
    from kombu.exceptions import OperationalError

    from annotate.admin import RECOMPUTE_PATIENCE

    shown = stored_report([make_user("g0"), make_user("g1")])
    client.force_login(staff)
    query = polling_query(requested=timezone.now() - RECOMPUTE_PATIENCE - timedelta(seconds=5), after=shown.pk)
    stale = client.get(f"/admin/annotate/agreementreport/status/?{query}")
    assert stale.status_code == 286 and "Stopped waiting" in stale.content.decode()

    def down(name, kwargs):
        raise OperationalError("Connection refused")

    monkeypatch.setattr(current_app, "send_task", down)
    answer = client.post("/admin/annotate/agreementreport/recompute/", {}, follow=True)
    html = answer.content.decode()
    assert "Not recomputed: the task broker is unreachable" in html and "hx-trigger" not in html
    assert "requested=" not in answer.redirect_chain[-1][0]


# --- small data reads as small data ----------------------------------------------------------------------


def test_undefined_statistics_read_n_a_with_the_reason_and_the_kappa_diagonal_is_blank(client, staff, make_user):
    people = [make_user(f"n{i}") for i in range(3)]
    stored = stored_report(people)
    report = stored.report
    undefined = {"value": None, "ci_low": None, "ci_high": None}
    report["dimensions"]["VQ"] = {
        **report["dimensions"]["VQ"],
        "alpha_nominal": undefined,
        "alpha_ordinal": undefined,
        "fleiss_kappa": None,
    }
    report["dimensions"]["MQ"] = {
        **report["dimensions"]["MQ"],
        "alpha_nominal": {"value": 0.5, "ci_low": None, "ci_high": None},
    }
    report["generators"]["TA"] = []
    stored.report = report
    stored.save(update_fields=["report"])
    client.force_login(staff)
    html = client.get("/admin/annotate/agreementreport/").content.decode()
    html = re.sub(r'name="csrfmiddlewaretoken" value="\w+"', "", html)  # random letters could spell anything
    assert "[, ]" not in html and "None" not in html
    assert html.count(">n/a (too few)</span>") == 3  # VQ: both α and Fleiss' κ
    assert 'title="Krippendorff&#x27;s α is undefined' in html
    assert '0.500\n<small class="na"' in html and "[interval n/a]" in html  # a value without an interval
    assert "no pair compares two named generators yet" in html and 'id="chart-generators-TA"' not in html
    # Cohen's κ: 3 × 3 diagonal cells per dimension are blank and carry no value to colour; the others do.
    assert html.count('class="kappa-diag"') == 9 and html.count('data-kappa="0.5"') == 3 * 6
    assert 'data-kappa="1.0"' not in html


def test_many_annotators_show_the_kappa_distribution_over_every_two_and_a_matrix_of_the_most_active(client, staff):
    from django.contrib.auth import get_user_model

    from annotate.admin import KAPPA_MATRIX_MAX

    count = KAPPA_MATRIX_MAX + 15
    people = get_user_model().objects.bulk_create([get_user_model()(username=f"many-{i:02d}") for i in range(count)])
    stored = stored_report(people)
    report = stored.report
    # κ of annotators i < j: −0.5 when either is one of the first 5 (spammers), else 0.75; one pair undefined.
    matrix = [[1.0 if i == j else (-0.5 if min(i, j) < 5 else 0.75) for j in range(count)] for i in range(count)]
    matrix[10][11] = matrix[11][10] = None
    for row, person in zip(report["annotators"], people, strict=True):
        row["judgments"] = 1000 - int(person.username[-2:])  # the lower the number, the more active
    for dim in ("VQ", "MQ", "TA"):
        report["dimensions"][dim] = {
            **report["dimensions"][dim],
            "cohen_kappa": {"annotators": [p.pk for p in people], "matrix": matrix},
        }
    stored.report = report
    stored.save(update_fields=["report"])
    client.force_login(staff)
    html = client.get("/admin/annotate/agreementreport/").content.decode()

    possible = count * (count - 1) // 2
    low = sum(count - 1 - i for i in range(5))  # pairs with a spammer
    assert html.count(f"κ over {possible - 1} of {possible} annotator pairs") == 3
    histograms = re.findall(r'<div class="kappa-histogram".*?</div>', html, re.S)
    assert len(histograms) == 3
    counts = [int(n) for n in re.findall(r'data-count="(\d+)"', histograms[0])]
    assert len(counts) == 20 and sum(counts) == possible - 1
    assert counts[5] == low and counts[17] == possible - 1 - low  # [−0.5, −0.4) and [0.7, 0.8)
    assert f"{round(100 * low / (possible - 1))} %</b> below 0.2" in html
    assert "median <b>0.75</b>" in html
    # Negative κ is written with a minus sign, as the axis writes −1: in the matrix and the bins' titles.
    assert ">−0.50</td>" in html and "-0.50" not in html
    assert 'title="κ in [−0.5, −0.4): ' in html and "[-0.5" not in html
    # The matrices: the 25 most active annotators only, the rest counted as hidden.
    assert html.count("many-24</th>") == 3 * 2 and "many-25</th>" not in html  # header and row, per dimension
    assert html.count("(15 less active annotators not shown; all are in the API)") == 3


def test_recompute_pressed_on_the_page_answers_with_the_polling_status_instead_of_a_new_page(
    client, staff, monkeypatch
):
    """The button posts with htmx: the answer is the status fragment that polls, not a redirect (a page load)."""
    from celery import current_app

    monkeypatch.setattr(current_app, "send_task", lambda name, kwargs: SimpleNamespace(id="t"))
    client.force_login(staff)
    answer = client.post(
        "/admin/annotate/agreementreport/recompute/",
        {"judged_from": "2026-11-01T00:00:00Z"},
        headers={"HX-Request": "true"},
    )
    body = answer.content.decode()
    assert answer.status_code == 200 and "Location" not in answer.headers
    assert 'id="recompute-status"' in body and 'hx-trigger="every 2s"' in body and "recomputing…" in body
    assert "/agreementreport/status/?" in body and "requested=" in body and "after=0" in body
