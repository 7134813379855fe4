"""Reads. Hot paths state their query counts in tests (STYLE.md)."""

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
    return (
        Judgment.objects.filter(annotator=annotator)
        .select_related("pair__prompt")
        .order_by("-created_at")[:limit]
    )


def video_visible_to(*, video_id: int, user) -> Video | None:
    """The video if ``user`` may watch it: staff always, an annotator only within their own assignments."""
    if user.is_staff:
        return Video.objects.filter(pk=video_id).first()
    own_pairs = Assignment.objects.filter(annotator=user).values("pair_id")
    visible = Pair.objects.filter(Q(video_a_id=video_id) | Q(video_b_id=video_id), pk__in=own_pairs)
    if not visible.exists():
        return None
    return Video.objects.filter(pk=video_id).first()


def lease_sides(lease: Assignment) -> tuple[Video, Video]:
    """(left, right) videos of a lease as the annotator sees them."""
    pair = lease.pair
    return (pair.video_a, pair.video_b) if lease.left_is_a else (pair.video_b, pair.video_a)
