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
from annotate.rows import from_row

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


@dataclass(frozen=True)
class LeaseRow:
    """A lease as a client shows it, read by the statement that took it (no ORM objects)."""

    id: int
    pair_id: int
    left_is_a: bool
    expires_at: datetime
    video_a_id: int
    video_b_id: int
    prompt: str

    @property
    def sides(self) -> tuple[int, int]:
        """(left, right) video ids as the annotator sees them."""
        return (self.video_a_id, self.video_b_id) if self.left_is_a else (self.video_b_id, self.video_a_id)


_A, _P, _PR = Assignment._meta.db_table, Pair._meta.db_table, "annotate_prompt"

# The annotator's current lease in the campaign, or a new one on the best open pair: chosen, counted in
# ``filled`` and leased in one statement (docs/architecture.md §3). The caller holds the annotator's row lock,
# so a double click cannot take two leases; the pair is locked with SKIP LOCKED, so concurrent annotators take
# different pairs instead of queueing; ``filled < overlap`` under that lock keeps the check constraint.
# ``{gold}`` is empty, or (a gold draw) a CTE ``gold`` taking one of the campaign's open gold pairs the person has
# not seen, at random (gold pairs go to everyone: no overlap); the regular pick then runs only if it found none,
# and ``pick`` is whichever found one.
_LEASE_SQL = f"""
WITH current AS (
    SELECT a.id, a.pair_id, a.left_is_a, a.expires_at FROM {_A} a JOIN {_P} p ON p.id = a.pair_id
    WHERE a.annotator_id = %(user)s AND a.state = 'active' AND a.expires_at > %(now)s AND p.campaign_id = %(campaign)s
    ORDER BY a.id LIMIT 1
){{gold}}, {{regular}} AS (
    SELECT p.id FROM {_P} p
    WHERE NOT EXISTS (SELECT 1 FROM current){{no_gold}}
      AND p.campaign_id = %(campaign)s AND p.status = 'open' AND NOT p.is_gold AND p.filled < p.overlap
      AND NOT EXISTS (SELECT 1 FROM {_A} x WHERE x.pair_id = p.id AND x.annotator_id = %(user)s)
    ORDER BY p.priority DESC, p.filled DESC, p.id
    LIMIT 1 FOR UPDATE SKIP LOCKED
){{pick}}, bumped AS (
    UPDATE {_P} p SET filled = p.filled + 1 FROM pick WHERE p.id = pick.id RETURNING p.id
), leased AS (
    INSERT INTO {_A} (pair_id, annotator_id, left_is_a, leased_at, expires_at, state, skip_reason)
    SELECT id, %(user)s, %(left_is_a)s, %(now)s, %(expires)s, 'active', '' FROM bumped
    RETURNING id, pair_id, left_is_a, expires_at
), chosen AS (
    SELECT * FROM leased UNION ALL SELECT * FROM current
)
SELECT c.id, c.pair_id, c.left_is_a, c.expires_at, p.video_a_id, p.video_b_id, pr.text
FROM chosen c JOIN {_P} p ON p.id = c.pair_id JOIN {_PR} pr ON pr.id = p.prompt_id
"""
_LEASE_REGULAR = _LEASE_SQL.format(gold="", regular="pick", no_gold="", pick="")
_LEASE_GOLD = _LEASE_SQL.format(
    gold=f""", gold AS (
    SELECT p.id FROM {_P} p
    WHERE NOT EXISTS (SELECT 1 FROM current)
      AND p.campaign_id = %(campaign)s AND p.status = 'open' AND p.is_gold
      AND NOT EXISTS (SELECT 1 FROM {_A} x WHERE x.pair_id = p.id AND x.annotator_id = %(user)s)
    ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED
)""",
    regular="regular",
    no_gold=" AND NOT EXISTS (SELECT 1 FROM gold)",
    pick=", pick AS (SELECT id FROM gold UNION ALL SELECT id FROM regular)",
)


def lease_take(
    *, annotator_id: int, campaign_id: int, gold: bool = False, rng: random.Random | None = None
) -> LeaseRow | None:
    """The annotator's current lease in the campaign or a new one on its best open non-gold pair (``gold``: on one
    of its open gold pairs the person has not judged, at random, if there is one), in one statement; None when
    nothing is left. Call it inside ``transaction.atomic()`` holding the annotator's row
    lock (``annotator_lock``). Expired leases are swept (their slots freed) only when nothing is found, then it
    tries once more: the beat's ``sweep_leases`` frees them every minute otherwise."""
    rng = rng or random
    for attempt in range(2):
        now = timezone.now()
        params = {
            "user": annotator_id,
            "campaign": campaign_id,
            "now": now,
            "expires": now + _ttl(),
            "left_is_a": rng.random() < 0.5,
        }
        with connection.cursor() as cursor:
            cursor.execute(_LEASE_GOLD if gold else _LEASE_REGULAR, params)
            row = cursor.fetchone()
        if row is not None:
            return LeaseRow(*row)
        if attempt == 0 and not assignments_expire(now=now):
            return None
    return None


def annotator_lock(annotator) -> None:
    """Serialise next-pair requests of one annotator (the caller is inside ``transaction.atomic()``)."""
    get_user_model().objects.select_for_update().filter(pk=annotator.pk).values_list("pk").get()


def assignment_next(
    *,
    annotator,
    campaign=None,
    qualification: bool = False,
    gold: bool | None = None,
    rng: random.Random | None = None,
) -> Assignment | None:
    """The annotator's current lease, or a new one on the best open pair; None when nothing is left.

    ``campaign``: only its pairs (gold included); ``qualification``: its qualification pairs, in order;
    ``gold``: whether a new lease goes to a gold pair (None: drawn at ``GOLD_RATE``). A campaign's leases,
    gold draws included, are ``lease_take``'s one statement; qualification and campaign-less calls take the ORM
    path below."""
    rng = rng or random
    if gold is None:
        gold = rng.random() < settings.VIDPREF["GOLD_RATE"]
    if campaign is not None and not qualification:
        with transaction.atomic():
            annotator_lock(annotator)
            row = lease_take(annotator_id=annotator.pk, campaign_id=campaign.pk, gold=gold, rng=rng)
        return None if row is None else _lease_queryset().get(pk=row.id)
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
        annotator_lock(annotator)
        active = leases.first()
        if active is not None:
            return active
        pair = None
        if qualification:
            pair = _pick_pair(annotator=annotator, gold=True, campaign=campaign, qualification=True)
        else:
            if gold:
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


_J = Judgment._meta.db_table
_JUDGMENT_COLUMNS = [f.column for f in Judgment._meta.concrete_fields]

# The common submission (an active lease of this annotator) in one statement: the lease becomes submitted, the
# pair counts the judgment (complete at k, gold pairs never), the judgment is stored with its labels mapped from
# screen sides to A/B by the lease's ``left_is_a``. One statement is one transaction; the lease's row lock makes
# a concurrent repeat wait and then find it submitted. Every other case (a repeat, an expired or skipped lease, a
# stranger's) finds no row here and takes ``judgment_submit``'s ORM path.
_SUBMIT_SQL = f"""
WITH lease AS (
    UPDATE {_A} SET state = 'submitted'
    WHERE id = %(id)s AND annotator_id = %(user)s AND state = 'active'
    RETURNING id, pair_id, left_is_a
), counted AS (
    UPDATE {_P} p SET judgment_count = p.judgment_count + 1,
        status = CASE WHEN NOT p.is_gold AND p.judgment_count + 1 >= p.overlap THEN 'complete' ELSE p.status END
    FROM lease WHERE p.id = lease.pair_id
    RETURNING p.id, p.is_gold, p.campaign_id, p.status
), stored AS (
    INSERT INTO {_J} (pair_id, annotator_id, assignment_id, vq, mq, ta, left_is_a, duration_ms, watched_ms,
                      active_ms, comment, flag, created_at)
    SELECT lease.pair_id, %(user)s, lease.id,
        CASE WHEN lease.left_is_a THEN %(vq_a)s ELSE %(vq_b)s END,
        CASE WHEN lease.left_is_a THEN %(mq_a)s ELSE %(mq_b)s END,
        CASE WHEN lease.left_is_a THEN %(ta_a)s ELSE %(ta_b)s END,
        lease.left_is_a, %(duration_ms)s, %(watched_ms)s, %(active_ms)s, %(comment)s, %(flag)s, %(now)s
    FROM lease
    RETURNING {", ".join(_JUDGMENT_COLUMNS)}
)
SELECT stored.*, counted.is_gold, counted.campaign_id, counted.status FROM stored, counted
"""


def _submit_statement(*, assignment_id: int, annotator, labels: ScreenLabels, **fields) -> Judgment | None:
    """``_SUBMIT_SQL``: the stored judgment (its ``pair`` a partial Pair: id, is_gold, campaign_id, status), or
    None when the lease is not an active one of this annotator."""
    as_a, as_b = labels.to_pair_labels(left_is_a=True), labels.to_pair_labels(left_is_a=False)
    params = {"id": assignment_id, "user": annotator.pk, "now": timezone.now(), **fields}
    params.update({f"{dim}_a": as_a[dim] for dim in DIMENSIONS})
    params.update({f"{dim}_b": as_b[dim] for dim in DIMENSIONS})
    with connection.cursor() as cursor:
        cursor.execute(_SUBMIT_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    n = len(_JUDGMENT_COLUMNS)
    judgment = from_row(Judgment, row[:n])
    is_gold, campaign_id, status = row[n:]
    # the rest of the pair's fields load on first access (deferred), as any partial model instance does
    known = {"id": judgment.pair_id, "is_gold": is_gold, "campaign_id": campaign_id, "status": status}
    names = [f.attname for f in Pair._meta.concrete_fields if f.attname in known]  # from_db wants the model's order
    judgment.pair = Pair.from_db(connection.alias, names, [known[name] for name in names])
    return judgment


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
    The common case (an active lease) is ``_SUBMIT_SQL``'s one statement; the others run below.
    """
    for dim in DIMENSIONS:
        if getattr(labels, dim) not in SCREEN_CHOICES:
            raise AssignmentError(f"{dim}: {getattr(labels, dim)!r} is not one of left, right, tie")
    if flag not in Judgment.Flag.values:
        raise AssignmentError(f"flag: {flag!r} is not one of {', '.join(v for v in Judgment.Flag.values if v)}")
    fields = {
        "comment": comment[:2000],
        "flag": flag,
        "duration_ms": duration_ms,
        "watched_ms": watched_ms,
        "active_ms": active_ms,
    }
    judgment = _submit_statement(assignment_id=assignment_id, annotator=annotator, labels=labels, **fields)
    if judgment is not None:
        return judgment, True
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
            **fields,
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
