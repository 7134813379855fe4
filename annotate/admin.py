from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from alignment.labels import DIMENSION_NAME, DIMENSION_NAMES, DIMENSION_TITLES, DIMENSIONS
from annotate.models import (
    AgreementReport,
    Assignment,
    Batch,
    Campaign,
    CampaignExample,
    CampaignMember,
    Judgment,
    Pair,
    Prompt,
    Video,
)


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "source", "created_at"]
    search_fields = ["text"]
    readonly_fields = ["text_sha256"]


@admin.register(Video)
class VideoAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "generator",
        "origin",
        "status",
        "width",
        "height",
        "fps",
        "num_frames",
        "duration_s",
        "preview",
    ]
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
    list_display = ["id", "name", "campaign", "source", "created_at"]
    list_filter = ["campaign"]


class CampaignExampleInline(admin.TabularInline):
    model = CampaignExample
    extra = 1
    raw_id_fields = ["pair"]


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    """Campaigns (docs/architecture.md §11): their settings, worked examples and qualification pairs, and the
    participants' report (a page and a CSV)."""

    list_display = ["name", "slug", "external_link_url", "members_count", "quota", "opens_at", "closes_at"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [CampaignExampleInline]
    filter_horizontal = ["qualification_pairs"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "guidelines", "overlap"]}),
        (
            "Who may judge",
            {
                "fields": [
                    "open_to_all_accounts",
                    "annotator_group",
                    "external_link",
                    "participant_param",
                    "study_param",
                    "session_param",
                    "max_participants",
                    "quota",
                    "opens_at",
                    "closes_at",
                ]
            },
        ),
        (
            "Quality",
            {"fields": ["qualification_pairs", "qualification_threshold", "gold_floor", "gold_window", "gold_min"]},
        ),
        ("The end", {"fields": ["completion_code", "completion_url", "break_every_min"]}),
    ]

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "qualification_pairs":  # only gold pairs have a reference answer
            kwargs["queryset"] = Pair.objects.filter(is_gold=True).select_related("prompt")
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    @admin.display(description="external link")
    def external_link_url(self, campaign):
        if not campaign.external_link:
            return "—"
        return f"/c/{campaign.slug}/?{campaign.participant_param}={{id}}"

    @admin.display(description="people")
    def members_count(self, campaign):
        url = reverse("admin:annotate_campaign_report", args=[campaign.pk])
        return format_html('<a href="{}">{} — report</a>', url, campaign.members.count())

    def get_urls(self):
        view = self.admin_site.admin_view
        custom = [
            path("<int:campaign_id>/report/", view(self.report_view), name="annotate_campaign_report"),
            path("<int:campaign_id>/report.csv", view(self.report_csv_view), name="annotate_campaign_report_csv"),
        ]
        return custom + super().get_urls()

    def report_view(self, request, campaign_id: int):
        from annotate.services.campaigns import REPORT_COLUMNS, campaign_report

        campaign = get_object_or_404(Campaign, pk=campaign_id)
        members = {m.user.username: m for m in campaign.members.select_related("user")}
        rows = campaign_report(campaign)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{campaign.name}: participants",
            "campaign": campaign,
            "columns": REPORT_COLUMNS,
            "rows": [(row, members[row["participant"]]) for row in rows],
        }
        return render(request, "admin/annotate/campaign/report.html", context)

    def report_csv_view(self, request, campaign_id: int):
        import csv

        from annotate.services.campaigns import REPORT_COLUMNS, campaign_report

        campaign = get_object_or_404(Campaign, pk=campaign_id)
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{campaign.slug}-participants.csv"'
        writer = csv.DictWriter(response, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(campaign_report(campaign))
        return response


@admin.register(CampaignMember)
class CampaignMemberAdmin(admin.ModelAdmin):
    """People in campaigns; the paused and failed ones are listed for staff, with their recent gold mistakes,
    and re-admitted by the action."""

    list_display = ["__str__", "campaign", "status", "external_id", "joined_at", "admitted_at", "paused_reason"]
    list_filter = ["status", "campaign"]
    search_fields = ["external_id", "user__username"]
    raw_id_fields = ["user"]
    readonly_fields = ["qualification", "recent_gold_mistakes", "joined_at", "admitted_at", "paused_at"]
    actions = ["readmit"]

    @admin.action(description="Re-admit the selected people (failed or paused)")
    def readmit(self, request, queryset):
        from annotate.services.campaigns import member_readmit

        count = 0
        for member in queryset.exclude(status=CampaignMember.Status.ACTIVE):
            member_readmit(member, by=request.user.get_username())
            count += 1
        self.message_user(request, f"re-admitted {count} {'person' if count == 1 else 'people'}")

    @admin.display(description="recent gold mistakes")
    def recent_gold_mistakes(self, member):
        from django.utils.html import format_html_join

        from annotate.services.campaigns import gold_correct, recent_gold

        mistakes = [j for j in recent_gold(member) if not gold_correct(j)]
        if not mistakes:
            return "none"
        return format_html(
            "<table><tr><th>when</th><th>pair</th><th>prompt</th><th>theirs (VQ MQ TA)</th>"
            "<th>reference</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        f"{timezone.localtime(j.created_at):%Y-%m-%d %H:%M}",
                        j.pair_id,
                        str(j.pair.prompt),
                        " ".join(getattr(j, dim) for dim in DIMENSIONS),
                        " ".join((j.pair.gold_labels or {}).get(dim, "—") for dim in DIMENSIONS),
                    )
                    for j in mistakes
                ),
            ),
        )


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "prompt",
        "campaign",
        "status",
        "is_gold",
        "overlap",
        "filled",
        "judgment_count",
        "priority",
        "batch",
    ]
    list_filter = ["campaign", "status", "is_gold", "batch"]
    raw_id_fields = ["prompt", "video_a", "video_b", "batch"]
    readonly_fields = ["filled", "judgment_count"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "pair", "annotator", "state", "left_is_a", "leased_at", "expires_at"]
    list_filter = ["state"]
    raw_id_fields = ["pair", "annotator"]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "pair",
        "annotator",
        *DIMENSIONS,
        "left_is_a",
        "flag",
        "duration_ms",
        "active_ms",
        "created_at",
    ]
    list_filter = ["flag", *DIMENSIONS]
    raw_id_fields = ["pair", "annotator", "assignment"]


class StatsFilterForm(forms.Form):
    campaign = forms.ModelChoiceField(Campaign.objects.all(), required=False, help_text="none: every campaign")
    batch = forms.ModelMultipleChoiceField(Batch.objects.all(), required=False, help_text="none: every batch")
    judged_from = forms.DateTimeField(required=False, help_text="e.g. 2026-11-01")
    judged_until = forms.DateTimeField(required=False)

    def canonical(self) -> dict:
        from annotate.services.campaigns import campaign_batch_ids
        from annotate.services.stats import report_filters

        empty = {"campaign": None, "batch": [], "judged_from": None, "judged_until": None}
        data = self.cleaned_data if self.is_valid() else empty
        return report_filters(
            batch_ids=campaign_batch_ids(data["campaign"], [batch.pk for batch in data["batch"]]),
            judged_from=data["judged_from"],
            judged_until=data["judged_until"],
        )


@admin.register(AgreementReport)
class AgreementDashboardAdmin(admin.ModelAdmin):
    """Quality monitoring (docs/architecture.md §4): the stored statistics, and what an admin can do about them."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        view = self.admin_site.admin_view
        custom = [
            path("recompute/", view(self.recompute_view), name="annotate_agreement_recompute"),
            path("status/", view(self.status_view), name="annotate_agreement_status"),
            path("more-judgments/", view(self.more_judgments_view), name="annotate_agreement_more_judgments"),
            path("annotator/<int:user_id>/", view(self.annotator_view), name="annotate_agreement_annotator"),
            path(
                "annotator/<int:user_id>/set/", view(self.annotator_set_view), name="annotate_agreement_annotator_set"
            ),
        ]
        return custom + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        from annotate.selectors import agreement_report_latest

        form = StatsFilterForm(request.GET or None)
        filters = form.canonical()
        stored = agreement_report_latest(filters=filters)
        report = stored.report if stored else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Agreement and progress",
            "form": form,
            "stored": stored,
            "report": report,
            "query": request.GET.urlencode(),
            "dimension_rows": _dimension_rows(report) if report else [],
            "kappa_tables": _kappa_tables(report) if report else [],
            "kappa_distributions": _kappa_distributions(report) if report else [],
            "kappa_matrix_max": KAPPA_MATRIX_MAX,
            "kappa_low": KAPPA_LOW,
            "chart_data": _chart_data(report) if report else None,
            "generator_charts": [
                {"dim": dim, "ranked": bool(ranking)} for dim, ranking in _ordered(report.get("generators", {}))
            ]
            if report
            else [],
            "progress": _recompute_progress(request.GET, filters, stored) if request.GET.get("requested") else None,
            "rules": _outlier_rules(),
            "alpha_why": (
                "Krippendorff's α is undefined for these judgments: it needs pairs with two or more counted "
                "judgments, and more than one label in use among them."
            ),
        }
        return render(request, "admin/annotate/agreement/dashboard.html", context)

    def recompute_view(self, request):
        from annotate.selectors import agreement_report_latest
        from annotate.services.stats import BrokerUnavailable, agreement_report_request

        if request.method != "POST":
            return redirect("admin:annotate_agreementreport_changelist")
        form = StatsFilterForm(request.POST)
        filters = form.canonical()
        shown = agreement_report_latest(filters=filters)  # the page waits for a report newer than this one
        requested = timezone.now()
        try:
            agreement_report_request(filters=filters)
        except BrokerUnavailable as exc:
            if request.htmx:
                return HttpResponse(
                    format_html(
                        '<span id="recompute-status" class="recompute-failed" role="alert">Not recomputed: {}.</span>',
                        exc,
                    )
                )
            messages.warning(request, f"Not recomputed: {exc}.")
            return redirect("admin:annotate_agreementreport_changelist")
        query = request.POST.copy()
        query.pop("csrfmiddlewaretoken", None)
        query["requested"] = requested.isoformat()
        query["after"] = str(shown.pk if shown else 0)
        if request.htmx:
            # the button was pressed on the page: no navigation; the status it shows polls until the new numbers
            # are in, then loads the page once (status_view)
            progress = _recompute_progress(query, filters, shown)
            if progress["state"] == "done":
                response = HttpResponse("")
                response["HX-Redirect"] = progress["page_url"]
                return response
            return render(request, "admin/annotate/agreement/recompute_status.html", {"progress": progress})
        messages.info(request, "Recomputing on the default queue; the new numbers replace these once they are in.")
        return redirect(f"{reverse('admin:annotate_agreementreport_changelist')}?{query.urlencode()}")

    def status_view(self, request):
        """Polled by htmx (every 2 s) while a recompute runs. Once a report newer than the one the page showed
        is stored, it sends the browser once to the dashboard without the polling parameters (``HX-Redirect``:
        one page load, and the page it loads does not poll); a failed recompute, or none after
        ``RECOMPUTE_PATIENCE``, is said and ends the polling (status 286); otherwise it tells how far it got."""
        from annotate.selectors import agreement_report_latest

        filters = StatsFilterForm(request.GET or None).canonical()
        progress = _recompute_progress(request.GET, filters, agreement_report_latest(filters=filters))
        if progress["state"] == "done":
            response = HttpResponse("")
            response["HX-Redirect"] = progress["page_url"]
            return response
        response = render(request, "admin/annotate/agreement/recompute_status.html", {"progress": progress})
        if progress["state"] in ("failed", "gave up"):
            response.status_code = 286  # htmx: stop polling
        return response

    def more_judgments_view(self, request):
        from annotate.services.stats import pairs_request_more_judgments

        if request.method == "POST":
            try:
                count = pairs_request_more_judgments(
                    below_agreement=float(request.POST.get("below_agreement", "")),
                    extra=int(request.POST.get("extra", "")),
                )
            except ValueError as exc:
                messages.error(request, f"Nothing changed: {exc}")
            else:
                messages.success(request, f"{count} contested pairs reopened for more judgments.")
        return redirect("admin:annotate_agreementreport_changelist")

    def annotator_view(self, request, user_id: int):
        from annotate.selectors import annotator_judgments_vs_consensus

        annotator = get_object_or_404(get_user_model(), pk=user_id)
        rows = annotator_judgments_vs_consensus(annotator=annotator)
        agreed = [dim["agrees"] for row in rows for dim in row["dimensions"] if dim["consensus"] is not None]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "annotator": annotator,
            "rows": rows,
            "title": f"{annotator.username}: judgments next to the consensus",
            "agreement": sum(agreed) / len(agreed) if agreed else None,
            "excluded": annotator.groups.filter(name=_excluded_group()).exists(),
        }
        return render(request, "admin/annotate/agreement/annotator.html", context)

    def annotator_set_view(self, request, user_id: int):
        from annotate.services.stats import annotator_set_active, annotator_set_excluded

        if request.method == "POST":
            change = request.POST.get("change")
            try:
                if change in ("disable", "enable"):
                    annotator_set_active(user_id=user_id, active=change == "enable")
                elif change in ("exclude", "include"):
                    annotator_set_excluded(user_id=user_id, excluded=change == "exclude")
                else:
                    raise ValueError(f"unknown change {change!r}")
            except ValueError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, f"Done: {change}. The statistics change at the next recompute.")
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            back = reverse("admin:annotate_agreementreport_changelist")  # never off-site (an open redirect)
        return redirect(back)


RECOMPUTE_PATIENCE = timedelta(minutes=10)
"""How long the dashboard waits for a requested recompute before it stops polling and says so (the task takes
seconds; minutes mean no worker is consuming the default queue)."""


def _recompute_progress(query_in, filters: dict, latest) -> dict:
    """How the recompute asked for at ``?requested=<when>&after=<id of the report then shown>`` is doing:
    ``state`` is ``done`` (a newer report for these filters is stored), ``failed`` (the task raised:
    ``detail`` says what), ``gave up`` (nothing after ``RECOMPUTE_PATIENCE``), ``running`` or ``queued``.
    ``page_url``: the dashboard with these filters and no polling parameters; ``poll_url``: the status endpoint.
    Failures and starts are read from the Celery result store (django-celery-results; ``result_extended``
    keeps each task's name and arguments), matched on the task name, these filters and the time."""
    query = query_in.copy()
    for key in ("requested", "after"):
        query.pop(key, None)
    page_url = reverse("admin:annotate_agreementreport_changelist") + (f"?{query.urlencode()}" if query else "")
    progress = {
        "state": "queued",
        "detail": "",
        "page_url": page_url,
        "has_report": latest is not None,
        "poll_url": f"{reverse('admin:annotate_agreement_status')}?{query_in.urlencode()}",
    }
    requested = parse_datetime(query_in.get("requested") or "")
    try:
        after = int(query_in.get("after", ""))
    except ValueError:
        after = None
    if requested is None or timezone.is_naive(requested):
        return {**progress, "state": "failed", "detail": "the link does not say when the recompute was asked for"}
    if latest is not None and (latest.pk > after if after is not None else latest.computed_at >= requested):
        return {**progress, "state": "done"}
    task = _recompute_task_result(filters, since=requested)
    if task is not None and task.status == "FAILURE":
        return {**progress, "state": "failed", "detail": _task_error(task)}
    waited = timezone.now() - requested
    if waited > RECOMPUTE_PATIENCE:
        return {
            **progress,
            "state": "gave up",
            "detail": f"no new numbers {int(waited.total_seconds() // 60)} minutes after the request",
        }
    if task is not None and task.status == "STARTED":
        return {**progress, "state": "running", "detail": f"running on {task.worker or 'a worker'}"}
    return {**progress, "detail": "queued"}


def _recompute_task_result(filters: dict, *, since):
    """The newest stored result of a recompute task for these filters that finished or started since ``since``."""
    from django_celery_results.models import TaskResult

    from annotate.services.stats import RECOMPUTE_TASK

    candidates = (
        TaskResult.objects.filter(task_name=RECOMPUTE_TASK, date_done__gte=since)
        .exclude(status="PENDING")
        .order_by("-date_done")[:20]
    )
    for task in candidates:
        if recompute_task_filters(task) in (filters, None):  # None: arguments not readable, so possibly these
            return task
    return None


def recompute_task_filters(task) -> dict | None:
    """The canonical filters a recompute task was sent with (``None`` when its stored arguments cannot be read).
    The result store keeps Celery's ``kwargsrepr``, a Python repr, JSON-encoded."""
    import ast
    import json

    try:
        kwargs = task.task_kwargs
        kwargs = json.loads(kwargs) if isinstance(kwargs, str) else kwargs
        kwargs = ast.literal_eval(kwargs) if isinstance(kwargs, str) else kwargs
        sent = kwargs.get("filters") or {}
        return {
            "batch_ids": sorted(int(batch) for batch in sent.get("batch_ids") or []),
            "judged_from": sent.get("judged_from"),
            "judged_until": sent.get("judged_until"),
        }
    except (ValueError, SyntaxError, TypeError, AttributeError):
        return None


def _task_error(task) -> str:
    import json

    try:
        result = json.loads(task.result or "{}")
        text = f"{result.get('exc_type', 'error')}: {' '.join(str(part) for part in result.get('exc_message') or [])}"
    except (ValueError, TypeError, AttributeError):
        text = "the task raised an error"
    first = text.strip().splitlines()[0] if text.strip() else text  # an SQL error goes on with the query
    return first if len(first) <= 200 else first[:199] + "…"


def _outlier_rules() -> dict:
    """The thresholds of the outlier marks (``annotate.stats``), for the explanation on the page."""
    from annotate import stats

    return {
        "low_min": stats.LOW_AGREEMENT_MIN_JUDGMENTS,
        "low_ceiling": stats.LOW_AGREEMENT_CEILING,
        "low_mad": stats.LOW_AGREEMENT_MAD,
        "low_margin_min": stats.LOW_AGREEMENT_MARGIN_MIN,
        "low_margin_max": stats.LOW_AGREEMENT_MARGIN_MAX,
        "bias_min": stats.OUTLIER_MIN_JUDGMENTS,
        "bias_p": stats.POSITION_BIAS_P,
        "bias_effect": stats.POSITION_BIAS_EFFECT,
    }


def _excluded_group() -> str:
    from annotate.consensus import EXCLUDED_GROUP

    return EXCLUDED_GROUP


def _ordered(mapping: dict) -> list[tuple[str, object]]:
    return [(dim, mapping[dim]) for dim in DIMENSION_NAMES if dim in mapping]  # jsonb sorts keys


def _dimension_rows(report: dict) -> list[dict]:
    names = {DIMENSION_NAME[d]: DIMENSION_TITLES[d].lower() for d in DIMENSIONS}
    rows = []
    for dim, stats in _ordered(report.get("dimensions", {})):
        distribution = stats.get("label_distribution") or {}
        total = sum(distribution.values()) or 1
        rows.append(
            {
                "dim": dim,
                "name": names.get(dim, dim),
                **stats,
                "shares": {label: count / total for label, count in distribution.items()},
            }
        )
    return rows


KAPPA_MATRIX_MAX = 25


def _kappa_tables(report: dict) -> list[dict]:
    """Cohen's κ matrices with user names for the header, for the ``KAPPA_MATRIX_MAX`` annotators with the most
    judgments (the full matrices are in the API's JSON; hundreds of rows would not read as a table)."""
    people = report.get("annotators", [])
    names = {row["id"]: row["username"] for row in people}
    shown = {row["id"] for row in sorted(people, key=lambda row: -row["judgments"])[:KAPPA_MATRIX_MAX]}
    tables = []
    for dim, stats in _ordered(report.get("dimensions", {})):
        kappa = stats.get("cohen_kappa") or {}
        ids = kappa.get("annotators") or []
        keep = [index for index, user_id in enumerate(ids) if user_id in shown]
        matrix = kappa.get("matrix") or []
        tables.append(
            {
                "dim": dim,
                "names": [names.get(ids[i], str(ids[i])) for i in keep],
                "rows": [
                    {
                        "name": names.get(ids[i], str(ids[i])),
                        "cells": [{"value": matrix[i][j], "diagonal": i == j} for j in keep],
                    }
                    for i in keep
                ],
                "hidden": len(ids) - len(keep),
            }
        )
    return tables


KAPPA_BINS = 20  # the distribution's bins of width 0.1 over [−1, 1]
KAPPA_LOW = 0.2  # "slight" agreement or less (Landis and Koch): the share below it is called out


def _kappa_distributions(report: dict) -> list[dict]:
    """Per dimension, the distribution of Cohen's κ over every two counted annotators with a defined κ — the view
    that scales where a matrix of hundreds of annotators does not: a histogram of 0.1-wide bins over [−1, 1]
    (bar heights relative to the fullest bin), the quartiles, and the share below ``KAPPA_LOW``."""
    distributions = []
    for dim, stats in _ordered(report.get("dimensions", {})):
        matrix = (stats.get("cohen_kappa") or {}).get("matrix") or []
        values = sorted(
            value for i, row in enumerate(matrix) for value in row[i + 1 :] if value is not None and -1 <= value <= 1
        )
        counts = [0] * KAPPA_BINS
        for value in values:
            counts[min(KAPPA_BINS - 1, int((value + 1) * KAPPA_BINS / 2))] += 1
        fullest = max(counts) or 1
        size = len(matrix)
        q1, median, q3 = (_quantile(values, q) for q in (0.25, 0.5, 0.75))
        distributions.append(
            {
                "dim": dim,
                "pairs": len(values),
                "possible": size * (size - 1) // 2,
                "q1": q1,
                "median": median,
                "q3": q3,
                "low_share": sum(value < KAPPA_LOW for value in values) / len(values) if values else None,
                "bins": [
                    {
                        "low": round(-1 + 2 * index / KAPPA_BINS, 1),
                        "high": round(-1 + 2 * (index + 1) / KAPPA_BINS, 1),
                        "count": count,
                        "height": round(100 * count / fullest, 1),
                    }
                    for index, count in enumerate(counts)
                ],
            }
        )
    return distributions


def _quantile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values, interpolated linearly (numpy's default); None for no values."""
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _chart_data(report: dict) -> dict:
    dimensions = _ordered(report.get("dimensions", {}))
    return {
        "dimensions": [dim for dim, _ in dimensions],
        "per_day": report.get("progress", {}).get("judgments_per_day", []),
        "distribution": {dim: stats.get("label_distribution") for dim, stats in dimensions},
        "alpha": {dim: stats.get("alpha_nominal") for dim, stats in dimensions},
        "alpha_defined": any((stats.get("alpha_nominal") or {}).get("value") is not None for _, stats in dimensions),
        "generators": dict(_ordered(report.get("generators", {}))),
    }
