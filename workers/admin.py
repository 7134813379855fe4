from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect, render
from django.urls import path, reverse

from workers.models import Job
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
