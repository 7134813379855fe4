import re
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_safe

from alignment.data.records import DIMENSIONS
from alignment.flow.config import GenerationConfig
from annotate.consensus import ConsensusFilters
from annotate.models import Batch, Prompt
from workers.job_specs import JOB_SPECS, JobConfigForm
from workers.models import DatasetSnapshot, GuidedPreview, Job, ModelVersion, Pipeline, Webhook, WebhookDelivery
from workers.services.jobs import job_cancel, job_retry, job_run
from workers.services.previews import MAX_SEED, preview_job_create
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


def job_from_form(request, form: JobConfigForm) -> Job | None:
    """Create the form's job; None (with the error on the field it names, else on the form) when the service
    refuses the inputs."""
    try:
        return form.create_job(created_by=request.user)
    except ValueError as exc:
        field = getattr(exc, "field", None)
        form.add_error(field if field in form.fields else None, str(exc))
        return None


def duration_text(start, end=None) -> str:
    """``start`` to ``end`` (now when None) as "45 s", "3 min 05 s", "2 h 07 min"; "–" without a start."""
    if start is None:
        return "–"
    seconds = max(0, int(((end or timezone.now()) - start).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def status_badge(status: str, label: str | None = None):
    return format_html('<span class="badge list-badge status-{}">{}</span>', status, label or status)


def value_text(value) -> str:
    """A JSON value as a person reads it: numbers short, lists one line, nothing as a dash."""
    if value is None or value == "" or value == [] or value == {}:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {value_text(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        joiner = "\n" if any(isinstance(item, (dict, list)) for item in value) else ", "
        return joiner.join(value_text(item) for item in value)
    return str(value)


# Params that name a row of another admin page: link them there.
PARAM_LINKS = {"snapshot_id": "admin:workers_datasetsnapshot_change", "batch_id": "admin:annotate_batch_change",
               "model_version_id": "admin:workers_modelversion_change"}


def flat_rows(data: dict, prefix: str = "", *, links: bool = True) -> list[dict]:
    """A nested dict as rows of (dotted key, readable value, link or None), keys in alphabetical order (PostgreSQL's
    jsonb keeps no order)."""
    rows = []
    for key, value in sorted((data or {}).items(), key=lambda item: str(item[0])):
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(flat_rows(value, f"{name}.", links=links))
            continue
        url = None
        suffix = next((end for end in PARAM_LINKS if str(key).endswith(end)), None)
        if links and suffix and isinstance(value, int) and not isinstance(value, bool):
            try:
                url = reverse(PARAM_LINKS[suffix], args=[value])
            except NoReverseMatch:
                url = None
        rows.append({"key": name, "value": value_text(value), "url": url})
    return rows


LOG_STAMP = re.compile(r"^(\d\d:\d\d:\d\d) (.*)$")


def log_entries(lines: list[str]) -> list[dict]:
    """Log lines as entries of (time, message): ``append_log`` stamps each entry's first line; the lines
    after it without a stamp (a traceback) belong to it."""
    entries = []
    for line in lines:
        match = LOG_STAMP.match(line)
        if match or not entries:
            time, text = match.groups() if match else ("", line)
            entries.append({"time": time, "text": text, "multiline": False})
        else:
            entries[-1]["text"] += "\n" + line
            entries[-1]["multiline"] = True
    for entry in entries:
        entry["error"] = entry["multiline"] and entry["text"].startswith("Traceback")
    return entries


def attempt_rows(attempts: list[dict]) -> list[dict]:
    """The job's attempts with their ISO times read back as datetimes (the page shows them in local time)."""
    from django.utils.dateparse import parse_datetime

    rows = []
    for attempt in attempts or []:
        row = dict(attempt)
        for key in ("started_at", "finished_at"):
            try:
                row[key] = parse_datetime(attempt.get(key) or "") or attempt.get(key)
            except (TypeError, ValueError):
                row[key] = attempt.get(key)
        rows.append(row)
    return rows


def metrics_tables(metrics: dict) -> dict:
    """The job's metrics as tables: validation accuracy per dimension (a row each) and the other numbers
    (dotted keys); the curves (``charts``, ``live``) are drawn, not listed."""
    metrics = metrics or {}
    validation = metrics.get("validation") or {}
    validation = {dim: validation[dim] for dim in sorted(validation, key=lambda dim: (
        DIMENSIONS.index(dim) if dim in DIMENSIONS else len(DIMENSIONS), dim))}  # VQ, MQ, TA: jsonb sorts keys
    columns = list(dict.fromkeys(key for scores in validation.values() if isinstance(scores, dict) for key in scores))
    def score(value):  # accuracies with the same three decimals, so a column lines up
        return f"{value:.3f}" if isinstance(value, float) else value_text(value)

    rows = [{"dimension": dim, "values": [score((scores or {}).get(key)) for key in columns]}
            for dim, scores in validation.items()]
    others = {key: value for key, value in metrics.items() if key not in ("validation", "charts", "live")}
    return {"validation_columns": [column.replace("_", " ") for column in columns], "validation_rows": rows,
            "other": flat_rows(others, links=False)}


def job_outputs(job: Job) -> dict:
    """What the page lists under "Made by this job" besides snapshots and models: the batch of pairs an import
    or a generation added, with a link to those pairs."""
    result = job.result or {}
    batch_id = result.get("batch_id")
    if job.status != Job.Status.SUCCEEDED or not batch_id:
        return {}
    batch = Batch.objects.filter(pk=batch_id).first()
    return {"batch": batch, "batch_id": batch_id, "pairs_url": f"{reverse('admin:annotate_pair_changelist')}?"
                                                               f"{urlencode({'batch__id__exact': batch_id})}",
            "pairs_created": result.get("pairs_created", 0), "pairs_existing": result.get("pairs_existing", 0),
            "skipped": result.get("skipped") or [], "videos_created": result.get("videos_created", 0)}


class ImportForm(forms.Form):
    manifest = forms.FileField(help_text="VideoAlign CSV (path_A,path_B,prompt,VQ,MQ,TA,…) or JSONL")
    videos = MultipleFileField(required=False, help_text="the video files the manifest names")
    gold = forms.BooleanField(required=False, help_text="the manifest's labels are gold answers")
    overlap = forms.IntegerField(required=False, min_value=1, max_value=50, help_text="k judgments per pair")


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    # Fits a 1366 px window beside the navigation and the filters: the progress text takes the width left and is
    # cut short (in full in its title); who started a job is in the "created" cell's title and on its page.
    list_display = ["id", "kind", "status_label", "progress_summary", "created", "duration"]
    list_filter = ["kind", "status"]
    list_select_related = ["created_by"]
    change_list_template = "admin/workers/job/change_list.html"
    LOG_TAIL_LINES = 200

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
        return format_html('<span title="{}">{}</span>', f"{when}{f' by {job.created_by}' if job.created_by else ''}"
                           f"{pipeline}", f"{timezone.localtime(job.created_at):%m-%d %H:%M}")

    @admin.display(description="ran for")
    def duration(self, job):
        return duration_text(job.started_at, job.finished_at) if job.started_at else "–"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff

    def get_urls(self):
        view = self.admin_site.admin_view
        custom = [
            path("import/", view(self.import_view), name="workers_job_import"),
            path("new/", view(self.new_view), name="workers_job_new"),
            path("new/<str:kind>/", view(self.new_kind_view), name="workers_job_new_kind"),
            path("<int:job_id>/live/", view(self.live_view), name="workers_job_live"),
            path("<int:job_id>/cancel/", view(self.cancel_view), name="workers_job_cancel"),
            path("<int:job_id>/retry/", view(self.retry_view), name="workers_job_retry"),
            path("<int:job_id>/run/", view(self.run_view), name="workers_job_run"),
            path("<int:job_id>/files/<path:name>", view(self.file_view), name="workers_job_file"),
        ]
        return custom + super().get_urls()

    def _context(self, request, **extra):
        return {**self.admin_site.each_context(request), "opts": self.model._meta, **extra}

    def new_view(self, request):
        return render(request, "admin/workers/job/new.html",
                      self._context(request, title="Start a job", specs=JOB_SPECS.values()))

    def new_kind_view(self, request, kind):
        spec = JOB_SPECS.get(kind)
        if spec is None:
            raise Http404(f"no job kind {kind!r}")
        if spec.url_name:
            return redirect(reverse(spec.url_name))
        form = JobConfigForm(spec, request.POST or None)
        if request.method == "POST" and form.is_valid() and (job := job_from_form(request, form)):
            messages.success(request, f"{spec.title}: queued as job {job.pk}.")
            return redirect(reverse("admin:workers_job_change", args=[job.pk]))
        return render(request, "admin/workers/job/new_kind.html",
                      self._context(request, title=spec.title, spec=spec, form=form))

    def _live_context(self, job) -> dict:
        lines = job.log.splitlines()
        stage = None
        if job.pipeline_id:
            from workers.services.pipelines import pipeline_stages

            stage = next((stage for stage in pipeline_stages(job.pipeline)
                          if stage["job"] is not None and stage["job"].pk == job.pk), None)
        return {"job": job, "attempts": attempt_rows(job.attempts),
                "log_entries": log_entries(lines[-self.LOG_TAIL_LINES:]), "log_lines": len(lines),
                "log_tail_lines": self.LOG_TAIL_LINES, "charts": job_charts(job), "snapshots": job.snapshots.all(),
                "model_versions": job.model_versions.select_related("snapshot"), "outputs": job_outputs(job),
                "metrics": metrics_tables(job.metrics), "stage": stage,
                "duration": duration_text(job.started_at, job.finished_at)}

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = get_object_or_404(Job.objects.select_related("pipeline", "created_by"), pk=object_id)
        context = self._context(request, title=f"Job {job.pk}: {job.get_kind_display()}", original=job,
                                params=flat_rows(job.params), **self._live_context(job))
        return render(request, "admin/workers/job/detail.html", context)

    def live_view(self, request, job_id):
        """The live part of the job page, polled by htmx every 2 s; without the poll trigger once the job ended."""
        job = get_object_or_404(Job.objects.select_related("pipeline", "created_by"), pk=job_id)
        return render(request, "admin/workers/job/_live.html", self._live_context(job))

    def _action(self, request, job_id, action, done: str):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = get_object_or_404(Job, pk=job_id)
        try:
            outcome = action(job)
        except ValueError as exc:
            messages.error(request, str(exc))
        else:
            if outcome is False:
                messages.warning(request, f"Job {job.pk} had already finished.")
            else:
                messages.success(request, done.format(job=job))
        return redirect(reverse("admin:workers_job_change", args=[job_id]))

    def cancel_view(self, request, job_id):
        return self._action(request, job_id, lambda job: job_cancel(job=job, by=request.user),
                            "Job {job.pk} cancelled; a running task stops at its next step.")

    def retry_view(self, request, job_id):
        return self._action(request, job_id, lambda job: job_retry(job=job, by=request.user),
                            "Job {job.pk} queued again; it resumes from its newest checkpoint.")

    def run_view(self, request, job_id):
        return self._action(request, job_id, lambda job: job_run(job=job), "Job {job.pk}'s task was sent again.")

    @method_decorator(require_safe)
    def file_view(self, request, job_id, name):
        """A file the job wrote (a preview's MP4), byte ranges included; nothing outside the job's folder."""
        from annotate.media_views import ranged_response
        from workers.selectors import job_file_path

        file_path = job_file_path(job=get_object_or_404(Job, pk=job_id), name=name)
        if file_path is None:
            raise Http404(f"job {job_id} has no file {name!r}")
        return ranged_response(request, name=file_path.name, size=file_path.stat().st_size,
                               open_binary=lambda: open(file_path, "rb"))

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


def job_charts(job: Job) -> dict:
    """What the job page plots: the final metrics' curves, else the live loss curve of a running job."""
    charts = dict((job.metrics or {}).get("charts") or {})
    if not charts.get("train_loss"):
        live = (job.metrics or {}).get("live") or {}
        charts["train_loss"] = live.get("train_loss", [])
    return charts


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
    actions = ["compare", "generate_pairs"]
    change_list_template = "admin/workers/modelversion/change_list.html"
    # The generation form's input that takes a version of each kind.
    GENERATION_INPUTS = {ModelVersion.Kind.POLICY: "policy_version", ModelVersion.Kind.LATENT_REWARD: "latent_reward_version",
                         ModelVersion.Kind.REWARD: "reward_version"}

    @admin.display(description="validation accuracy w/o ties (VQ / MQ / TA)")
    def validation_accuracy(self, version):
        validation = version.metrics.get("validation") or {}
        return " / ".join(f"{validation[dim]['accuracy_without_ties']:.3f}" if dim in validation else "–"
                          for dim in ("VQ", "MQ", "TA"))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        view = self.admin_site.admin_view
        custom = [path("compare/", view(self.compare_view), name="workers_modelversion_compare"),
                  path("generate/", view(self.generate_view), name="workers_modelversion_generate")]
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
                messages.error(request, f"Select at most one {version.get_kind_display()} version "
                                        f"({chosen[version.kind].name} and {version.name} are both selected).")
                return None
            chosen[version.kind] = version
        if not chosen.keys() & {ModelVersion.Kind.POLICY, ModelVersion.Kind.LATENT_REWARD}:
            messages.error(request, "Select a policy or a latent reward version to generate pairs with.")
            return None
        query = urlencode({field: chosen[kind].pk for kind, field in self.GENERATION_INPUTS.items() if kind in chosen})
        return redirect(f"{reverse('admin:workers_modelversion_generate')}?{query}")

    def generate_view(self, request):
        """The "Generate N pairs" page: the generation job's form, filled in from the selected versions."""
        spec = JOB_SPECS[Job.Kind.GENERATE]
        initial = {name: request.GET[name] for name in self.GENERATION_INPUTS.values() if request.GET.get(name)}
        if "latent_reward_version" in initial and "policy_version" not in initial:
            initial["source"] = "guided_vs_unguided"  # a latent reward model alone: guide the base policy
        if "reward_version" not in initial:
            newest = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD).order_by("-created_at").first()
            initial["reward_version"] = newest.pk if newest else None
        form = JobConfigForm(spec, request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid() and (job := job_from_form(request, form)):
            messages.success(request, f"Generating {job.params.get('pairs', form.config_initial['pairs'])} pairs: "
                                      f"queued as job {job.pk}.")
            return redirect(reverse("admin:workers_job_change", args=[job.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "Generate pairs",
                   "form": form, "spec": spec}
        return render(request, "admin/workers/modelversion/generate.html", context)

    def compare_view(self, request):
        from workers.selectors import model_versions_compare

        try:
            ids = [int(value) for value in request.GET.get("ids", "").split(",") if value]
        except ValueError:
            raise Http404("ids: comma-separated model version ids, e.g. ?ids=3,4")
        comparison = model_versions_compare(ids=ids)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": "Compare model versions", **comparison}
        return render(request, "admin/workers/modelversion/compare.html", context)


PREVIEW_PARAMS = ("seed", "guidance_strength", "guidance_sigma_min", "guidance_max_ratio", "steps", "guidance_scale")


class RangeInput(forms.NumberInput):
    input_type = "range"


class PreviewForm(forms.Form):
    """The personalisation page: a prompt, the weight of each dimension, the guidance strength, a seed and the
    models. Weights range over [-1, 3]: a negative weight steers away from a dimension."""

    PROMPT_CHOICES = 500  # the newest prompts of the database in the select

    prompt_choice = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="prompt",
                                           help_text=f"one of the database's newest {PROMPT_CHOICES} prompts")
    prompt_text = forms.CharField(required=False, label="or your own", max_length=2000,
                                  widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
                                  help_text="typed text wins over the selected prompt")
    vq = forms.FloatField(label="VQ weight", initial=1.0, min_value=-1, max_value=3,
                          widget=RangeInput(attrs={"min": -1, "max": 3, "step": 0.1}), help_text="visual quality")
    mq = forms.FloatField(label="MQ weight", initial=1.0, min_value=-1, max_value=3,
                          widget=RangeInput(attrs={"min": -1, "max": 3, "step": 0.1}), help_text="motion quality")
    ta = forms.FloatField(label="TA weight", initial=1.0, min_value=-1, max_value=3,
                          widget=RangeInput(attrs={"min": -1, "max": 3, "step": 0.1}), help_text="text alignment")
    guidance_strength = forms.FloatField(initial=GenerationConfig.guidance_strength,
                                         help_text="Flow-NRG's w (the paper's 100)")
    guidance_sigma_min = forms.FloatField(initial=GenerationConfig.guidance_sigma_min, min_value=0, max_value=0.99,
                                          label="stop guiding below σ",
                                          help_text="the last steps, at noise level σ ≤ this, are left unguided; "
                                                    "0 guides every step")
    guidance_max_ratio = forms.FloatField(initial=GenerationConfig.guidance_max_ratio, min_value=0.01,
                                          label="cap on σ/(1 − σ)",
                                          help_text="how hard the noisiest steps are pushed; 1 guided best in the "
                                                    "toy study")
    seed = forms.IntegerField(initial=0, min_value=0, max_value=MAX_SEED, help_text="the same for both videos")
    policy_version = forms.ModelChoiceField(ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY), required=False,
                                            label="policy", empty_label="— the base policy —")
    latent_reward_version = forms.ModelChoiceField(
        ModelVersion.objects.filter(kind=ModelVersion.Kind.LATENT_REWARD), label="latent reward model",
        help_text="trained on the policy's base ('Train a latent reward model')")
    steps = forms.IntegerField(initial=GenerationConfig.steps, min_value=1, max_value=500, help_text="sampling steps")
    guidance_scale = forms.FloatField(initial=GenerationConfig.guidance_scale,
                                      help_text="classifier-free guidance; 1 turns it off")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        prompts = Prompt.objects.order_by("-pk").values_list("pk", "text")[: self.PROMPT_CHOICES]
        self.fields["prompt_choice"].choices = [("", "— type one below —"),
                                                *((pk, text if len(text) <= 120 else f"{text[:117]}…") for pk, text in prompts)]
        newest = self.fields["latent_reward_version"].queryset.order_by("-created_at").first()
        if newest is not None:
            self.fields["latent_reward_version"].initial = newest.pk

    def clean(self):
        data = super().clean()
        text = (data.get("prompt_text") or "").strip()
        if not text and data.get("prompt_choice"):
            text = Prompt.objects.filter(pk=data["prompt_choice"]).values_list("text", flat=True).first() or ""
        if not text and "prompt_text" not in self.errors:
            self.add_error("prompt_text", "choose a prompt or type one")
        data["prompt"] = text
        return data

    def preview_inputs(self) -> dict:
        data = self.cleaned_data
        return {"prompt": data["prompt"], "seed": data["seed"], "policy_version": data["policy_version"],
                "latent_reward_version": data["latent_reward_version"],
                "weights": ",".join(f"{dim.lower()}={data[dim.lower()]:g}" for dim in DIMENSIONS),
                "guidance_strength": data["guidance_strength"], "guidance_sigma_min": data["guidance_sigma_min"],
                "guidance_max_ratio": data["guidance_max_ratio"], "steps": data["steps"],
                "guidance_scale": data["guidance_scale"]}

    @classmethod
    def initial_from(cls, job: Job) -> dict:
        """The form as it was when ``job`` was queued (to tweak a preview and generate again)."""
        params = job.params
        weights = GenerationConfig(weights=params.get("weights", GenerationConfig.weights)).dimension_weights()
        return {"prompt_text": params.get("prompt", ""), **dict(zip(("vq", "mq", "ta"), weights)),
                **{key: params[key] for key in PREVIEW_PARAMS if key in params},
                "policy_version": params.get("policy_model_version_id"),
                "latent_reward_version": params.get("latent_reward_model_version_id")}


@admin.register(GuidedPreview)
class GuidedPreviewAdmin(admin.ModelAdmin):
    """The personalisation page: sample a prompt with and without Flow-NRG guidance by your own weights."""

    SESSION_KEY = "workers.guided_previews"
    HISTORY = 20

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
        view = self.admin_site.admin_view
        return [path("", view(self.changelist_view), name="workers_guidedpreview_changelist"),
                path("<int:job_id>/live/", view(self.live_view), name="workers_guidedpreview_live")]

    def changelist_view(self, request, extra_context=None):
        from workers.selectors import guided_previews

        history = request.session.get(self.SESSION_KEY, [])
        previews = Job.objects.filter(kind=Job.Kind.PREVIEW)
        asked = request.GET.get("job", "")
        shown = previews.filter(pk=asked).first() if asked.isdigit() else None
        if request.method == "POST":
            form = PreviewForm(request.POST)
            if form.is_valid():
                try:
                    shown = preview_job_create(**form.preview_inputs(), created_by=request.user)
                except ValueError as exc:
                    field = getattr(exc, "field", None)
                    form.add_error(field if field in form.fields else None, str(exc))
                else:
                    history = [shown.pk, *[pk for pk in history if pk != shown.pk]][: self.HISTORY]
                    request.session[self.SESSION_KEY] = history
                    if not request.htmx:
                        return redirect(f"{reverse('admin:workers_guidedpreview_changelist')}?job={shown.pk}")
        else:
            shown = shown or (previews.filter(pk=history[0]).first() if history else None)
            form = PreviewForm(initial=PreviewForm.initial_from(shown) if shown else None)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "Personalisation",
                   "form": form, "job": shown, "history": guided_previews(ids=history), **self._preview_context(shown)}
        template = "_page.html" if request.htmx else "page.html"
        return render(request, f"admin/workers/guidedpreview/{template}", context)

    @staticmethod
    def _preview_context(job: Job | None) -> dict:
        if job is None or job.status != Job.Status.SUCCEEDED:
            return {}
        result = job.result
        return {"weights": [(dim, f"{result['weights'][dim]:g}") for dim in DIMENSIONS],
                "videos": [{"side": side, "url": reverse("admin:workers_job_file", args=[job.pk, result["videos"][side]]),
                            "generator": result["generators"][side], "scores": result["latent_reward_scores"][side]}
                           for side in ("unguided", "guided")]}

    def live_view(self, request, job_id):
        """The preview panel, polled by htmx every 2 s while the job runs (without the trigger once it ended)."""
        job = get_object_or_404(Job, pk=job_id, kind=Job.Kind.PREVIEW)
        return render(request, "admin/workers/guidedpreview/_preview.html",
                      {"job": job, "update_history": job.pk in request.session.get(self.SESSION_KEY, []),
                       **self._preview_context(job)})


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
            return forms.MultipleChoiceField(choices=Webhook.Event.choices, required=False,
                                             widget=forms.CheckboxSelectMultiple,
                                             help_text="none ticked: every event", label="events")
        return super().formfield_for_dbfield(db_field, request, **kwargs)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "event", "webhook", "status", "attempts", "response_status", "created_at", "delivered_at"]
    list_filter = ["status", "event", "webhook"]
    readonly_fields = ["webhook", "event", "payload", "status", "attempts", "response_status", "response_body",
                       "error", "created_at", "last_attempt_at", "delivered_at"]
    actions = ["send_again"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Send the selected deliveries again")
    def send_again(self, request, queryset):
        from workers.services.webhooks import webhook_redeliver

        for delivery in queryset:
            webhook_redeliver(delivery=delivery)
        messages.success(request, f"{queryset.count()} deliveries queued again.")


class PipelineStartForm(forms.Form):
    alignment_method = forms.ChoiceField(choices=[("dpo", "Flow-DPO"), ("rwr", "Flow-RWR")],
                                         help_text="default: VIDPREF_ALIGNMENT_METHOD")
    generate_pairs = forms.IntegerField(min_value=1, max_value=100_000, help_text="new pairs queued for labelling")
    force = forms.BooleanField(required=False, help_text="run even if too few judgments arrived since the last snapshot")


def pipeline_started_how(pipeline: Pipeline) -> str:
    if pipeline.trigger == "schedule":
        return "started by the schedule"
    return f"started by {pipeline.created_by} from the {pipeline.trigger}" if pipeline.created_by else \
        f"started from the {pipeline.trigger}"


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
        from workers.services.pipelines import pipeline_stages

        chips = []
        for stage in pipeline_stages(pipeline):
            job = stage["job"]
            state = job.status if job else ("waiting" if pipeline.is_active else "not-run")
            extra = f" {job.progress * 100:.0f} %" if job and job.status == Job.Status.RUNNING else ""
            chips.append((state, f"{stage['kind_label']}: {state.replace('-', ' ')}", stage["name"], extra))
        return format_html('<span class="stage-chips">{}</span>', format_html_join(
            "", '<span class="stage-chip status-{}" title="{}">{}{}</span>', chips))

    @admin.display(description="created", ordering="created_at")
    def created(self, pipeline):
        how = pipeline_started_how(pipeline)
        return format_html('<span title="{}">{}</span>', f"{timezone.localtime(pipeline.created_at):%Y-%m-%d %H:%M:%S}, {how}",
                           f"{timezone.localtime(pipeline.created_at):%m-%d %H:%M}")

    @admin.display(description="took")
    def duration(self, pipeline):
        return duration_text(pipeline.created_at, pipeline.finished_at)

    @admin.display(description="reason")
    def reason_short(self, pipeline):
        return format_html('<span class="cell-truncate" title="{}">{}</span>', pipeline.reason, pipeline.reason) \
            if pipeline.reason else ""

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the record of what ran; a running one is cancelled, not deleted

    def get_urls(self):
        view = self.admin_site.admin_view
        return [path("start/", view(self.start_view), name="workers_pipeline_start"),
                path("<int:pipeline_id>/live/", view(self.live_view), name="workers_pipeline_live"),
                path("<int:pipeline_id>/cancel/", view(self.cancel_view), name="workers_pipeline_cancel"),
                *super().get_urls()]

    def _pipeline(self, request, pipeline_id) -> Pipeline:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        return get_object_or_404(Pipeline.objects.select_related("created_by").prefetch_related("jobs"), pk=pipeline_id)

    def _live_context(self, request, pipeline: Pipeline) -> dict:
        from workers.services.pipelines import pipeline_stages

        stages = pipeline_stages(pipeline)
        for stage in stages:
            job = stage["job"]
            stage["state"] = job.status if job else ("waiting" if pipeline.is_active else "not-run")
            stage["state_label"] = job.get_status_display() if job else ("waiting" if pipeline.is_active else "not run")
            stage["duration"] = duration_text(job.started_at, job.finished_at) if job and job.started_at else ""
        current = next((stage for stage in stages if stage["name"] == pipeline.stage), None)
        return {"pipeline": pipeline, "stages": stages, "current": current, "started_how": pipeline_started_how(pipeline),
                "duration": duration_text(pipeline.created_at, pipeline.finished_at),
                "can_cancel": pipeline.is_active and self.has_change_permission(request, pipeline)}

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The pipeline's status page (read-only); its live part is polled while the pipeline is active."""
        try:
            pipeline = self._pipeline(request, int(object_id))
        except ValueError:
            raise Http404(f"no pipeline {object_id!r}") from None
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "original": pipeline,
                   "title": f"Pipeline #{pipeline.pk}", "params": flat_rows(pipeline.params),
                   **self._live_context(request, pipeline)}
        return render(request, "admin/workers/pipeline/detail.html", context)

    def live_view(self, request, pipeline_id):
        """The live part of the status page, polled by htmx every 2 s; without the poll trigger once it ended."""
        pipeline = self._pipeline(request, pipeline_id)
        return render(request, "admin/workers/pipeline/_live.html", self._live_context(request, pipeline))

    def cancel_view(self, request, pipeline_id):
        from workers.services.pipelines import pipeline_cancel

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        pipeline = self._pipeline(request, pipeline_id)
        if not self.has_change_permission(request, pipeline):
            raise PermissionDenied
        if pipeline_cancel(pipeline=pipeline, by=request.user):
            messages.success(request, f"Pipeline #{pipeline.pk} cancelled; its running stage stops at its next step.")
        else:
            messages.warning(request, f"Pipeline #{pipeline.pk} had already ended ({pipeline.status}).")
        return redirect(reverse("admin:workers_pipeline_change", args=[pipeline.pk]))

    def start_view(self, request):
        from workers.services.pipelines import PipelineBusy, pipeline_defaults, pipeline_start

        defaults = pipeline_defaults()
        form = PipelineStartForm(request.POST or None, initial=defaults)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                pipeline = pipeline_start(params={"alignment_method": data["alignment_method"],
                                                  "generate_pairs": data["generate_pairs"]},
                                          created_by=request.user, force=data["force"])
            except (PipelineBusy, ValueError) as exc:
                form.add_error(None, str(exc))
            else:
                if pipeline.status == Pipeline.Status.SKIPPED:
                    messages.warning(request, f"Not started: {pipeline.reason}.")
                else:
                    messages.success(request, f"{pipeline} queued: export → reward → alignment → new pairs.")
                return redirect(reverse("admin:workers_pipeline_change", args=[pipeline.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form,
                   "title": "Run the pipeline"}
        return render(request, "admin/workers/pipeline/start.html", context)

    @admin.action(description="Cancel the selected pipelines (and their running stage)")
    def cancel(self, request, queryset):
        from workers.services.pipelines import pipeline_cancel

        cancelled = sum(pipeline_cancel(pipeline=pipeline, by=request.user) for pipeline in queryset)
        messages.success(request, f"{cancelled} pipeline(s) cancelled.")
