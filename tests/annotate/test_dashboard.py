"""The agreement dashboard and API render the stored report; the admin's actions change who counts and what is asked."""

from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from annotate.consensus import EXCLUDED_GROUP
from annotate.models import AgreementReport, Assignment, Pair
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
    people = [{"id": user.pk, "username": user.username, "is_active": True, "excluded": False, "judgments": 40,
               "loo_agreement": {"VQ": 0.8, "MQ": 0.7, "TA": 0.75, "mean": 0.75}, "gold_judgments": 4,
               "gold_accuracy": 0.9, "median_seconds": 21.5, "left_pick_rate": 0.5, "left_pick_p_value": 0.9,
               "flags": 1, "outlier": []} for user in annotators]
    people[-1]["outlier"] = ["low agreement"]
    dimension = {"alpha_nominal": interval, "alpha_ordinal": interval, "fleiss_kappa": 0.58, "tie_rate": 0.21,
                 "label_distribution": {"A": 50, "B": 45, "TIE": 25},
                 "cohen_kappa": {"annotators": [u.pk for u in annotators],
                                 "matrix": [[1.0 if i == j else 0.5 for j in range(len(annotators))]
                                            for i in range(len(annotators))]}}
    report = {
        "filters": report_filters(**filters), "seconds": 0.4,
        "progress": {"pairs_total": 90, "pairs_complete": 40, "pairs_open": 50, "pairs_retired": 0,
                     "judgments_total": 120, "judgments_per_day": [{"day": "2026-11-24", "judgments": 120}]},
        "dimensions": {"VQ": dimension, "MQ": dimension, "TA": dimension},
        "annotators": people,
        "generators": {dim: [{"generator": "gen-a", "score": 0.4, "ci_low": 0.2, "ci_high": 0.6, "comparisons": 30},
                             {"generator": "gen-b", "score": -0.4, "ci_low": -0.6, "ci_high": -0.2, "comparisons": 30}]
                       for dim in ("VQ", "MQ", "TA")},
    }
    canonical = report_filters(**filters)
    return AgreementReport.objects.create(filters_key=filters_key(canonical), filters=canonical, report=report,
                                          seconds=0.4)


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
    assert "No statistics have been computed" in client.get("/admin/annotate/agreementreport/?judged_from=2020-01-01").content.decode()

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
    monkeypatch.setattr(current_app, "send_task", lambda name, kwargs: sent.append((name, kwargs)) or SimpleNamespace(id="t"))
    with pytest.MonkeyPatch.context():
        from django.test import TestCase

        with TestCase.captureOnCommitCallbacks(execute=True):
            answer = api.post("/api/v1/stats/agreement/", {"batch": [], "judged_from": "2026-11-01T00:00:00Z"},
                              format="json")
    assert answer.status_code == 202
    assert sent == [("workers.tasks.default.recompute_agreement",
                     {"filters": {"batch_ids": [], "judged_from": "2026-11-01T00:00:00+00:00", "judged_until": None}})]

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
    Pair.objects.filter(pk__in=[agreed.pk, contested.pk]).update(status=Pair.Status.COMPLETE, filled=3, judgment_count=3)

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
    response = client.post(f"/admin/annotate/agreementreport/annotator/{people[2].pk}/set/",
                           {"change": "exclude", "next": f"/admin/annotate/agreementreport/annotator/{people[2].pk}/"})
    assert response.status_code == 302
    assert "Excluded from consensus" in client.get(response["Location"]).content.decode()
    assert client.post(f"/admin/annotate/agreementreport/annotator/{staff.pk}/set/", {"change": "disable"}).status_code == 302
    staff.refresh_from_db()
    assert staff.is_active  # staff are not disabled from here
