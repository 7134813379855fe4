"""The workers' ModelAdmins: their lists, permissions and actions, and the URLs of their pages, whose views are in
``workers.admin_views`` and whose forms are in ``workers.forms``."""

from functools import partial
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from alignment.labels import DIMENSION_NAMES
from annotate.consensus import ConsensusFilters
from workers import admin_views as views
from workers.admin_views import GENERATION_INPUTS, duration_text, pipeline_started_how, status_badge
from workers.models import DatasetSnapshot, GuidedPreview, Job, ModelVersion, Pipeline, Webhook, WebhookDelivery
from workers.services.pipelines import pipeline_cancel, pipeline_stages
from workers.services.reward import reward_job_create
from workers.services.snapshots import snapshot_job_create
from workers.services.webhooks import webhook_redeliver


def admin_page(model_admin: admin.ModelAdmin, view):
    """An ``admin_views`` view as a page of ``model_admin``: for the admin site's staff only, like its own pages."""
    return model_admin.admin_site.admin_view(partial(view, model_admin=model_admin))


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    # Fits a 1366 px window beside the navigation and the filters: the progress text takes the width left and is
    # cut short (in full in its title); who started a job is in the "created" cell's title and on its page.
    list_display = ["id", "kind", "status_label", "progress_summary", "created", "duration"]
    list_filter = ["kind", "status"]
    list_select_related = ["created_by"]
    change_list_template = "admin/workers/job/change_list.html"

    @admin.display(description="status", ordering="status")
    def status_label(self, job):
        return status_badge(job.status, job.get_status_display())

    @admin.display(description="progress", ordering="progress")
    def progress_summary(self, job):
        text = f"{job.progress * 100:.0f} %" + (f" · {job.progress_text}" if job.progress_text else "")
        return format_html('<span class="cell-truncate" title="{}">{}</span>', text, text)

    @admin.display(description="created", ordering="created_at")
    def created(self, job):
        when = f"{timezone.localtime(job.created_at):%Y-%m-%d %H:%M:%S}"
        pipeline = f", stage of pipeline #{job.pipeline_id}" if job.pipeline_id else ""
        return format_html(
            '<span title="{}">{}</span>',
            f"{when}{f' by {job.created_by}' if job.created_by else ''}{pipeline}",
            f"{timezone.localtime(job.created_at):%m-%d %H:%M}",
        )

    @admin.display(description="ran for")
    def duration(self, job):
        return duration_text(job.started_at, job.finished_at) if job.started_at else "–"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff

    def get_urls(self):
        custom = [
            path("import/", admin_page(self, views.job_import_view), name="workers_job_import"),
            path("new/", admin_page(self, views.job_new_view), name="workers_job_new"),
            path("new/<str:kind>/", admin_page(self, views.job_new_kind_view), name="workers_job_new_kind"),
            path("<int:job_id>/live/", admin_page(self, views.job_live_view), name="workers_job_live"),
            path("<int:job_id>/cancel/", admin_page(self, views.job_cancel_view), name="workers_job_cancel"),
            path("<int:job_id>/retry/", admin_page(self, views.job_retry_view), name="workers_job_retry"),
            path("<int:job_id>/run/", admin_page(self, views.job_run_view), name="workers_job_run"),
            path("<int:job_id>/files/<path:name>", admin_page(self, views.job_file_view), name="workers_job_file"),
        ]
        return custom + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return views.job_detail_view(request, object_id, model_admin=self)


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "pairs", "judgments", "splits", "size_mb", "created_at", "job"]
    list_filter = ["kind"]
    readonly_fields = [
        "name",
        "uri",
        "kind",
        "filters",
        "counts",
        "agreement",
        "bytes",
        "judgment_watermark",
        "job",
        "created_by",
        "created_at",
    ]
    change_list_template = "admin/workers/datasetsnapshot/change_list.html"
    actions = ["export_again", "train_reward_model"]

    @admin.display(description="pairs")
    def pairs(self, snapshot):
        return snapshot.counts.get("pairs")

    @admin.display(description="judgments")
    def judgments(self, snapshot):
        return snapshot.counts.get("judgments", "–")

    @admin.display(description="train / val / test")
    def splits(self, snapshot):
        return " / ".join(str(snapshot.counts.get(split, 0)) for split in ("train", "val", "test"))

    @admin.display(description="MB")
    def size_mb(self, snapshot):
        return f"{snapshot.bytes / 1e6:.1f}"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # snapshots are immutable

    def get_urls(self):
        custom = [path("export/", admin_page(self, views.snapshot_export_view), name="workers_datasetsnapshot_export")]
        return custom + super().get_urls()

    @admin.action(description="Export again with the same filters (includes newer judgments)")
    def export_again(self, request, queryset):
        known = set(ConsensusFilters().as_dict())
        for snapshot in queryset.filter(kind=DatasetSnapshot.Kind.TRAINING):
            params = {key: value for key, value in snapshot.filters.items() if key in known | {"bundle_videos"}}
            job = snapshot_job_create(params=params, created_by=request.user)
            messages.success(request, f"Export of {snapshot.name}'s filters queued as job {job.pk}.")

    @admin.action(description="Train a reward model on the selected snapshot (gpu queue)")
    def train_reward_model(self, request, queryset):
        for snapshot in queryset:
            try:
                job = reward_job_create(snapshot=snapshot, created_by=request.user)
            except ValueError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, f"Reward-model training on {snapshot.name} queued as job {job.pk}.")


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "snapshot", "validation_accuracy", "created_at", "job"]
    list_filter = ["kind"]
    readonly_fields = ["kind", "name", "path", "snapshot", "config", "metrics", "job", "created_at"]
    actions = ["compare", "generate_pairs"]
    change_list_template = "admin/workers/modelversion/change_list.html"

    @admin.display(description="validation accuracy w/o ties (VQ / MQ / TA)")
    def validation_accuracy(self, version):
        validation = version.metrics.get("validation") or {}
        return " / ".join(
            f"{validation[dim]['accuracy_without_ties']:.3f}" if dim in validation else "–" for dim in DIMENSION_NAMES
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        custom = [
            path("compare/", admin_page(self, views.model_version_compare_view), name="workers_modelversion_compare"),
            path(
                "generate/", admin_page(self, views.model_version_generate_view), name="workers_modelversion_generate"
            ),
        ]
        return custom + super().get_urls()

    @admin.action(description="Compare the selected model versions")
    def compare(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return redirect(f"{reverse('admin:workers_modelversion_compare')}?ids={ids}")

    @admin.action(description="Generate N pairs with the selected policy / latent reward (gpu queue)")
    def generate_pairs(self, request, queryset):
        chosen = {}
        for version in queryset:
            if version.kind in chosen:
                messages.error(
                    request,
                    f"Select at most one {version.get_kind_display()} version "
                    f"({chosen[version.kind].name} and {version.name} are both selected).",
                )
                return None
            chosen[version.kind] = version
        if not chosen.keys() & {ModelVersion.Kind.POLICY, ModelVersion.Kind.LATENT_REWARD}:
            messages.error(request, "Select a policy or a latent reward version to generate pairs with.")
            return None
        query = urlencode({field: chosen[kind].pk for kind, field in GENERATION_INPUTS.items() if kind in chosen})
        return redirect(f"{reverse('admin:workers_modelversion_generate')}?{query}")


@admin.register(GuidedPreview)
class GuidedPreviewAdmin(admin.ModelAdmin):
    """The personalisation page: sample a prompt with and without Flow-NRG guidance by your own weights."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [
            path("", admin_page(self, views.guided_preview_page_view), name="workers_guidedpreview_changelist"),
            path(
                "<int:job_id>/live/",
                admin_page(self, views.guided_preview_live_view),
                name="workers_guidedpreview_live",
            ),
        ]

    def changelist_view(self, request, extra_context=None):
        return views.guided_preview_page_view(request, model_admin=self)


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    fields = ["event", "status", "attempts", "response_status", "error", "created_at", "delivered_at"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    ordering = ["-created_at"]
    show_change_link = True


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["name", "url", "events", "is_active", "created_at"]
    inlines = [WebhookDeliveryInline]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "events":
            return forms.MultipleChoiceField(
                choices=Webhook.Event.choices,
                required=False,
                widget=forms.CheckboxSelectMultiple,
                help_text="none ticked: every event",
                label="events",
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "event", "webhook", "status", "attempts", "response_status", "created_at", "delivered_at"]
    list_filter = ["status", "event", "webhook"]
    readonly_fields = [
        "webhook",
        "event",
        "payload",
        "status",
        "attempts",
        "response_status",
        "response_body",
        "error",
        "created_at",
        "last_attempt_at",
        "delivered_at",
    ]
    actions = ["send_again"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Send the selected deliveries again")
    def send_again(self, request, queryset):
        for delivery in queryset:
            webhook_redeliver(delivery=delivery)
        messages.success(request, f"{queryset.count()} deliveries queued again.")


@admin.register(Pipeline)
class PipelineAdmin(admin.ModelAdmin):
    """Pipelines are a record of runs: the list and a read-only status page per pipeline (its stages, each
    stage's job and progress, the reason of a skip or failure, Cancel while it runs); nothing to edit."""

    # Fits a 1366 px window beside the navigation and the filters: who and how it was started are in the
    # "created" cell's title, a long reason is cut short (in full in its title and on the status page).
    list_display = ["id", "status_label", "stages_summary", "created", "duration", "reason_short"]
    list_filter = ["status", "trigger"]
    list_select_related = ["created_by"]
    actions = ["cancel"]
    change_list_template = "admin/workers/pipeline/change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("jobs")

    @admin.display(description="status", ordering="status")
    def status_label(self, pipeline):
        return status_badge(pipeline.status, pipeline.get_status_display())

    @admin.display(description="stages")
    def stages_summary(self, pipeline):
        chips = []
        for stage in pipeline_stages(pipeline):
            job = stage["job"]
            state = job.status if job else ("waiting" if pipeline.is_active else "not-run")
            extra = f" {job.progress * 100:.0f} %" if job and job.status == Job.Status.RUNNING else ""
            chips.append((state, f"{stage['kind_label']}: {state.replace('-', ' ')}", stage["name"], extra))
        return format_html(
            '<span class="stage-chips">{}</span>',
            format_html_join("", '<span class="stage-chip status-{}" title="{}">{}{}</span>', chips),
        )

    @admin.display(description="created", ordering="created_at")
    def created(self, pipeline):
        how = pipeline_started_how(pipeline)
        return format_html(
            '<span title="{}">{}</span>',
            f"{timezone.localtime(pipeline.created_at):%Y-%m-%d %H:%M:%S}, {how}",
            f"{timezone.localtime(pipeline.created_at):%m-%d %H:%M}",
        )

    @admin.display(description="took")
    def duration(self, pipeline):
        return duration_text(pipeline.created_at, pipeline.finished_at)

    @admin.display(description="reason")
    def reason_short(self, pipeline):
        return (
            format_html('<span class="cell-truncate" title="{}">{}</span>', pipeline.reason, pipeline.reason)
            if pipeline.reason
            else ""
        )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the record of what ran; a running one is cancelled, not deleted

    def get_urls(self):
        return [
            path("start/", admin_page(self, views.pipeline_start_view), name="workers_pipeline_start"),
            path("<int:pipeline_id>/live/", admin_page(self, views.pipeline_live_view), name="workers_pipeline_live"),
            path(
                "<int:pipeline_id>/cancel/",
                admin_page(self, views.pipeline_cancel_view),
                name="workers_pipeline_cancel",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return views.pipeline_detail_view(request, object_id, model_admin=self)

    @admin.action(description="Cancel the selected pipelines (and their running stage)")
    def cancel(self, request, queryset):
        cancelled = sum(pipeline_cancel(pipeline=pipeline, by=request.user) for pipeline in queryset)
        messages.success(request, f"{cancelled} pipeline(s) cancelled.")
