"""Campaigns (docs/architecture.md §11): the external link, scoping, qualification with feedback, the gold floor,
the quota and completion code, undo, and the participants' report — through the pages, as people use them."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.utils import timezone

from annotate.models import Assignment, Campaign, CampaignMember, Judgment, Pair
from annotate.services.campaigns import REPORT_COLUMNS, campaign_batch_ids

GOLD = {"vq": "A", "mq": "B", "ta": "TIE"}
LINK = "/c/study/?PROLIFIC_PID={pid}&STUDY_ID=st1&SESSION_ID=se1"


@pytest.fixture
def staff_browser(make_user):
    """Staff in a browser of their own (``staff_client`` is the same client as ``client``)."""
    from django.test import Client

    admin = make_user(staff=True)
    admin.is_superuser = True
    admin.save()
    browser = Client()
    browser.force_login(admin)
    return browser


@pytest.fixture
def campaign(db):
    return Campaign.objects.create(
        name="Study",
        slug="study",
        guidelines="<p>Judge <strong>carefully</strong>.</p>",
        external_link=True,
        quota=3,
        completion_code="C0DE42",
        completion_url="https://app.prolific.com/submissions/complete?cc={code}",
        gold_floor=0.5,
        gold_min=2,
        gold_window=4,
        qualification_threshold=0.6,
    )


def _screen_answer(lease: Assignment, labels: dict) -> dict:
    """Pair labels (A/B/TIE) as the screen choices of this lease."""
    a, b = ("left", "right") if lease.left_is_a else ("right", "left")
    return {dim: {"A": a, "B": b, "TIE": "tie"}[value] for dim, value in labels.items()}


def _wrong(labels: dict) -> dict:
    return {dim: {"A": "B", "B": "A", "TIE": "A"}[value] for dim, value in labels.items()}


def _judge(client, user, labels: dict, *, active_ms=1000, htmx=True):
    lease = Assignment.objects.get(annotator=user, state="active")
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    response = client.post(
        f"/assignments/{lease.pk}/judge/", {**_screen_answer(lease, labels), "active_ms": active_ms}, **headers
    )
    assert response.status_code == 200, response.content[:500]
    return lease, response.content.decode()


def _enter(client, pid="PID1", campaign_slug="study"):
    response = client.get(LINK.format(pid=pid).replace("/c/study/", f"/c/{campaign_slug}/"))
    return response


def test_the_external_link_makes_or_resumes_a_participant_and_reads_the_configured_names(client, campaign):
    response = _enter(client)
    assert response.status_code == 302 and response.url == "/c/study/guidelines/"
    member = CampaignMember.objects.get(campaign=campaign, external_id="PID1")
    assert (member.study_id, member.session_id, member.status) == ("st1", "se1", "new")
    assert not member.user.has_usable_password() and not member.user.is_staff
    page = client.get(response.url).content.decode()
    assert "Judge <strong>carefully</strong>" in page and 'id="guidelines-read"' in page
    client.logout()
    assert _enter(client).status_code == 302  # the same PID comes back to the same account
    assert CampaignMember.objects.filter(campaign=campaign).count() == 1
    assert int(client.session["_auth_user_id"]) == member.user_id

    campaign.participant_param, campaign.slug = "workerId", "mturk"
    campaign.save()
    response = client.get("/c/mturk/?workerId=W-7")
    assert response.status_code == 302 and CampaignMember.objects.filter(external_id="W-7").exists()


@pytest.mark.parametrize(
    ("change", "status", "text"),
    [
        ({"closes_at": timezone.now() - timedelta(hours=1)}, 410, "This study has closed"),
        ({"opens_at": timezone.now() + timedelta(days=2)}, 410, "This study opens on"),
        ({"max_participants": 0}, 410, "all the participants it needs"),
        ({"external_link": False}, 404, "not open to participants by link"),
    ],
)
def test_a_closed_or_full_campaign_answers_with_a_clear_page(client, campaign, change, status, text):
    for key, value in change.items():
        setattr(campaign, key, value)
    campaign.save()
    response = _enter(client)
    assert response.status_code == status and text in response.content.decode()
    assert not CampaignMember.objects.exists()


def test_a_link_without_the_participant_id_says_what_is_missing(client, campaign):
    response = client.get("/c/study/")
    assert response.status_code == 400 and "The link lacks PROLIFIC_PID" in response.content.decode()
    response = client.get("/c/study/?PROLIFIC_PID=bad%20id")
    assert response.status_code == 400 and "Invalid participant id" in response.content.decode()


def test_annotators_see_only_the_pairs_of_their_campaigns(client, make_user, make_pairs, campaign):
    group = Group.objects.create(name="study-team")
    campaign.annotator_group, campaign.guidelines = group, ""
    campaign.save()
    make_pairs(3)  # the default campaign's
    ours = {pair.pk for pair in make_pairs(2, campaign=campaign)}
    outsider, insider = make_user(), make_user()
    insider.groups.add(group)
    client.force_login(insider)
    assert client.get("/c/study/").status_code == 302
    seen = set()
    for _ in range(2):
        client.get("/", HTTP_HX_REQUEST="true")
        lease, _ = _judge(client, insider, {"vq": "A", "mq": "A", "ta": "A"})
        seen.add(lease.pair_id)
    assert seen == ours
    client.force_login(outsider)
    response = client.get("/c/study/")
    assert response.status_code == 403 and "not part of Study" in response.content.decode()
    client.get("/")  # the default campaign: open to every account
    assert Assignment.objects.get(annotator=outsider).pair.campaign.slug == "default"


def _qualification_set(campaign, make_pairs, count=3):
    pairs = make_pairs(count, is_gold=True, gold_labels=GOLD, campaign=campaign, gold_reason="The left one is sharp.")
    campaign.qualification_pairs.add(*pairs)
    return pairs


def test_qualification_shows_the_reference_after_each_pair_and_admits_on_passing(client, campaign, make_pairs):
    _qualification_set(campaign, make_pairs)
    work = make_pairs(4, campaign=campaign)
    _enter(client)
    client.post("/c/study/guidelines/")
    member = CampaignMember.objects.get(external_id="PID1")
    assert member.status == "qualifying"
    page = client.get("/").content.decode()
    assert "Qualification: pair 1 of 3" in page
    for number, labels in enumerate([GOLD, GOLD, _wrong(GOLD)], start=1):
        lease, feedback = _judge(client, member.user, labels)
        assert lease.pair.qualification_for.filter(pk=campaign.pk).exists()
        assert 'id="qualification-feedback"' in feedback and "The left one is sharp." in feedback
        reference = dict(
            re.findall(r"<td>(Visual quality|Motion quality|Text alignment)</td><td>\w+</td>\s*<td>(\w+)", feedback)
        )
        assert reference == {
            "Visual quality": "left" if lease.left_is_a else "right",
            "Motion quality": "right" if lease.left_is_a else "left",
            "Text alignment": "tie",
        }
        following = client.get("/", HTTP_HX_REQUEST="true").content.decode()
        if number < 3:
            assert f"Qualification: pair {number + 1} of 3" in following
    member.refresh_from_db()
    assert member.status == "active" and member.qualification["passed"]  # 2 of 3 ≥ 0.6 in every dimension
    assert member.qualification["agreement"]["vq"] == pytest.approx(2 / 3)
    lease = Assignment.objects.get(annotator=member.user, state="active")
    assert lease.pair_id in {pair.pk for pair in work}  # now the real pairs
    assert 'id="undo-form"' not in client.get("/").content.decode()  # a qualification answer cannot be undone


def test_failing_qualification_stops_the_person_until_staff_readmit_them(client, campaign, make_pairs, staff_browser):
    _qualification_set(campaign, make_pairs, count=2)
    make_pairs(2, campaign=campaign)
    _enter(client, pid="BAD")
    client.post("/c/study/guidelines/")
    client.get("/")
    member = CampaignMember.objects.get(external_id="BAD")
    for _ in range(2):
        _, feedback = _judge(client, member.user, _wrong(GOLD))
        client.get("/", HTTP_HX_REQUEST="true")
    member.refresh_from_db()
    assert member.status == "failed" and member.qualification["passed"] is False
    page = client.get("/")
    assert "this study is not a match" in page.content.decode() and 'data-status="failed"' in page.content.decode()
    assert not Assignment.objects.filter(annotator=member.user, state="active").exists()
    # staff re-admit from the admin
    response = staff_browser.post(
        "/admin/annotate/campaignmember/",
        {"action": "readmit", "_selected_action": [member.pk], "index": 0},
        follow=True,
    )
    assert "Re-admitted 1 person" in response.content.decode()
    member.refresh_from_db()
    assert member.status == "active"


def test_a_falling_gold_accuracy_pauses_the_person_and_lists_their_mistakes(client, campaign, make_pairs, settings):
    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 1.0}  # every pair gold: the floor is reached quickly
    campaign.guidelines, campaign.quota = "", None
    campaign.save()
    make_pairs(4, is_gold=True, gold_labels=GOLD, campaign=campaign)
    make_pairs(2, campaign=campaign)
    _enter(client, pid="SLOPPY")
    member = CampaignMember.objects.get(external_id="SLOPPY")
    client.get("/")
    _judge(client, member.user, GOLD)
    _judge(client, member.user, _wrong(GOLD))
    member.refresh_from_db()
    assert member.status == "active"  # 1 of 2 = 50 %: at the floor
    _judge(client, member.user, _wrong(GOLD))
    member.refresh_from_db()
    assert member.status == "paused" and "gold accuracy 33%" in member.paused_reason
    assert not Assignment.objects.filter(annotator=member.user, state="active").exists()  # the lease went back
    assert "Judging is paused for you" in client.get("/").content.decode()

    from django.contrib.admin.sites import site

    from annotate.admin import CampaignMemberAdmin

    mistakes = CampaignMemberAdmin(CampaignMember, site).recent_gold_mistakes(member)
    assert mistakes.count("<tr><td>") == 2 and "A B TIE" in mistakes


def test_at_the_quota_the_completion_code_and_redirect(client, campaign, make_pairs):
    campaign.guidelines = ""
    campaign.save()
    make_pairs(5, campaign=campaign)
    _enter(client)
    member = CampaignMember.objects.get(external_id="PID1")
    assert member.status == "active"  # no guidelines and no qualification: straight to judging
    client.get("/")
    for _ in range(3):
        _, html = _judge(client, member.user, {"vq": "A", "mq": "A", "ta": "A"})
    assert 'id="completion-code"' in html and "C0DE42" in html
    assert 'href="https://app.prolific.com/submissions/complete?cc=C0DE42"' in html
    assert Assignment.objects.filter(annotator=member.user, state="active").count() == 0
    member.refresh_from_db()
    assert member.completed_at is not None
    assert "C0DE42" in client.get("/c/study/?PROLIFIC_PID=PID1", follow=True).content.decode()  # coming back


def test_undo_brings_the_last_pair_back_within_the_window(client, make_user, make_pairs, settings):
    pairs = make_pairs(2, overlap=1)
    user = make_user()
    client.force_login(user)
    client.get("/")
    lease, html = _judge(client, user, {"vq": "A", "mq": "B", "ta": "TIE"})
    assert 'id="undo-form"' in html and f"/assignments/{lease.pk}/undo/" in html
    assert Pair.objects.get(pk=lease.pair_id).status == "complete"  # k = 1: this judgment completed it
    other = Assignment.objects.get(annotator=user, state="active")  # the next pair, shown after submitting
    response = client.post(f"/assignments/{lease.pk}/undo/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert not Judgment.objects.filter(assignment=lease).exists()
    lease.refresh_from_db()
    pair = Pair.objects.get(pk=lease.pair_id)
    assert lease.state == "active" and (pair.status, pair.judgment_count, pair.filled) == ("open", 0, 1)
    assert {p.pk for p in pairs} >= {lease.pair_id, other.pair_id}
    assert f'data-assignment="{lease.pk}"' in response.content.decode()  # the same pair again, same sides
    other.refresh_from_db()
    assert other.state == "expired" and Pair.objects.get(pk=other.pair_id).filled == 0  # back to the queue
    # judged again, and past the window: no undo
    _judge(client, user, {"vq": "A", "mq": "A", "ta": "A"})
    Judgment.objects.filter(assignment=lease).update(created_at=timezone.now() - timedelta(minutes=10))
    Judgment.objects.filter(annotator=user).exclude(assignment=lease).delete()
    response = client.post(f"/assignments/{lease.pk}/undo/", HTTP_HX_REQUEST="true")
    assert "only your last judgment can be undone, within 5 minutes" in response.content.decode()
    assert Judgment.objects.filter(assignment=lease).exists()


def test_the_report_has_active_time_and_the_admin_exports_it(client, campaign, make_pairs, staff_browser, tmp_path):
    campaign.guidelines = ""
    campaign.save()
    make_pairs(4, campaign=campaign)
    _enter(client, pid="PAID")
    member = CampaignMember.objects.get(external_id="PAID")
    client.get("/")
    _judge(client, member.user, {"vq": "A", "mq": "A", "ta": "A"}, active_ms=90_000)
    _judge(client, member.user, {"vq": "B", "mq": "A", "ta": "A"}, active_ms=30_000)
    out = tmp_path / "report.csv"
    call_command("campaign_report", "study", "--output", str(out))
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == REPORT_COLUMNS
    assert rows[0]["external_id"] == "PAID" and rows[0]["judgments"] == "2" and rows[0]["active_minutes"] == "2.0"
    assert rows[0]["status"] == "active" and rows[0]["first_activity"] and rows[0]["last_activity"]
    response = staff_browser.get(f"/admin/annotate/campaign/{campaign.pk}/report.csv")
    assert response["Content-Type"].startswith("text/csv")
    assert list(csv.DictReader(io.StringIO(response.content.decode())))[0]["active_minutes"] == "2.0"
    page = staff_browser.get(f"/admin/annotate/campaign/{campaign.pk}/report/").content.decode()
    assert "PAID" in page and 'id="report-csv"' in page
    with pytest.raises(Exception, match="no such campaign"):
        call_command("campaign_report", "nope")


def test_statistics_and_snapshots_filter_by_the_campaigns_batches(db, campaign):
    from annotate.models import Batch

    ours = Batch.objects.create(name="ours", campaign=campaign)
    Batch.objects.create(name="theirs")
    assert campaign_batch_ids(None, [5]) == [5]
    assert campaign_batch_ids(campaign, []) == [ours.pk]
    assert campaign_batch_ids(campaign, [ours.pk + 100]) == [0]  # no overlap: no pairs, not every pair
    empty = Campaign.objects.create(name="Empty", slug="empty")
    assert campaign_batch_ids(empty, []) == [0]
    assert Batch.objects.get(name="theirs").campaign.slug == "default"


def test_an_account_in_several_campaigns_switches_between_them(client, make_user, make_pairs, campaign):
    group = Group.objects.create(name="two-campaigns")
    campaign.annotator_group, campaign.guidelines = group, ""
    campaign.save()
    make_pairs(1)
    make_pairs(1, campaign=campaign)
    user = make_user()
    user.groups.add(group)
    client.force_login(user)
    page = client.get("/").content.decode()  # the first campaign (the default one), with a link to the other
    assert 'class="campaign-switch"' in page and 'href="/c/study/"' in page
    assert Assignment.objects.get(annotator=user, state="active").pair.campaign.slug == "default"
    assert client.get("/c/study/").status_code == 302
    page = client.get("/").content.decode()
    assert 'href="/c/default/"' in page
    assert Assignment.objects.filter(annotator=user, state="active", pair__campaign=campaign).exists()


def test_the_dashboard_and_the_export_form_filter_by_campaign(db, campaign, staff_browser):
    from annotate.admin import StatsFilterForm
    from annotate.models import Batch
    from workers.forms import ExportForm

    ours = Batch.objects.create(name="ours", campaign=campaign)
    Batch.objects.create(name="theirs")
    assert StatsFilterForm({"campaign": campaign.pk}).canonical()["batch_ids"] == [ours.pk]
    assert StatsFilterForm({}).canonical()["batch_ids"] == []
    export = ExportForm({"campaign": campaign.pk, "min_judgments": 1, "min_agreement": 0, "no_majority": "tie"})
    assert export.is_valid(), export.errors
    assert export.job_params()["batch_ids"] == [ours.pk] and export.job_params()["campaign"] == "study"
    page = staff_browser.get(f"/admin/annotate/agreementreport/?campaign={campaign.pk}").content.decode()
    assert f'<input type="hidden" name="campaign" value="{campaign.pk}">' in page  # the recompute keeps it


def test_existing_pairs_and_batches_migrate_into_the_default_campaign(transactional_db):
    """The migration that adds campaigns puts every existing pair and batch into ``default`` (open to all)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("annotate", "0002_agreement_report")])
    old = executor.loader.project_state([("annotate", "0002_agreement_report")]).apps
    prompt = old.get_model("annotate", "Prompt").objects.create(text="old prompt", text_sha256="f" * 64)
    Video = old.get_model("annotate", "Video")
    a, b = (Video.objects.create(prompt=prompt, file=f"v/{s}.mp4", sha256=s * 64) for s in "ab")
    batch = old.get_model("annotate", "Batch").objects.create(name="old batch")
    old.get_model("annotate", "Pair").objects.create(prompt=prompt, video_a=a, video_b=b, batch=batch)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    pair = Pair.objects.get(prompt__text="old prompt")
    assert pair.campaign.slug == "default" and pair.batch.campaign.slug == "default"
    assert pair.campaign.open_to_all_accounts
