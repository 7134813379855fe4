"""On demand from the dashboard: a real worker recomputes the statistics, and the page shows the simulated
spammer and the left-biased annotator marked."""

import random
import time

from django_celery_results.models import TaskResult

from annotate.admin import recompute_task_filters
from annotate.models import AgreementReport
from annotate.services.stats import RECOMPUTE_TASK
from tests.workers.test_snapshots import judge


def simulate(make_pairs, make_user, *, pairs=150, seed=7):
    """Careful annotators (right 90 % of the time), one spammer (random), one who mostly picks the left side."""
    rng = random.Random(seed)
    careful = [make_user(f"careful-{i}") for i in range(5)]
    spammer, biased = make_user("spammer"), make_user("left-biased")
    pool = careful + [spammer, biased]
    for pair in make_pairs(pairs):
        truth = [rng.choice("AB") for _ in range(3)]
        for person in rng.sample(pool, 3):
            left_is_a = rng.random() < 0.5
            if person is spammer:
                labels = [rng.choice(["A", "B", "TIE"]) for _ in truth]
            elif person is biased:
                labels = [("A" if left_is_a else "B") if rng.random() < 0.9 else label for label in truth]
            else:
                labels = [label if rng.random() < 0.9 else rng.choice(["A", "B", "TIE"]) for label in truth]
            judge(pair, person, *labels, left_is_a=left_is_a)
    return spammer, biased


def test_recompute_from_the_dashboard_runs_in_the_worker(celery_worker_process, client, make_pairs, make_user):
    spammer, biased = simulate(make_pairs, make_user)
    staff = make_user(staff=True)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    assert "No statistics have been computed" in client.get("/admin/annotate/agreementreport/").content.decode()
    response = client.post("/admin/annotate/agreementreport/recompute/", {})
    assert response.status_code == 302 and "requested=" in response["Location"]
    deadline = time.monotonic() + 90
    while not AgreementReport.objects.exists():
        assert time.monotonic() < deadline, celery_worker_process.log_path.read_text()[-3000:]
        time.sleep(0.3)
    polling = response["Location"].split("?", 1)[1]
    status = client.get(f"/admin/annotate/agreementreport/status/?{polling}")
    # The polling page is sent once to the dashboard without the polling parameters, where it polls no more.
    assert status.headers.get("HX-Redirect") == "/admin/annotate/agreementreport/"
    assert "hx-trigger" not in client.get(status.headers["HX-Redirect"]).content.decode()
    # The worker's stored result names the task and its filters as the status endpoint reads them.
    deadline = time.monotonic() + 30
    while not TaskResult.objects.filter(task_name=RECOMPUTE_TASK, status="SUCCESS").exists():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    stored = TaskResult.objects.get(task_name=RECOMPUTE_TASK)
    assert recompute_task_filters(stored) == {"batch_ids": [], "judged_from": None, "judged_until": None}
    report = AgreementReport.objects.get().report
    marked = {row["username"]: row["outlier"] for row in report["annotators"]}
    assert "low agreement" in marked["spammer"] and "position bias" in marked["left-biased"]
    assert all(not reasons for name, reasons in marked.items() if name.startswith("careful"))
    page = client.get("/admin/annotate/agreementreport/").content.decode()
    assert "position bias" in page and "low agreement" in page and report["progress"]["judgments_total"] == 450
