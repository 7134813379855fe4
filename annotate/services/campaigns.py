"""Campaigns (docs/architecture.md §11): who may judge, the external link, qualification with feedback, the
rolling gold floor, the quota and the participants' report.

A person's way through a campaign is their ``CampaignMember.status``: ``new`` (reading the guidelines) →
``qualifying`` (the qualification pairs, each followed by the reference answer) → ``active`` (judging; gold
stays mixed in) or ``failed``; an active person whose rolling gold accuracy falls below the floor is
``paused`` until staff re-admit them. Reaching the quota ends their work with the completion code.
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone

from alignment.labels import DIMENSIONS
from annotate.models import DEFAULT_CAMPAIGN_SLUG, Assignment, Campaign, CampaignMember, Judgment
from annotate.rows import from_row, select_list

Status = CampaignMember.Status
EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")


class CampaignError(Exception):
    """A refusal with a page of its own: ``title`` and ``message`` are shown to the person, ``status`` is HTTP."""

    status = 403

    def __init__(self, title: str, message: str, status: int | None = None):
        super().__init__(message)
        self.title = title
        self.message = message
        if status is not None:
            self.status = status


def default_campaign() -> Campaign:
    campaign, _ = Campaign.objects.get_or_create(
        slug=DEFAULT_CAMPAIGN_SLUG, defaults={"name": "Default", "open_to_all_accounts": True}
    )
    return campaign


# --- who may judge -----------------------------------------------------------------------------------------------


def campaign_closed_reason(campaign: Campaign, *, now: datetime | None = None) -> str | None:
    """Why the campaign takes no one now (not open yet, closed), or None."""
    now = now or timezone.now()
    if campaign.opens_at and now < campaign.opens_at:
        return f"This study opens on {timezone.localtime(campaign.opens_at):%d %B %Y at %H:%M}."
    if campaign.closes_at and now >= campaign.closes_at:
        return "This study has closed. Thank you for your interest."
    return None


def account_may_join(user, campaign: Campaign) -> bool:
    """An account (not an external participant) may judge in ``campaign``: open to all, or in its group."""
    if campaign.open_to_all_accounts:
        return True
    return campaign.annotator_group_id is not None and user.groups.filter(pk=campaign.annotator_group_id).exists()


def campaigns_for(user):
    """The campaigns ``user`` belongs to: memberships, plus those open to their account (group or everyone);
    an external participant belongs only to the campaign they came through."""
    member_of = Q(members__user=user)
    if is_participant(user):
        return Campaign.objects.filter(member_of).distinct().order_by("pk")
    open_to = Q(open_to_all_accounts=True) | Q(annotator_group__in=user.groups.all())
    return Campaign.objects.filter(member_of | open_to).distinct().order_by("pk")


def is_participant(user) -> bool:
    """An external participant's account: made by a campaign link (a membership with an external id). The API's
    token authentication reads it with the token (``user.is_participant``)."""
    known = getattr(user, "is_participant", None)
    if isinstance(known, bool):
        return known
    return CampaignMember.objects.filter(user=user).exclude(external_id="").exists()


def membership(user, campaign: Campaign) -> CampaignMember:
    """The person's membership, made on first use for an account that may join; a refusal otherwise."""
    member = CampaignMember.objects.filter(campaign=campaign, user=user).first()
    if member is not None:
        return member
    if not account_may_join(user, campaign):
        raise CampaignError("Not in this study", f"Your account is not part of {campaign.name}.", status=403)
    status = Status.ACTIVE if _needs_nothing_first(campaign) else Status.NEW
    try:
        with transaction.atomic():
            return CampaignMember.objects.create(
                campaign=campaign,
                user=user,
                status=status,
                admitted_at=timezone.now() if status == Status.ACTIVE else None,
            )
    except IntegrityError:  # two first requests at once
        return CampaignMember.objects.get(campaign=campaign, user=user)


@functools.cache
def _membership_locked_sql(by_id: bool) -> str:
    users = get_user_model()._meta.db_table
    return (
        f"SELECT {select_list(CampaignMember, 'm')[1]}, {select_list(Campaign, 'c')[1]} "
        f'FROM "{CampaignMember._meta.db_table}" m JOIN "{Campaign._meta.db_table}" c ON c.id = m.campaign_id '
        f'JOIN "{users}" u ON u.id = m.user_id '
        f"WHERE m.user_id = %s AND {'c.id' if by_id else 'c.slug'} = %s FOR UPDATE OF u"
    )


def membership_locked(user, *, campaign_id: int | None = None, campaign__slug: str | None = None):
    """The person's existing membership with its campaign (by id, else by slug), locking the person's row (one
    next-pair at a time per person; the caller is inside ``transaction.atomic()``), or None: one prepared
    statement, no query compiled per request."""
    by_id = campaign_id is not None
    with connection.cursor() as cursor:
        cursor.execute(_membership_locked_sql(by_id), [user.pk, campaign_id if by_id else campaign__slug])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(select_list(CampaignMember, "m")[0])
    member = from_row(CampaignMember, row[:split])
    member.campaign = from_row(Campaign, row[split:])
    member.user = user
    return member


def _needs_nothing_first(campaign: Campaign) -> bool:
    """Accounts start judging at once in a campaign without guidelines or qualification (the default one)."""
    return not campaign.guidelines.strip() and not campaign.qualification_pairs.exists()


# --- the external link ---------------------------------------------------------------------------------------------


def participant_enter(campaign: Campaign, params: dict[str, str]) -> CampaignMember:
    """``/c/<slug>/?PROLIFIC_PID=…&STUDY_ID=…&SESSION_ID=…``: the participant's membership, created on the first
    visit (an account with no password) and found again by the same id afterwards, progress and all."""
    if not campaign.external_link:
        raise CampaignError("No external link", f"{campaign.name} is not open to participants by link.", status=404)
    external_id = (params.get(campaign.participant_param) or "").strip()
    if not external_id:
        raise CampaignError(
            "Missing participant id",
            f"The link lacks {campaign.participant_param}. Please open the study from the link you were given.",
            status=400,
        )
    if not EXTERNAL_ID.match(external_id):
        raise CampaignError(
            "Invalid participant id",
            f"{campaign.participant_param} must be 1 to 200 letters, digits or _.:@- characters.",
            status=400,
        )
    study = (params.get(campaign.study_param) or "")[:200] if campaign.study_param else ""
    session = (params.get(campaign.session_param) or "")[:200] if campaign.session_param else ""
    member = CampaignMember.objects.select_related("user").filter(campaign=campaign, external_id=external_id).first()
    if member is not None:  # coming back: the same account and progress, whatever the state of the campaign
        if session and session != member.session_id:
            member.session_id = session
            member.save(update_fields=["session_id"])
        return member
    closed = campaign_closed_reason(campaign)
    if closed:
        raise CampaignError("Study closed", closed, status=410)
    if campaign.max_participants is not None and campaign.members.exclude(external_id="").count() >= (
        campaign.max_participants
    ):
        raise CampaignError("Study full", "This study has all the participants it needs. Thank you!", status=410)
    User = get_user_model()
    try:
        with transaction.atomic():
            user = User(username=f"p-{campaign.pk}-{secrets.token_hex(6)}")
            user.set_unusable_password()
            user.save()
            at_once = _needs_nothing_first(campaign)
            return CampaignMember.objects.create(
                campaign=campaign,
                user=user,
                external_id=external_id,
                study_id=study,
                session_id=session,
                status=Status.ACTIVE if at_once else Status.NEW,
                admitted_at=timezone.now() if at_once else None,
            )
    except IntegrityError:  # the same id twice at once: the other request made it
        return CampaignMember.objects.select_related("user").get(campaign=campaign, external_id=external_id)


def guidelines_read(member: CampaignMember) -> CampaignMember:
    """The person read the guidelines: on to qualification, or straight to judging when there is none."""
    if member.status != Status.NEW:
        return member
    member.guidelines_read_at = timezone.now()
    if member.campaign.qualification_pairs.exists():
        member.status = Status.QUALIFYING
    else:
        member.status, member.admitted_at = Status.ACTIVE, timezone.now()
    member.save(update_fields=["guidelines_read_at", "status", "admitted_at"])
    return member


# --- qualification -------------------------------------------------------------------------------------------------


def qualification_progress(member: CampaignMember) -> dict:
    """{"done", "total"}: qualification pairs judged so far, of all."""
    pairs = member.campaign.qualification_pairs.values("pk")
    done = Judgment.objects.filter(annotator=member.user, pair__in=pairs).count()
    return {"done": done, "total": member.campaign.qualification_pairs.count()}


@dataclass(frozen=True)
class Feedback:
    """A qualification judgment next to the reference, in the person's screen terms (left / tie / right)."""

    rows: list[dict]  # {"dimension", "yours", "reference", "agrees"}
    reason: str
    progress: dict  # {"done", "total"} qualification pairs
    finished: bool  # the last qualification pair
    passed: bool | None  # when finished


def _screen(label: str, left_is_a: bool) -> str:
    return {"A": "left" if left_is_a else "right", "B": "right" if left_is_a else "left", "TIE": "tie"}[label]


def qualification_feedback(member: CampaignMember, judgment: Judgment) -> Feedback:
    """The reference answer for ``judgment`` (a qualification pair); on the last pair, the verdict: the share of
    pairs agreeing with the reference must reach the campaign's threshold in every dimension (a tie agrees with
    a tie only, as in the agreement statistics)."""
    from alignment.labels import DIMENSION_TITLES

    gold = judgment.pair.gold_labels or {}
    rows = [
        {
            "dimension": DIMENSION_TITLES[dim],
            "yours": _screen(getattr(judgment, dim), judgment.left_is_a),
            "reference": _screen(gold[dim], judgment.left_is_a) if dim in gold else None,
            "agrees": gold.get(dim) == getattr(judgment, dim),
        }
        for dim in DIMENSIONS
    ]
    progress = qualification_progress(member)
    finished = progress["done"] >= progress["total"]
    passed = None
    if finished and member.status == Status.QUALIFYING:
        passed = qualification_decide(member)
    return Feedback(rows=rows, reason=judgment.pair.gold_reason, progress=progress, finished=finished, passed=passed)


def qualification_scores(member: CampaignMember) -> dict[str, float]:
    judgments = Judgment.objects.filter(
        annotator=member.user, pair__in=member.campaign.qualification_pairs.all()
    ).select_related("pair")
    scores = {}
    for dim in DIMENSIONS:
        answered = [j for j in judgments if dim in (j.pair.gold_labels or {})]
        scores[dim] = (
            sum(getattr(j, dim) == j.pair.gold_labels[dim] for j in answered) / len(answered) if answered else 1.0
        )
    return scores


def qualification_decide(member: CampaignMember) -> bool:
    scores = qualification_scores(member)
    passed = all(score >= member.campaign.qualification_threshold for score in scores.values())
    member.qualification = {"agreement": scores, "passed": passed, "threshold": member.campaign.qualification_threshold}
    if passed:
        member.status, member.admitted_at = Status.ACTIVE, timezone.now()
    else:
        member.status = Status.FAILED
    member.save(update_fields=["qualification", "status", "admitted_at"])
    return passed


def member_readmit(member: CampaignMember, *, by) -> CampaignMember:
    """Staff re-admit a person who failed qualification or was paused: they judge again; the rolling gold
    accuracy starts afresh from now."""
    member.status, member.admitted_at = Status.ACTIVE, timezone.now()
    member.paused_at, member.paused_reason = None, f"re-admitted by {by} on {timezone.now():%Y-%m-%d %H:%M}"
    member.save(update_fields=["status", "admitted_at", "paused_at", "paused_reason"])
    return member


# --- the gold floor ------------------------------------------------------------------------------------------------


def recent_gold(member: CampaignMember, *, limit: int | None = None):
    """The person's gold judgments in this campaign since admission (qualification excluded), newest first."""
    judgments = (
        Judgment.objects.filter(annotator=member.user, pair__is_gold=True, pair__campaign=member.campaign)
        .exclude(pair__in=member.campaign.qualification_pairs.all())
        .select_related("pair__prompt")
        .order_by("-created_at", "-pk")
    )
    if member.admitted_at:
        judgments = judgments.filter(created_at__gte=member.admitted_at)
    return judgments[: limit or member.campaign.gold_window]


def gold_correct(judgment: Judgment) -> bool:
    """Every dimension with a reference label agrees with it."""
    gold = judgment.pair.gold_labels or {}
    return all(getattr(judgment, dim) == gold[dim] for dim in DIMENSIONS if dim in gold)


def gold_check(member: CampaignMember) -> bool:
    """After a gold judgment: pause the person when the accuracy of their last ``gold_window`` gold judgments
    (at least ``gold_min`` of them) is below the floor. Returns whether they were paused."""
    campaign = member.campaign
    window = list(recent_gold(member))
    if member.status != Status.ACTIVE or len(window) < max(1, campaign.gold_min):
        return False
    accuracy = sum(gold_correct(j) for j in window) / len(window)
    if accuracy >= campaign.gold_floor:
        return False
    member.status, member.paused_at = Status.PAUSED, timezone.now()
    member.paused_reason = (
        f"gold accuracy {accuracy:.0%} over the last {len(window)} gold pairs, below the floor of "
        f"{campaign.gold_floor:.0%}"
    )
    member.save(update_fields=["status", "paused_at", "paused_reason"])
    from annotate.services.assignment import assignments_expire

    assignments_expire(annotator=member.user)  # their open lease goes back to the queue
    return True


# --- the quota -----------------------------------------------------------------------------------------------------


def counted_judgments(member: CampaignMember):
    """Judgments that count toward the quota: the campaign's, qualification pairs excluded."""
    return Judgment.objects.filter(annotator=member.user, pair__campaign=member.campaign).exclude(
        pair__in=member.campaign.qualification_pairs.all()
    )


def quota_reached(member: CampaignMember) -> bool:
    quota = member.campaign.quota
    if quota is None:
        return False
    reached = counted_judgments(member).count() >= quota
    if reached and member.completed_at is None:
        member.completed_at = timezone.now()
        member.save(update_fields=["completed_at"])
    return reached


def completion_link(campaign: Campaign) -> str:
    """The campaign's redirect with ``{code}`` filled in (Prolific's links carry ``cc=<code>``)."""
    return campaign.completion_url.replace("{code}", campaign.completion_code)


# --- filters: statistics, snapshots and the dashboard by campaign -------------------------------------------------

NO_BATCH = 0  # a batch id no batch has: "the pairs of a campaign without batches" is no pairs, not every pair


def campaign_batch_ids(campaign: Campaign | None, batch_ids: list[int]) -> list[int]:
    """The batch filter of statistics and snapshots for a campaign: its batches (those of ``batch_ids`` when
    some are chosen too); ``batch_ids`` unchanged without a campaign. Every pair comes in a batch (an import, a
    generation job, the demo), so a campaign's pairs are its batches' pairs."""
    if campaign is None:
        return list(batch_ids)
    own = set(campaign.batches.values_list("pk", flat=True))
    chosen = sorted(own & set(batch_ids)) if batch_ids else sorted(own)
    return chosen or [NO_BATCH]


# --- the participants' report --------------------------------------------------------------------------------------

REPORT_COLUMNS = (
    "participant",
    "external_id",
    "study_id",
    "session_id",
    "status",
    "judgments",
    "qualification",
    "qualification_agreement",
    "gold_judgments",
    "gold_accuracy",
    "active_minutes",
    "first_activity",
    "last_activity",
    "completed_at",
)


def campaign_report(campaign: Campaign) -> list[dict]:
    """One row per person in the campaign (``REPORT_COLUMNS``): what they are paid by is ``active_minutes``, the
    sum of the active time the judging page measured for each of their judgments."""
    members = list(campaign.members.select_related("user").order_by("pk"))
    qualification = campaign.qualification_pairs.values("pk")
    totals = {
        row["annotator"]: row
        for row in Judgment.objects.filter(pair__campaign=campaign, annotator__in=[m.user_id for m in members])
        .values("annotator")
        .annotate(
            judgments=Count("pk", filter=~Q(pair__in=qualification)),
            active_ms=Sum("active_ms"),
            first=Min("created_at"),
            last=Max("created_at"),
        )
    }
    firsts = {
        row["annotator"]: row["first"]
        for row in Assignment.objects.filter(pair__campaign=campaign, annotator__in=[m.user_id for m in members])
        .values("annotator")
        .annotate(first=Min("leased_at"))
    }
    rows = []
    for member in members:
        total = totals.get(member.user_id, {})
        gold = [
            j
            for j in Judgment.objects.filter(annotator=member.user, pair__campaign=campaign, pair__is_gold=True)
            .exclude(pair__in=qualification)
            .select_related("pair")
        ]
        qualified = member.qualification.get("passed")
        first = min(filter(None, [firsts.get(member.user_id), total.get("first")]), default=None)
        rows.append(
            {
                "participant": member.user.username,
                "external_id": member.external_id,
                "study_id": member.study_id,
                "session_id": member.session_id,
                "status": member.status,
                "judgments": total.get("judgments", 0),
                "qualification": "" if qualified is None else ("passed" if qualified else "failed"),
                "qualification_agreement": " ".join(
                    f"{dim}={score:.2f}" for dim, score in member.qualification.get("agreement", {}).items()
                ),
                "gold_judgments": len(gold),
                "gold_accuracy": round(sum(gold_correct(j) for j in gold) / len(gold), 4) if gold else "",
                "active_minutes": round((total.get("active_ms") or 0) / 60_000, 2),
                "first_activity": first.isoformat() if first else "",
                "last_activity": total["last"].isoformat() if total.get("last") else "",
                "completed_at": member.completed_at.isoformat() if member.completed_at else "",
            }
        )
    return rows
