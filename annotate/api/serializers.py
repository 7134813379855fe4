from django.urls import reverse
from rest_framework import serializers

from annotate.models import Judgment


def choice():
    return serializers.ChoiceField(choices=["left", "right", "tie"])


class LeaseSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    prompt = serializers.CharField()
    left_video_url = serializers.CharField()
    right_video_url = serializers.CharField()
    left_poster_url = serializers.CharField()
    right_poster_url = serializers.CharField()
    expires_at = serializers.DateTimeField()

    @staticmethod
    def payload(request, *, lease_id: int, prompt: str, left: int, right: int, expires_at) -> dict:
        """The answer for a lease: the video ids are the screen's left and right. The host is checked and each URL
        pattern reversed once per answer (they differ only in the id)."""
        origin = request.build_absolute_uri("/")[:-1]
        video, poster = (reverse(name, args=[_PLACEHOLDER]) for name in ("annotate:video", "annotate:poster"))

        def url(pattern: str, video_id: int) -> str:
            return origin + pattern.replace(str(_PLACEHOLDER), str(video_id))

        return {
            "id": lease_id,
            "prompt": prompt,
            "left_video_url": url(video, left),
            "right_video_url": url(video, right),
            "left_poster_url": url(poster, left),
            "right_poster_url": url(poster, right),
            "expires_at": expires_at,
        }

    @staticmethod
    def from_row(row, request) -> dict:
        """From ``assignment.lease_take``'s row (ids and the prompt, no ORM objects)."""
        left, right = row.sides
        return LeaseSerializer.payload(
            request, lease_id=row.id, prompt=row.prompt, left=left, right=right, expires_at=row.expires_at
        )


_PLACEHOLDER = 918273645  # an id no URL pattern's fixed text contains


class HeartbeatSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


class SkipSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class JudgmentInSerializer(serializers.Serializer):
    vq = choice()
    mq = choice()
    ta = choice()
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    flag = serializers.ChoiceField(
        choices=[c for c in Judgment.Flag.values if c], required=False, allow_blank=True, default=""
    )
    duration_ms = serializers.IntegerField(
        min_value=0, max_value=86_400_000, required=False, allow_null=True, default=None
    )
    watched_ms = serializers.IntegerField(
        min_value=0, max_value=86_400_000, required=False, allow_null=True, default=None
    )
    active_ms = serializers.IntegerField(
        min_value=0,
        max_value=86_400_000,
        required=False,
        allow_null=True,
        default=None,
        help_text="time with the page visible and the person active (what crowd work is paid by)",
    )


class JudgmentOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    assignment = serializers.IntegerField(source="assignment_id")
    vq = choice()
    mq = choice()
    ta = choice()
    comment = serializers.CharField()
    flag = serializers.CharField()
    created_at = serializers.DateTimeField()
    next = LeaseSerializer(
        allow_null=True,
        help_text="your next assignment in the judged pair's campaign, as POST /assignments/next/ answers it; "
        "null when nothing is left for you there",
    )


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
