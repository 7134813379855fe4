"""Writes around the agreement statistics: store a fresh report, and the admins' responses to it
(disable an annotator, keep their judgments out of consensus, ask for more judgments on contested pairs)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.db.models import F

from alignment.labels import DIMENSIONS
from annotate.consensus import EXCLUDED_GROUP, ConsensusFilters, consensus_sql
from annotate.models import AgreementReport, Pair
from annotate.services.assignment import assignments_expire


def report_filters(*, batch_ids=(), judged_from: datetime | None = None, judged_until: datetime | None = None) -> dict:
    """The canonical form of a report's filters (what is stored and hashed)."""
    return {
        "batch_ids": sorted(int(batch) for batch in batch_ids),
        "judged_from": judged_from.isoformat() if judged_from else None,
        "judged_until": judged_until.isoformat() if judged_until else None,
    }


def filters_key(filters: dict) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()


def agreement_report_refresh(
    *, batch_ids=(), judged_from: datetime | None = None, judged_until: datetime | None = None
) -> AgreementReport:
    """Compute the statistics for these filters and store them; older reports for the same filters go."""
    from annotate.stats import agreement_report

    filters = report_filters(batch_ids=batch_ids, judged_from=judged_from, judged_until=judged_until)
    report = agreement_report(batch_ids=tuple(filters["batch_ids"]), judged_from=judged_from, judged_until=judged_until)
    key = filters_key(filters)
    with transaction.atomic():
        stored = AgreementReport.objects.create(
            filters_key=key, filters=filters, report=report, seconds=report.get("seconds", 0.0)
        )
        AgreementReport.objects.filter(filters_key=key).exclude(pk=stored.pk).delete()
    return stored


def annotator_set_active(*, user_id: int, active: bool) -> None:
    """Disable (or re-enable) an annotator: they can no longer log in or take pairs, and their judgments
    leave consensus and exports. Their active leases end now, so their slots free up."""
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user_id)
        if user.is_staff and not active:
            raise ValueError(f"{user.username} is staff; disable staff accounts in the user admin, not here")
        user.is_active = active
        user.save(update_fields=["is_active"])
    if not active:
        assignments_expire(annotator=user)


def annotator_set_excluded(*, user_id: int, excluded: bool) -> None:
    """Keep an annotator's judgments out of consensus, the statistics and training snapshots (or let them back
    in). They can go on annotating; nothing is deleted."""
    user = get_user_model().objects.get(pk=user_id)
    group, _ = Group.objects.get_or_create(name=EXCLUDED_GROUP)
    if excluded:
        group.user_set.add(user)
    else:
        group.user_set.remove(user)


def pairs_request_more_judgments(*, below_agreement: float, extra: int = 2, batch_ids=()) -> int:
    """Raise k by ``extra`` on every non-gold pair whose consensus on some dimension is backed by less than
    ``below_agreement`` of its judgments, and reopen it. Returns how many pairs."""
    if not 0 < below_agreement <= 1:
        raise ValueError(f"below_agreement={below_agreement}: a share between 0 and 1")
    if not 1 <= extra <= 20:
        raise ValueError(f"extra={extra}: between 1 and 20 more judgments")
    consensus, params = consensus_sql(ConsensusFilters(batch_ids=tuple(batch_ids), include_flagged=True))
    contested = " OR ".join(f"coalesce(c.agreement_{dim}, 0) < %(below)s" for dim in DIMENSIONS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT c.pair_id FROM ({consensus}) c WHERE {contested}", {**params, "below": below_agreement})
        pair_ids = [row[0] for row in cursor.fetchall()]
        return (
            Pair.objects.filter(pk__in=pair_ids, is_gold=False)
            .exclude(status=Pair.Status.RETIRED)
            .update(overlap=F("overlap") + extra, status=Pair.Status.OPEN)
        )


RECOMPUTE_TASK = "workers.tasks.default.recompute_agreement"


class BrokerUnavailable(Exception):
    """The task broker cannot be reached; the message says what still happens without it."""


def agreement_report_request(*, filters: dict) -> None:
    """Queue a recompute for these (canonical) filters on the ``default`` queue. Sent by name: ``annotate``
    does not import ``workers`` (docs/architecture.md §1). Sent at once (it writes no row a worker must see), so a
    broker that is down is reported to the caller as ``BrokerUnavailable`` instead of failing the request later."""
    from celery import current_app
    from kombu.exceptions import OperationalError as BrokerError

    try:
        current_app.send_task(RECOMPUTE_TASK, kwargs={"filters": filters})
    except (BrokerError, OSError) as exc:
        raise BrokerUnavailable(
            f"the task broker is unreachable ({type(exc).__name__}), so no recompute was queued; beat refreshes "
            "the statistics every VIDPREF_STATS_EVERY_MIN minutes once it is back, or ask again then"
        ) from exc
