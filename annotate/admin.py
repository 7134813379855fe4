from django.contrib import admin
from django.utils.html import format_html

from annotate.models import Assignment, Batch, Judgment, Pair, Prompt, Video


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "source", "created_at"]
    search_fields = ["text"]
    readonly_fields = ["text_sha256"]


@admin.register(Video)
class VideoAdmin(admin.ModelAdmin):
    list_display = ["id", "generator", "origin", "status", "width", "height", "fps", "num_frames", "duration_s", "preview"]
    list_filter = ["origin", "status", "generator"]
    search_fields = ["sha256", "generator", "prompt__text"]
    raw_id_fields = ["prompt"]
    readonly_fields = ["sha256", "preview"]

    @admin.display(description="poster")
    def preview(self, video):
        if not video.poster:
            return "—"
        from django.urls import reverse

        return format_html('<img src="{}" style="height:48px">', reverse("annotate:poster", args=[video.pk]))


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "source", "created_at"]


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "status", "is_gold", "overlap", "filled", "judgment_count", "priority", "batch"]
    list_filter = ["status", "is_gold", "batch"]
    raw_id_fields = ["prompt", "video_a", "video_b", "batch"]
    readonly_fields = ["filled", "judgment_count"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "pair", "annotator", "state", "left_is_a", "leased_at", "expires_at"]
    list_filter = ["state"]
    raw_id_fields = ["pair", "annotator"]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "pair", "annotator", "vq", "mq", "ta", "left_is_a", "flag", "duration_ms", "created_at"]
    list_filter = ["flag", "vq", "mq", "ta"]
    raw_id_fields = ["pair", "annotator", "assignment"]
