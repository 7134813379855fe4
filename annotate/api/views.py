"""JSON over the same services the htmx pages use; nothing here the pages lack, or the reverse."""

import random

from django.conf import settings
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.api.serializers import (
    ErrorSerializer,
    HeartbeatSerializer,
    JudgmentInSerializer,
    JudgmentOutSerializer,
    LeaseSerializer,
    SkipSerializer,
)
from annotate.models import DEFAULT_CAMPAIGN_SLUG as DEFAULT_SLUG
from annotate.services import assignment as assignments


def _refusal(exc: assignments.AssignmentError) -> Response:
    return Response({"detail": str(exc)}, status=exc.status)


def _judgment_out(judgment) -> dict:
    """A judgment as ``JudgmentOutSerializer`` describes it (built directly: the hot path skips a serializer)."""
    return {
        "id": judgment.pk,
        "assignment": judgment.assignment_id,
        **assignments.screen_labels(judgment),
        "comment": judgment.comment,
        "flag": judgment.flag,
        "created_at": judgment.created_at,
    }


def next_lease(request, *, campaign_id: int | None = None, slug: str | None = None) -> tuple[int, dict]:
    """(status, body) of the next-pair answer for ``request.user`` in a campaign (by id, else by slug, else the
    default one): 200 and the lease, 204 and {} when nothing is left (or the quota is reached), 403/404 and a
    detail otherwise. The common case is three statements in one transaction: the membership with its campaign
    (locking the person's row, so a double click takes one lease), the lease statement, the commit."""
    from annotate.models import Campaign, CampaignMember
    from annotate.services import campaigns

    where = {"campaign_id": campaign_id} if campaign_id is not None else {"campaign__slug": slug or DEFAULT_SLUG}
    with transaction.atomic():
        member = campaigns.membership_locked(request.user, **where)
        if member is None:  # first time in this campaign: find it, and join it if the account may
            try:
                campaign = Campaign.objects.get(pk=campaign_id) if campaign_id is not None else None
                if campaign is None:
                    campaign = Campaign.objects.get(slug=slug) if slug else campaigns.default_campaign()
                member = campaigns.membership(request.user, campaign)
                assignments.annotator_lock(request.user)  # as membership_locked does: one lease for two first clicks
            except Campaign.DoesNotExist:
                return 404, {"detail": f"campaign {slug or campaign_id!r}: no such campaign"}
            except campaigns.CampaignError as exc:
                return exc.status, {"detail": exc.message}
        campaign = member.campaign
        if member.status != CampaignMember.Status.ACTIVE:
            if member.status in (CampaignMember.Status.NEW, CampaignMember.Status.QUALIFYING):
                detail = (
                    f"you are {member.get_status_display()} in campaign {campaign.slug}: read its guidelines "
                    f"and qualify in the browser at /c/{campaign.slug}/ first"
                )
            else:
                detail = f"you are {member.get_status_display()} in campaign {campaign.slug}"
            return 403, {"detail": detail}
        if campaigns.quota_reached(member):
            return 204, {}
        gold = random.random() < settings.VIDPREF["GOLD_RATE"]  # a gold pair now and then, in the same statement
        row = assignments.lease_take(annotator_id=request.user.pk, campaign_id=campaign.pk, gold=gold)
    if row is None:
        return 204, {}
    return 200, LeaseSerializer.from_row(row, request)  # plain values: the renderer writes them as the schema says


class NextAssignmentView(APIView):
    @extend_schema(
        request=None,
        responses={200: LeaseSerializer, 204: OpenApiResponse(description="no pair is left for you")},
        summary="Your current lease, or a new one on the best open pair of the campaign (?campaign=<slug>; default: "
        "the default campaign)",
    )
    def post(self, request):
        code, body = next_lease(request, slug=request.query_params.get("campaign"))
        return Response(body or None, status=code)


class HeartbeatView(APIView):
    @extend_schema(request=None, responses={200: HeartbeatSerializer, 404: ErrorSerializer, 409: ErrorSerializer})
    def post(self, request, assignment_id: int):
        try:
            lease = assignments.assignment_heartbeat(assignment_id=assignment_id, annotator=request.user)
        except assignments.AssignmentError as exc:
            return _refusal(exc)
        return Response(HeartbeatSerializer({"id": lease.pk, "expires_at": lease.expires_at}).data)


class SkipView(APIView):
    @extend_schema(
        request=SkipSerializer, responses={200: HeartbeatSerializer, 404: ErrorSerializer, 409: ErrorSerializer}
    )
    def post(self, request, assignment_id: int):
        body = SkipSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            lease = assignments.assignment_skip(
                assignment_id=assignment_id, annotator=request.user, reason=body.validated_data["reason"]
            )
        except assignments.AssignmentError as exc:
            return _refusal(exc)
        return Response(HeartbeatSerializer({"id": lease.pk, "expires_at": lease.expires_at}).data)


class JudgmentView(APIView):
    @extend_schema(
        request=JudgmentInSerializer,
        responses={
            201: JudgmentOutSerializer,
            200: OpenApiResponse(JudgmentOutSerializer, description="already judged: the stored judgment"),
            400: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description='each wrong field with its reasons, e.g. {"vq": ["This field is required."]}',
            ),
            404: ErrorSerializer,
            409: ErrorSerializer,
        },
        summary="Judge your leased pair in screen terms (left/right/tie); the server maps sides to A/B",
    )
    def post(self, request, assignment_id: int):
        body = JudgmentInSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            judgment, created = assignments.judgment_submit(
                assignment_id=assignment_id,
                annotator=request.user,
                labels=assignments.ScreenLabels(vq=data["vq"], mq=data["mq"], ta=data["ta"]),
                comment=data["comment"],
                flag=data["flag"],
                duration_ms=data["duration_ms"],
                watched_ms=data["watched_ms"],
                active_ms=data.get("active_ms"),
            )
        except assignments.AssignmentError as exc:
            return _refusal(exc)
        if created and judgment.pair.is_gold:
            from annotate.models import CampaignMember
            from annotate.services import campaigns

            member = CampaignMember.objects.filter(campaign_id=judgment.pair.campaign_id, user=request.user).first()
            if member is not None:
                campaigns.gold_check(member)
        # one round trip per judgment: the answer carries the next assignment in the same campaign
        code, lease = next_lease(request, campaign_id=judgment.pair.campaign_id)
        return Response(
            {**_judgment_out(judgment), "next": lease if code == 200 else None},  # JudgmentOutSerializer's shape
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class StatsFiltersSerializer(serializers.Serializer):
    batch = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        default=list,
        help_text="import batch ids (repeat the parameter); none: every batch",
    )
    judged_from = serializers.DateTimeField(required=False, allow_null=True, default=None)
    judged_until = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def canonical(self) -> dict:
        from annotate.services.stats import report_filters

        data = self.validated_data
        return report_filters(
            batch_ids=data["batch"], judged_from=data["judged_from"], judged_until=data["judged_until"]
        )


class AgreementStatsView(APIView):
    """Staff: the stored agreement statistics for a set of filters; POST queues a recompute."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        parameters=[StatsFiltersSerializer],
        responses={200: OpenApiResponse(description="the report"), 404: ErrorSerializer},
        summary="Agreement statistics, as last computed (the dashboard shows the same)",
    )
    def get(self, request):
        from annotate.selectors import agreement_report_latest

        query = StatsFiltersSerializer(
            data={
                "batch": request.query_params.getlist("batch"),
                **{
                    k: request.query_params.get(k)
                    for k in ("judged_from", "judged_until")
                    if request.query_params.get(k)
                },
            }
        )
        query.is_valid(raise_exception=True)
        stored = agreement_report_latest(filters=query.canonical())
        if stored is None:
            return Response(
                {
                    "detail": "no report has been computed for these filters yet; POST the same filters "
                    "to this URL to compute one"
                },
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response({"computed_at": stored.computed_at, "filters": stored.filters, **stored.report})

    @extend_schema(
        request=StatsFiltersSerializer,
        responses={
            202: OpenApiResponse(description="queued"),
            503: OpenApiResponse(ErrorSerializer, description="the task broker is down; ask again later"),
        },
        summary="Recompute the agreement statistics for these filters (runs on the default queue)",
    )
    def post(self, request):
        from annotate.services.stats import BrokerUnavailable, agreement_report_request

        body = StatsFiltersSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        filters = body.canonical()
        try:
            agreement_report_request(filters=filters)
        except BrokerUnavailable as exc:
            return Response(
                {"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "30"}
            )
        return Response({"queued": True, "filters": filters}, status=status.HTTP_202_ACCEPTED)
