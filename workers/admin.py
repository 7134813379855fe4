from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect, render
from django.urls import path, reverse

from annotate.consensus import ConsensusFilters
from annotate.models import Batch
from workers.models import DatasetSnapshot, Job, ModelVersion
from workers.uploads import import_job_create


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        return [single(d, initial) for d in data] if isinstance(data, (list, tuple)) else [single(data, initial)]


class ImportForm(forms.Form):
    manifest = forms.FileField(help_text="VideoAlign CSV (path_A,path_B,prompt,VQ,MQ,TA,…) or JSONL")
    videos = MultipleFileField(required=False, help_text="the video files the manifest names")
    gold = forms.BooleanField(required=False, help_text="the manifest's labels are gold answers")
    overlap = forms.IntegerField(required=False, min_value=1, max_value=50, help_text="k judgments per pair")


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "progress_percent", "progress_text", "created_by", "created_at", "finished_at"]
    list_filter = ["kind", "status"]
    readonly_fields = ["kind", "status", "params", "progress", "progress_text", "metrics", "result", "log", "error",
                       "celery_id", "created_by", "created_at", "started_at", "finished_at"]
    change_list_template = "admin/workers/job/change_list.html"

    @admin.display(description="progress")
    def progress_percent(self, job):
        return f"{job.progress * 100:.0f} %"

    def has_add_permission(self, request):
        return False

    def get_urls(self):
        custom = [path("import/", self.admin_site.admin_view(self.import_view), name="workers_job_import")]
        return custom + super().get_urls()

    def import_view(self, request):
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                job = import_job_create(
                    manifest=data["manifest"], videos=data["videos"], gold=data["gold"], overlap=data["overlap"],
                    created_by=request.user,
                )
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Import queued as job {job.pk}; its progress shows below.")
                return redirect(reverse("admin:workers_job_change", args=[job.pk]))
        context = {**self.admin_site.each_context(request), "form": form, "title": "Import pairs", "opts": self.model._meta}
        return render(request, "admin/workers/job/import.html", context)


class ExportForm(forms.Form):
    name = forms.SlugField(required=False, help_text="folder name (default: a timestamp)")
    judged_from = forms.DateTimeField(required=False, help_text="only judgments made at or after this (e.g. 2026-11-01)")
    judged_until = forms.DateTimeField(required=False, help_text="only judgments made before this")
    batches = forms.ModelMultipleChoiceField(Batch.objects.all(), required=False, help_text="none selected: every batch")
    min_judgments = forms.IntegerField(initial=1, min_value=1, max_value=100)
    min_agreement = forms.FloatField(initial=0.0, min_value=0.0, max_value=1.0,
                                     help_text="every label backed by at least this share of the pair's judgments")
    no_majority = forms.ChoiceField(choices=[("tie", "tie"), ("drop", "no label")], initial="tie",
                                    help_text="a dimension without a strict majority")
    include_flagged = forms.BooleanField(required=False, help_text="keep pairs an annotator flagged")
    include_excluded_annotators = forms.BooleanField(required=False,
                                                     help_text="count disabled and 'excluded from training' annotators")
    include_gold = forms.BooleanField(required=False)
    bundle_videos = forms.BooleanField(required=False, help_text="copy the videos into the snapshot")

    def job_params(self) -> dict:
        data = self.cleaned_data
        params = {key: data[key] for key in ("min_judgments", "min_agreement", "no_majority", "include_flagged",
                                             "include_excluded_annotators", "include_gold", "bundle_videos")}
        params["batch_ids"] = [batch.pk for batch in data["batches"]]
        for key in ("judged_from", "judged_until"):
            if data[key]:
                params[key] = data[key].isoformat()
        if data["name"]:
            params["name"] = data["name"]
        return params


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "pairs", "judgments", "splits", "size_mb", "created_at", "job"]
    list_filter = ["kind"]
    readonly_fields = ["name", "uri", "kind", "filters", "counts", "agreement", "bytes", "judgment_watermark", "job",
                       "created_by", "created_at"]
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
        custom = [path("export/", self.admin_site.admin_view(self.export_view), name="workers_datasetsnapshot_export")]
        return custom + super().get_urls()

    def export_view(self, request):
        from workers.services.snapshots import snapshot_job_create

        form = ExportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = snapshot_job_create(params=form.job_params(), created_by=request.user)
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Export queued as job {job.pk}; its progress shows below.")
                return redirect(reverse("admin:workers_job_change", args=[job.pk]))
        context = {**self.admin_site.each_context(request), "form": form, "title": "Export a snapshot",
                   "opts": self.model._meta}
        return render(request, "admin/workers/datasetsnapshot/export.html", context)

    @admin.action(description="Export again with the same filters (includes newer judgments)")
    def export_again(self, request, queryset):
        from workers.services.snapshots import snapshot_job_create

        known = set(ConsensusFilters().as_dict())
        for snapshot in queryset.filter(kind=DatasetSnapshot.Kind.TRAINING):
            params = {key: value for key, value in snapshot.filters.items() if key in known | {"bundle_videos"}}
            job = snapshot_job_create(params=params, created_by=request.user)
            messages.success(request, f"Export of {snapshot.name}'s filters queued as job {job.pk}.")

    @admin.action(description="Train a reward model on the selected snapshot (gpu queue)")
    def train_reward_model(self, request, queryset):
        from workers.services.training import reward_job_create

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

    @admin.display(description="validation accuracy w/o ties (VQ / MQ / TA)")
    def validation_accuracy(self, version):
        validation = version.metrics.get("validation") or {}
        return " / ".join(f"{validation[dim]['accuracy_without_ties']:.3f}" if dim in validation else "–"
                          for dim in ("VQ", "MQ", "TA"))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
