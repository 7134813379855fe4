"""Leases and judgments: fair, concurrent, never over-collected (docs/architecture.md §3).

A pair's ``filled`` counts its active leases plus its submitted judgments; every function here that
changes a lease changes ``filled`` in the same transaction, under the pair's row lock, and the check
constraint ``pair_never_over_collected`` makes k + 1 impossible even if a bug slipped through.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.db.models import Case, Exists, F, OuterRef, Value, When
from django.utils import timezone

from alignment.labels import DIMENSIONS
from annotate.models import Assignment, Judgment, Label, Pair

logger = logging.getLogger(__name__)

SCREEN_CHOICES = ("left", "right", "tie")


class AssignmentError(Exception):
    """Base for refusals; ``status`` is the HTTP status an API answers with."""

    status = 400


class AssignmentNotFound(AssignmentError):
    status = 404


class AssignmentConflict(AssignmentError):
    status = 409


def _ttl():
    return settings.VIDPREF["LEASE_TTL"]


def _lease_queryset():
    return Assignment.objects.select_related("pair__prompt", "pair__video_a", "pair__video_b")


def assignments_expire(*, now: datetime | None = None, annotator=None) -> int:
    """Free the slots of leases that ran out — or, given ``annotator``, of all their active leases (they
    were disabled). Cheap when nothing expired (a partial index on expiry).

    Rows another transaction holds are skipped rather than waited for: the next sweep takes them.
    """
    now = now or timezone.now()
    whose = "annotator_id = %s" if annotator is not None else "expires_at < %s"
    sql = f"""
        WITH expired AS (
            UPDATE {Assignment._meta.db_table} SET state = 'expired'
            WHERE id IN (
                SELECT id FROM {Assignment._meta.db_table}
                WHERE state = 'active' AND {whose}
                ORDER BY id FOR UPDATE SKIP LOCKED
            )
            RETURNING pair_id
        ), freed AS (SELECT pair_id, count(*) AS n FROM expired GROUP BY pair_id)
        UPDATE {Pair._meta.db_table} AS p SET filled = p.filled - freed.n
        FROM freed WHERE p.id = freed.pair_id
        RETURNING freed.n
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [annotator.pk if annotator is not None else now])
            return sum(row[0] for row in cursor.fetchall())
    except DatabaseError:  # a deadlock with a concurrent sweep: harmless, the next sweep retries
        logger.warning("lease sweep deferred after a lock conflict", exc_info=True)
        return 0


def _pick_pair(*, annotator, gold: bool, campaign=None, qualification: bool = False):
    never_assigned = ~Exists(Assignment.objects.filter(pair=OuterRef("pk"), annotator=annotator))
    candidates = (
        Pair.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("prompt", "video_a", "video_b")
        .filter(never_assigned)
    )
    if qualification:
        # The campaign's qualification pairs, in a fixed order (everyone sees the same test).
        return candidates.filter(qualification_for=campaign).order_by("pk").first()
    if campaign is not None:
        candidates = candidates.filter(campaign=campaign)
    if gold:
        # Gold pairs are shown to everyone (no k), in random order.
        return candidates.filter(is_gold=True, status=Pair.Status.OPEN).order_by("?").first()
    return (
        candidates.filter(status=Pair.Status.OPEN, is_gold=False, filled__lt=F("overlap"))
        .order_by(F("priority").desc(), F("filled").desc(), F("id").asc())
        .first()
    )


def assignment_next(
    *, annotator, campaign=None, qualification: bool = False, rng: random.Random | None = None
) -> Assignment | None:
    """The annotator's current lease, or a new one on the best open pair; None when nothing is left.

    ``campaign``: only its pairs (gold included); ``qualification``: its qualification pairs, in order."""
    rng = rng or random
    now = timezone.now()
    leases = _lease_queryset().filter(annotator=annotator, state=Assignment.State.ACTIVE, expires_at__gt=now)
    if campaign is not None:
        leases = leases.filter(pair__campaign=campaign)
    if qualification:
        leases = leases.filter(pair__qualification_for=campaign)
    active = leases.first()
    if active is not None:
        return active
    assignments_expire(now=now)
    with transaction.atomic():
        # One next-pair at a time per annotator: a double click must not take two leases.
        get_user_model().objects.select_for_update().filter(pk=annotator.pk).values_list("pk").get()
        active = leases.first()
        if active is not None:
            return active
        pair = None
        if qualification:
            pair = _pick_pair(annotator=annotator, gold=True, campaign=campaign, qualification=True)
        else:
            if rng.random() < settings.VIDPREF["GOLD_RATE"]:
                pair = _pick_pair(annotator=annotator, gold=True, campaign=campaign)
            if pair is None:
                pair = _pick_pair(annotator=annotator, gold=False, campaign=campaign)
        if pair is None:
            return None
        lease = Assignment.objects.create(
            pair=pair,
            annotator=annotator,
            left_is_a=rng.random() < 0.5,
            leased_at=now,
            expires_at=now + _ttl(),
        )
        Pair.objects.filter(pk=pair.pk).update(filled=F("filled") + 1)
        pair.filled += 1
    return lease


def _locked_lease(*, assignment_id: int, annotator) -> Assignment:
    lease = (
        Assignment.objects.select_for_update(of=("self", "pair"))
        .select_related("pair")
        .filter(pk=assignment_id, annotator=annotator)
        .first()
    )
    if lease is None:
        raise AssignmentNotFound(f"assignment {assignment_id} is not yours or does not exist")
    return lease


def _retake_slot(lease: Assignment) -> None:
    """Revive an expired lease if its slot is still free; refuse if others filled the pair meanwhile."""
    pair = lease.pair
    if not pair.is_gold and pair.filled >= pair.overlap:
        raise AssignmentConflict(
            f"assignment {lease.pk} expired and pair {pair.pk} has since been given to other annotators; "
            "ask for the next pair"
        )
    pair.filled += 1
    Pair.objects.filter(pk=pair.pk).update(filled=F("filled") + 1)
    lease.state = Assignment.State.ACTIVE


def assignment_heartbeat(*, assignment_id: int, annotator) -> Assignment:
    """Keep a lease alive while its page is open."""
    with transaction.atomic():
        lease = _locked_lease(assignment_id=assignment_id, annotator=annotator)
        if lease.state == Assignment.State.EXPIRED:
            _retake_slot(lease)
        elif lease.state != Assignment.State.ACTIVE:
            raise AssignmentConflict(f"assignment {lease.pk} is {lease.state}; nothing to keep alive")
        lease.expires_at = timezone.now() + _ttl()
        lease.save(update_fields=["state", "expires_at"])
    return lease


def assignment_skip(*, assignment_id: int, annotator, reason: str = "") -> Assignment:
    """Give the pair back: its slot goes to someone else, and this annotator will not see it again."""
    with transaction.atomic():
        lease = _locked_lease(assignment_id=assignment_id, annotator=annotator)
        if lease.state == Assignment.State.SKIPPED:
            return lease
        if lease.state == Assignment.State.SUBMITTED:
            raise AssignmentConflict(f"assignment {lease.pk} was already judged; it cannot be skipped")
        if lease.state == Assignment.State.ACTIVE:
            Pair.objects.filter(pk=lease.pair_id).update(filled=F("filled") - 1)
        lease.state = Assignment.State.SKIPPED
        lease.skip_reason = reason[:500]
        lease.save(update_fields=["state", "skip_reason"])
    return lease


@dataclass(frozen=True)
class ScreenLabels:
    vq: str
    mq: str
    ta: str

    def to_pair_labels(self, *, left_is_a: bool) -> dict[str, str]:
        left, right = (Label.A, Label.B) if left_is_a else (Label.B, Label.A)
        mapping = {"left": left, "right": right, "tie": Label.TIE}
        return {dim: mapping[getattr(self, dim)].value for dim in DIMENSIONS}


def screen_labels(judgment: Judgment) -> dict[str, str]:
    """A stored judgment in the screen terms of its lease (for answering a repeated submission)."""
    left, right = ("A", "B") if judgment.left_is_a else ("B", "A")
    mapping = {left: "left", right: "right", "TIE": "tie"}
    return {dim: mapping[getattr(judgment, dim)] for dim in DIMENSIONS}


def judgment_submit(
    *,
    assignment_id: int,
    annotator,
    labels: ScreenLabels,
    comment: str = "",
    flag: str = "",
    duration_ms: int | None = None,
    watched_ms: int | None = None,
    active_ms: int | None = None,
) -> tuple[Judgment, bool]:
    """Store a judgment for the annotator's own lease. Returns (judgment, created).

    A repeated submission (double click, client retry) returns the first judgment and creates nothing.
    """
    for dim in DIMENSIONS:
        if getattr(labels, dim) not in SCREEN_CHOICES:
            raise AssignmentError(f"{dim}: {getattr(labels, dim)!r} is not one of left, right, tie")
    if flag not in Judgment.Flag.values:
        raise AssignmentError(f"flag: {flag!r} is not one of {', '.join(v for v in Judgment.Flag.values if v)}")
    with transaction.atomic():
        lease = _locked_lease(assignment_id=assignment_id, annotator=annotator)
        if lease.state == Assignment.State.SUBMITTED:
            return Judgment.objects.get(assignment=lease), False
        if lease.state == Assignment.State.SKIPPED:
            raise AssignmentConflict(f"assignment {lease.pk} was skipped; it cannot be judged")
        if lease.state == Assignment.State.EXPIRED:
            _retake_slot(lease)
        pair = lease.pair
        judgment = Judgment.objects.create(
            pair=pair,
            annotator=annotator,
            assignment=lease,
            left_is_a=lease.left_is_a,
            comment=comment[:2000],
            flag=flag,
            duration_ms=duration_ms,
            watched_ms=watched_ms,
            active_ms=active_ms,
            **labels.to_pair_labels(left_is_a=lease.left_is_a),
        )
        lease.state = Assignment.State.SUBMITTED
        lease.save(update_fields=["state"])
        completes = not pair.is_gold and pair.judgment_count + 1 >= pair.overlap
        Pair.objects.filter(pk=pair.pk).update(
            judgment_count=F("judgment_count") + 1,
            status=Pair.Status.COMPLETE if completes else pair.status,
        )
    return judgment, True


def undo_window():
    return settings.VIDPREF["UNDO_WINDOW"]


def judgment_undoable(*, annotator, now: datetime | None = None) -> Judgment | None:
    """The annotator's last judgment if it can still be taken back: within ``UNDO_WINDOW`` of its submission,
    not on a qualification pair (whose reference answer was shown), and with its lease not superseded."""
    now = now or timezone.now()
    last = Judgment.objects.filter(annotator=annotator).select_related("pair").order_by("-created_at", "-pk").first()
    if last is None or now - last.created_at > undo_window():
        return None
    if last.pair.qualification_for.exists():
        return None
    return last


def judgment_undo(*, assignment_id: int, annotator) -> Assignment:
    """Take back the last judgment: it is deleted and its lease is active again (same sides), so the pair comes
    back to this annotator; a pair it completed is open again, and the lease they were given next is released.
    Refused past the window or for an older one."""
    with transaction.atomic():
        lease = _locked_lease(assignment_id=assignment_id, annotator=annotator)
        undoable = judgment_undoable(annotator=annotator)
        if lease.state != Assignment.State.SUBMITTED or undoable is None or undoable.assignment_id != lease.pk:
            raise AssignmentConflict(
                f"assignment {lease.pk}: only your last judgment can be undone, within "
                f"{int(undo_window().total_seconds() // 60)} minutes of submitting it"
            )
        undoable.delete()
        # the pair shown after it goes back to the queue: one active lease per annotator, this one
        for other in Assignment.objects.select_for_update().filter(annotator=annotator, state=Assignment.State.ACTIVE):
            other.state = Assignment.State.EXPIRED
            other.save(update_fields=["state"])
            Pair.objects.filter(pk=other.pair_id).update(filled=F("filled") - 1)
        now = timezone.now()
        lease.state, lease.expires_at, lease.leased_at = Assignment.State.ACTIVE, now + _ttl(), now
        lease.save(update_fields=["state", "expires_at", "leased_at"])
        # the lease holds its slot again (filled unchanged); the judgment is gone
        Pair.objects.filter(pk=lease.pair_id).update(
            judgment_count=F("judgment_count") - 1,
            status=Case(When(status=Pair.Status.COMPLETE, then=Value(Pair.Status.OPEN)), default=F("status")),
        )
    return lease
