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

from annotate.models import AgreementReport, Assignment, Batch, Judgment, Pair, Prompt, Video


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


class StatsFilterForm(forms.Form):
    batch = forms.ModelMultipleChoiceField(Batch.objects.all(), required=False, help_text="none: every batch")
    judged_from = forms.DateTimeField(required=False, help_text="e.g. 2026-11-01")
    judged_until = forms.DateTimeField(required=False)

    def canonical(self) -> dict:
        from annotate.services.stats import report_filters

        data = self.cleaned_data if self.is_valid() else {"batch": [], "judged_from": None, "judged_until": None}
        return report_filters(batch_ids=[batch.pk for batch in data["batch"]], judged_from=data["judged_from"],
                              judged_until=data["judged_until"])


@admin.register(AgreementReport)
class AgreementDashboardAdmin(admin.ModelAdmin):
    """Quality monitoring (DESIGN §4): the stored statistics, and what an admin can do about them."""

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
            path("annotator/<int:user_id>/set/", view(self.annotator_set_view), name="annotate_agreement_annotator_set"),
        ]
        return custom + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        from annotate.selectors import agreement_report_latest

        form = StatsFilterForm(request.GET or None)
        filters = form.canonical()
        stored = agreement_report_latest(filters=filters)
        report = stored.report if stored else None
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": "Agreement and progress",
            "form": form, "stored": stored, "report": report, "query": request.GET.urlencode(),
            "dimension_rows": _dimension_rows(report) if report else [],
            "kappa_tables": _kappa_tables(report) if report else [],
            "chart_data": _chart_data(report) if report else None,
            "generator_dimensions": [dim for dim, _ in _ordered(report.get("generators", {}))] if report else [],
            "requested_at": request.GET.get("requested"),
        }
        return render(request, "admin/annotate/agreement/dashboard.html", context)

    def recompute_view(self, request):
        from annotate.services.stats import BrokerUnavailable, agreement_report_request

        if request.method != "POST":
            return redirect("admin:annotate_agreementreport_changelist")
        form = StatsFilterForm(request.POST)
        try:
            agreement_report_request(filters=form.canonical())
        except BrokerUnavailable as exc:
            messages.warning(request, f"Not recomputed: {exc}.")
            return redirect("admin:annotate_agreementreport_changelist")
        messages.info(request, "Recomputing on the default queue; this page reloads when the new numbers are in.")
        query = request.POST.copy()
        query.pop("csrfmiddlewaretoken", None)
        query["requested"] = timezone.now().isoformat()
        return redirect(f"{reverse('admin:annotate_agreementreport_changelist')}?{query.urlencode()}")

    def status_view(self, request):
        """Polled by htmx while a recompute runs: reloads the page once a report newer than the request exists."""
        from annotate.selectors import agreement_report_latest

        stored = agreement_report_latest(filters=StatsFilterForm(request.GET or None).canonical())
        requested = parse_datetime(request.GET.get("requested") or "")
        if stored and requested and stored.computed_at >= requested:
            response = HttpResponse("")
            response["HX-Refresh"] = "true"
            return response
        return HttpResponse("recomputing…")

    def more_judgments_view(self, request):
        from annotate.services.stats import pairs_request_more_judgments

        if request.method == "POST":
            try:
                count = pairs_request_more_judgments(below_agreement=float(request.POST.get("below_agreement", "")),
                                                     extra=int(request.POST.get("extra", "")))
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
            **self.admin_site.each_context(request), "opts": self.model._meta, "annotator": annotator, "rows": rows,
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
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
            back = reverse("admin:annotate_agreementreport_changelist")  # never off-site (an open redirect)
        return redirect(back)


def _excluded_group() -> str:
    from annotate.consensus import EXCLUDED_GROUP

    return EXCLUDED_GROUP


DIMENSION_ORDER = ("VQ", "MQ", "TA")  # jsonb keeps keys sorted: the page puts them back in the paper's order


def _ordered(mapping: dict) -> list[tuple[str, object]]:
    return [(dim, mapping[dim]) for dim in DIMENSION_ORDER if dim in mapping]


def _dimension_rows(report: dict) -> list[dict]:
    names = {"VQ": "visual quality", "MQ": "motion quality", "TA": "text alignment"}
    rows = []
    for dim, stats in _ordered(report.get("dimensions", {})):
        distribution = stats.get("label_distribution") or {}
        total = sum(distribution.values()) or 1
        rows.append({"dim": dim, "name": names.get(dim, dim), **stats,
                     "shares": {label: count / total for label, count in distribution.items()}})
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
        tables.append({"dim": dim, "names": [names.get(ids[i], str(ids[i])) for i in keep],
                       "rows": [{"name": names.get(ids[i], str(ids[i])), "cells": [matrix[i][j] for j in keep]}
                                for i in keep],
                       "hidden": len(ids) - len(keep)})
    return tables


def _chart_data(report: dict) -> dict:
    dimensions = _ordered(report.get("dimensions", {}))
    return {
        "dimensions": [dim for dim, _ in dimensions],
        "per_day": report.get("progress", {}).get("judgments_per_day", []),
        "distribution": {dim: stats.get("label_distribution") for dim, stats in dimensions},
        "alpha": {dim: stats.get("alpha_nominal") for dim, stats in dimensions},
        "generators": dict(_ordered(report.get("generators", {}))),
    }
