"""The workers' admin pages beyond Django's lists: a job's page and its live part, starting a job (any kind, an
import, an export, pair generation), the model comparison, the personalisation page, a pipeline's page and
starting one; and the display helpers the lists share with them.

Each view takes the request first and its ``ModelAdmin`` as the keyword ``model_admin`` (for the admin site's
context, the model's options and the permissions); ``workers.admin`` wires them into its URLs, whose names the
templates and tests use.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.views.decorators.http import require_safe

from alignment.labels import DIMENSION_NAMES
from annotate.media_views import ranged_response
from annotate.models import Batch
from workers.forms import ExportForm, ImportForm, PipelineStartForm, PreviewForm
from workers.job_specs import JOB_SPECS, JobConfigForm
from workers.models import Job, ModelVersion, Pipeline
from workers.selectors import guided_previews, job_file_path, model_versions_compare
from workers.services.imports import import_job_create
from workers.services.jobs import job_cancel, job_retry, job_run
from workers.services.pipelines import PipelineBusy, pipeline_cancel, pipeline_defaults, pipeline_stages, pipeline_start
from workers.services.previews import preview_job_create
from workers.services.snapshots import snapshot_job_create

# --- display helpers ------------------------------------------------------------------------------------


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
PARAM_LINKS = {
    "snapshot_id": "admin:workers_datasetsnapshot_change",
    "batch_id": "admin:annotate_batch_change",
    "model_version_id": "admin:workers_modelversion_change",
}


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
    validation = {
        dim: validation[dim]
        for dim in sorted(
            validation,
            key=lambda dim: (  # VQ, MQ, TA: jsonb sorts keys
                DIMENSION_NAMES.index(dim) if dim in DIMENSION_NAMES else len(DIMENSION_NAMES),
                dim,
            ),
        )
    }
    columns = list(dict.fromkeys(key for scores in validation.values() if isinstance(scores, dict) for key in scores))

    def score(value):  # accuracies with the same three decimals, so a column lines up
        return f"{value:.3f}" if isinstance(value, float) else value_text(value)

    rows = [
        {"dimension": dim, "values": [score((scores or {}).get(key)) for key in columns]}
        for dim, scores in validation.items()
    ]
    others = {key: value for key, value in metrics.items() if key not in ("validation", "charts", "live")}
    return {
        "validation_columns": [column.replace("_", " ") for column in columns],
        "validation_rows": rows,
        "other": flat_rows(others, links=False),
    }


def job_outputs(job: Job) -> dict:
    """What the page lists under "Made by this job" besides snapshots and models: the batch of pairs an import
    or a generation added, with a link to those pairs."""
    result = job.result or {}
    batch_id = result.get("batch_id")
    if job.status != Job.Status.SUCCEEDED or not batch_id:
        return {}
    batch = Batch.objects.filter(pk=batch_id).first()
    return {
        "batch": batch,
        "batch_id": batch_id,
        "pairs_url": f"{reverse('admin:annotate_pair_changelist')}?{urlencode({'batch__id__exact': batch_id})}",
        "pairs_created": result.get("pairs_created", 0),
        "pairs_existing": result.get("pairs_existing", 0),
        "skipped": result.get("skipped") or [],
        "videos_created": result.get("videos_created", 0),
    }


def job_charts(job: Job) -> dict:
    """What the job page plots: the final metrics' curves, else the live loss curve of a running job."""
    charts = dict((job.metrics or {}).get("charts") or {})
    if not charts.get("train_loss"):
        live = (job.metrics or {}).get("live") or {}
        charts["train_loss"] = live.get("train_loss", [])
    return charts


def pipeline_started_how(pipeline: Pipeline) -> str:
    if pipeline.trigger == "schedule":
        return "started by the schedule"
    return (
        f"started by {pipeline.created_by} from the {pipeline.trigger}"
        if pipeline.created_by
        else f"started from the {pipeline.trigger}"
    )


def admin_context(model_admin, request, **extra) -> dict:
    """What every admin page's template needs (the site's context, the model's options), and ``extra``."""
    return {**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta, **extra}


def job_from_form(request, form: JobConfigForm) -> Job | None:
    """Create the form's job; None (with the error on the field it names, else on the form) when the service
    refuses the inputs."""
    try:
        return form.create_job(created_by=request.user)
    except ValueError as exc:
        field = getattr(exc, "field", None)
        form.add_error(field if field in form.fields else None, str(exc))
        return None


# --- jobs -----------------------------------------------------------------------------------------------

LOG_TAIL_LINES = 200  # the job page shows the end of the log


def job_new_view(request, *, model_admin):
    return render(
        request,
        "admin/workers/job/new.html",
        admin_context(model_admin, request, title="Start a job", specs=JOB_SPECS.values()),
    )


def job_new_kind_view(request, kind, *, model_admin):
    spec = JOB_SPECS.get(kind)
    if spec is None:
        raise Http404(f"no job kind {kind!r}")
    if spec.url_name:
        return redirect(reverse(spec.url_name))
    form = JobConfigForm(spec, request.POST or None)
    if request.method == "POST" and form.is_valid() and (job := job_from_form(request, form)):
        messages.success(request, f"{spec.title}: queued as job {job.pk}.")
        return redirect(reverse("admin:workers_job_change", args=[job.pk]))
    return render(
        request,
        "admin/workers/job/new_kind.html",
        admin_context(model_admin, request, title=spec.title, spec=spec, form=form),
    )


def _job_live_context(job: Job) -> dict:
    lines = job.log.splitlines()
    stage = None
    if job.pipeline_id:
        stage = next(
            (
                stage
                for stage in pipeline_stages(job.pipeline)
                if stage["job"] is not None and stage["job"].pk == job.pk
            ),
            None,
        )
    return {
        "job": job,
        "attempts": attempt_rows(job.attempts),
        "log_entries": log_entries(lines[-LOG_TAIL_LINES:]),
        "log_lines": len(lines),
        "log_tail_lines": LOG_TAIL_LINES,
        "charts": job_charts(job),
        "snapshots": job.snapshots.all(),
        "model_versions": job.model_versions.select_related("snapshot"),
        "outputs": job_outputs(job),
        "metrics": metrics_tables(job.metrics),
        "stage": stage,
        "duration": duration_text(job.started_at, job.finished_at),
    }


def job_detail_view(request, object_id, *, model_admin):
    job = get_object_or_404(Job.objects.select_related("pipeline", "created_by"), pk=object_id)
    context = admin_context(
        model_admin,
        request,
        title=f"Job {job.pk}: {job.get_kind_display()}",
        original=job,
        params=flat_rows(job.params),
        **_job_live_context(job),
    )
    return render(request, "admin/workers/job/detail.html", context)


def job_live_view(request, job_id, *, model_admin):
    """The live part of the job page, polled by htmx every 2 s; without the poll trigger once the job ended."""
    job = get_object_or_404(Job.objects.select_related("pipeline", "created_by"), pk=job_id)
    return render(request, "admin/workers/job/_live.html", _job_live_context(job))


def _job_action(request, job_id, action, done: str):
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


def job_cancel_view(request, job_id, *, model_admin):
    return _job_action(
        request,
        job_id,
        lambda job: job_cancel(job=job, by=request.user),
        "Job {job.pk} cancelled; a running task stops at its next step.",
    )


def job_retry_view(request, job_id, *, model_admin):
    return _job_action(
        request,
        job_id,
        lambda job: job_retry(job=job, by=request.user),
        "Job {job.pk} queued again; it resumes from its newest checkpoint.",
    )


def job_run_view(request, job_id, *, model_admin):
    return _job_action(request, job_id, lambda job: job_run(job=job), "Job {job.pk}'s task was sent again.")


@require_safe
def job_file_view(request, job_id, name, *, model_admin):
    """A file the job wrote (a preview's MP4), byte ranges included; nothing outside the job's folder."""
    file_path = job_file_path(job=get_object_or_404(Job, pk=job_id), name=name)
    if file_path is None:
        raise Http404(f"job {job_id} has no file {name!r}")
    return ranged_response(
        request, name=file_path.name, size=file_path.stat().st_size, open_binary=lambda: open(file_path, "rb")
    )


def job_import_view(request, *, model_admin):
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = import_job_create(
                manifest=data["manifest"],
                videos=data["videos"],
                gold=data["gold"],
                overlap=data["overlap"],
                created_by=request.user,
            )
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Import queued as job {job.pk}; its progress shows below.")
            return redirect(reverse("admin:workers_job_change", args=[job.pk]))
    return render(
        request, "admin/workers/job/import.html", admin_context(model_admin, request, form=form, title="Import pairs")
    )


# --- snapshots and model versions -----------------------------------------------------------------------


def snapshot_export_view(request, *, model_admin):
    form = ExportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            job = snapshot_job_create(params=form.job_params(), created_by=request.user)
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Export queued as job {job.pk}; its progress shows below.")
            return redirect(reverse("admin:workers_job_change", args=[job.pk]))
    return render(
        request,
        "admin/workers/datasetsnapshot/export.html",
        admin_context(model_admin, request, form=form, title="Export a snapshot"),
    )


# The generation form's input that takes a version of each kind.
GENERATION_INPUTS = {
    ModelVersion.Kind.POLICY: "policy_version",
    ModelVersion.Kind.LATENT_REWARD: "latent_reward_version",
    ModelVersion.Kind.REWARD: "reward_version",
}


def model_version_generate_view(request, *, model_admin):
    """The "Generate N pairs" page: the generation job's form, filled in from the selected versions."""
    spec = JOB_SPECS[Job.Kind.GENERATE]
    initial = {name: request.GET[name] for name in GENERATION_INPUTS.values() if request.GET.get(name)}
    if "latent_reward_version" in initial and "policy_version" not in initial:
        initial["source"] = "guided_vs_unguided"  # a latent reward model alone: guide the base policy
    if "reward_version" not in initial:
        newest = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD).order_by("-created_at").first()
        initial["reward_version"] = newest.pk if newest else None
    form = JobConfigForm(spec, request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid() and (job := job_from_form(request, form)):
        messages.success(
            request,
            f"Generating {job.params.get('pairs', form.config_initial['pairs'])} pairs: queued as job {job.pk}.",
        )
        return redirect(reverse("admin:workers_job_change", args=[job.pk]))
    return render(
        request,
        "admin/workers/modelversion/generate.html",
        admin_context(model_admin, request, title="Generate pairs", form=form, spec=spec),
    )


def model_version_compare_view(request, *, model_admin):
    try:
        ids = [int(value) for value in request.GET.get("ids", "").split(",") if value]
    except ValueError:
        raise Http404("ids: comma-separated model version ids, e.g. ?ids=3,4") from None
    comparison = model_versions_compare(ids=ids)
    return render(
        request,
        "admin/workers/modelversion/compare.html",
        admin_context(model_admin, request, title="Compare model versions", **comparison),
    )


# --- the personalisation page ---------------------------------------------------------------------------

PREVIEW_SESSION_KEY = "workers.guided_previews"  # the ids of the previews this admin made, newest first
PREVIEW_HISTORY = 20


def _preview_context(job: Job | None) -> dict:
    if job is None or job.status != Job.Status.SUCCEEDED:
        return {}
    result = job.result
    return {
        "weights": [(dim, f"{result['weights'][dim]:g}") for dim in DIMENSION_NAMES],
        "videos": [
            {
                "side": side,
                "url": reverse("admin:workers_job_file", args=[job.pk, result["videos"][side]]),
                "generator": result["generators"][side],
                "scores": result["latent_reward_scores"][side],
            }
            for side in ("unguided", "guided")
        ],
    }


def guided_preview_page_view(request, *, model_admin):
    """The personalisation page: sample a prompt with and without Flow-NRG guidance by your own weights."""
    history = request.session.get(PREVIEW_SESSION_KEY, [])
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
                history = [shown.pk, *[pk for pk in history if pk != shown.pk]][:PREVIEW_HISTORY]
                request.session[PREVIEW_SESSION_KEY] = history
                if not request.htmx:
                    return redirect(f"{reverse('admin:workers_guidedpreview_changelist')}?job={shown.pk}")
    else:
        shown = shown or (previews.filter(pk=history[0]).first() if history else None)
        form = PreviewForm(initial=PreviewForm.initial_from(shown) if shown else None)
    context = admin_context(
        model_admin,
        request,
        title="Personalisation",
        form=form,
        job=shown,
        history=guided_previews(ids=history),
        **_preview_context(shown),
    )
    template = "_page.html" if request.htmx else "page.html"
    return render(request, f"admin/workers/guidedpreview/{template}", context)


def guided_preview_live_view(request, job_id, *, model_admin):
    """The preview panel, polled by htmx every 2 s while the job runs (without the trigger once it ended)."""
    job = get_object_or_404(Job, pk=job_id, kind=Job.Kind.PREVIEW)
    return render(
        request,
        "admin/workers/guidedpreview/_preview.html",
        {"job": job, "update_history": job.pk in request.session.get(PREVIEW_SESSION_KEY, []), **_preview_context(job)},
    )


# --- pipelines ------------------------------------------------------------------------------------------


def _pipeline(request, pipeline_id, model_admin) -> Pipeline:
    if not model_admin.has_view_or_change_permission(request):
        raise PermissionDenied
    return get_object_or_404(Pipeline.objects.select_related("created_by").prefetch_related("jobs"), pk=pipeline_id)


def _pipeline_live_context(request, pipeline: Pipeline, model_admin) -> dict:
    stages = pipeline_stages(pipeline)
    for stage in stages:
        job = stage["job"]
        stage["state"] = job.status if job else ("waiting" if pipeline.is_active else "not-run")
        stage["state_label"] = job.get_status_display() if job else ("waiting" if pipeline.is_active else "not run")
        stage["duration"] = duration_text(job.started_at, job.finished_at) if job and job.started_at else ""
    current = next((stage for stage in stages if stage["name"] == pipeline.stage), None)
    return {
        "pipeline": pipeline,
        "stages": stages,
        "current": current,
        "started_how": pipeline_started_how(pipeline),
        "duration": duration_text(pipeline.created_at, pipeline.finished_at),
        "can_cancel": pipeline.is_active and model_admin.has_change_permission(request, pipeline),
    }


def pipeline_detail_view(request, object_id, *, model_admin):
    """The pipeline's status page (read-only); its live part is polled while the pipeline is active."""
    try:
        pipeline = _pipeline(request, int(object_id), model_admin)
    except ValueError:
        raise Http404(f"no pipeline {object_id!r}") from None
    context = admin_context(
        model_admin,
        request,
        original=pipeline,
        title=f"Pipeline #{pipeline.pk}",
        params=flat_rows(pipeline.params),
        **_pipeline_live_context(request, pipeline, model_admin),
    )
    return render(request, "admin/workers/pipeline/detail.html", context)


def pipeline_live_view(request, pipeline_id, *, model_admin):
    """The live part of the status page, polled by htmx every 2 s; without the poll trigger once it ended."""
    pipeline = _pipeline(request, pipeline_id, model_admin)
    return render(request, "admin/workers/pipeline/_live.html", _pipeline_live_context(request, pipeline, model_admin))


def pipeline_cancel_view(request, pipeline_id, *, model_admin):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    pipeline = _pipeline(request, pipeline_id, model_admin)
    if not model_admin.has_change_permission(request, pipeline):
        raise PermissionDenied
    if pipeline_cancel(pipeline=pipeline, by=request.user):
        messages.success(request, f"Pipeline #{pipeline.pk} cancelled; its running stage stops at its next step.")
    else:
        messages.warning(request, f"Pipeline #{pipeline.pk} had already ended ({pipeline.status}).")
    return redirect(reverse("admin:workers_pipeline_change", args=[pipeline.pk]))


def pipeline_start_view(request, *, model_admin):
    defaults = pipeline_defaults()
    form = PipelineStartForm(request.POST or None, initial=defaults)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            pipeline = pipeline_start(
                params={"alignment_method": data["alignment_method"], "generate_pairs": data["generate_pairs"]},
                created_by=request.user,
                force=data["force"],
            )
        except (PipelineBusy, ValueError) as exc:
            form.add_error(None, str(exc))
        else:
            if pipeline.status == Pipeline.Status.SKIPPED:
                messages.warning(request, f"Not started: {pipeline.reason}.")
            else:
                messages.success(request, f"{pipeline} queued: export → reward → alignment → new pairs.")
            return redirect(reverse("admin:workers_pipeline_change", args=[pipeline.pk]))
    return render(
        request,
        "admin/workers/pipeline/start.html",
        admin_context(model_admin, request, form=form, title="Run the pipeline"),
    )
