"""Reads. Hot paths state their query counts in tests (docs/contributing.md §4)."""

from __future__ import annotations

from django.db.models import Count, Q
from django.utils import timezone

from annotate.models import Assignment, Judgment, Pair, Video


def annotator_progress(*, annotator) -> dict:
    """Judgments today and in all, in one query."""
    start_of_day = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return Judgment.objects.filter(annotator=annotator).aggregate(
        total=Count("id"), today=Count("id", filter=Q(created_at__gte=start_of_day))
    )


def annotator_history(*, annotator, limit: int = 200):
    return Judgment.objects.filter(annotator=annotator).select_related("pair__prompt").order_by("-created_at")[:limit]


def video_visible_to(*, video_id: int, user) -> Video | None:
    """The video if ``user`` may watch it: staff always, an annotator only while it is in their current
    (active) lease — not pairs they judged or skipped, and never anyone else's — or in a worked example of a
    campaign they are in."""
    if user.is_staff:
        return Video.objects.filter(pk=video_id).first()
    own_pairs = Assignment.objects.filter(annotator=user, state=Assignment.State.ACTIVE).values("pair_id")
    visible = Pair.objects.filter(Q(video_a_id=video_id) | Q(video_b_id=video_id), pk__in=own_pairs)
    if not visible.exists() and not _in_examples_of_own_campaigns(video_id=video_id, user=user):
        return None
    return Video.objects.filter(pk=video_id).first()


def _in_examples_of_own_campaigns(*, video_id: int, user) -> bool:
    """A video of a worked example in the guidelines of a campaign the person is in."""
    from annotate.models import CampaignExample

    return CampaignExample.objects.filter(
        Q(pair__video_a_id=video_id) | Q(pair__video_b_id=video_id), campaign__members__user=user
    ).exists()


def lease_sides(lease: Assignment) -> tuple[Video, Video]:
    """(left, right) videos of a lease as the annotator sees them."""
    pair = lease.pair
    return (pair.video_a, pair.video_b) if lease.left_is_a else (pair.video_b, pair.video_a)


def agreement_report_latest(*, filters: dict):
    """The newest stored agreement report for these canonical filters (``services.stats.report_filters``)."""
    from annotate.models import AgreementReport
    from annotate.services.stats import filters_key

    return AgreementReport.objects.filter(filters_key=filters_key(filters)).order_by("-computed_at").first()


def annotator_judgments_vs_consensus(*, annotator, limit: int = 300) -> list[dict]:
    """An annotator's newest judgments next to each pair's consensus (the same rule as the export), in A/B
    terms, with ``agrees`` per dimension. One query."""
    from django.db import connection

    from annotate.consensus import ConsensusFilters, consensus_sql

    consensus, params = consensus_sql(ConsensusFilters(include_flagged=True, include_gold=True))
    text = {1: "A", -1: "B", 0: "TIE", None: None}
    sql = f"""
        SELECT j.id, j.pair_id, pr.text, j.created_at, j.vq, j.mq, j.ta, j.left_is_a, j.flag, j.duration_ms,
               c.vq, c.mq, c.ta, c.n_judgments
        FROM annotate_judgment j
        JOIN annotate_pair p ON p.id = j.pair_id
        JOIN annotate_prompt pr ON pr.id = p.prompt_id
        LEFT JOIN ({consensus}) c ON c.pair_id = j.pair_id
        WHERE j.annotator_id = %(annotator)s
        ORDER BY j.created_at DESC LIMIT %(limit)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {**params, "annotator": annotator.pk, "limit": limit})
        rows = cursor.fetchall()
    result = []
    for (
        judgment_id,
        pair_id,
        prompt,
        created_at,
        vq,
        mq,
        ta,
        left_is_a,
        flag,
        duration_ms,
        c_vq,
        c_mq,
        c_ta,
        n_judgments,
    ) in rows:
        own = {"vq": vq, "mq": mq, "ta": ta}
        agreed = {"vq": text[c_vq], "mq": text[c_mq], "ta": text[c_ta]}
        result.append(
            {
                "judgment_id": judgment_id,
                "pair_id": pair_id,
                "prompt": prompt,
                "created_at": created_at,
                "left_is_a": left_is_a,
                "flag": flag,
                "duration_ms": duration_ms,
                "n_judgments": n_judgments or 0,
                "dimensions": [
                    {
                        "name": dim.upper(),
                        "own": own[dim],
                        "consensus": agreed[dim],
                        "agrees": agreed[dim] is not None and own[dim] == agreed[dim],
                    }
                    for dim in own
                ],
            }
        )
    return result
