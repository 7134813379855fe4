"""The annotator's pages (htmx): a full page on first load, the workspace fragment after each action."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from alignment.labels import DIMENSION_TITLES
from annotate.forms import JudgeForm, SkipForm
from annotate.selectors import annotator_history, annotator_progress, lease_sides
from annotate.services import assignment as assignments

ROWS = [
    ("vq", DIMENSION_TITLES["vq"], "Sharpness, detail, no noise, blur, artefacts or distortion in each frame.", "qwe"),
    (
        "mq",
        DIMENSION_TITLES["mq"],
        "Smooth, physically plausible motion: no jitter, jumps, frozen or melting parts.",
        "asd",
    ),
    (
        "ta",
        DIMENSION_TITLES["ta"],
        "How well the video shows what the prompt asks for: objects, attributes, actions.",
        "zxc",
    ),
]


def _workspace(request, *, form: JudgeForm | None = None, status: int = 200):
    lease = assignments.assignment_next(annotator=request.user)
    context = {
        "lease": lease,
        "progress": annotator_progress(annotator=request.user),
        "rows": ROWS,
        "form": form,
        "require_full_view": settings.VIDPREF["REQUIRE_FULL_VIEW"],
        "heartbeat_s": max(15, int(settings.VIDPREF["LEASE_TTL"].total_seconds() // 3)),
    }
    if lease is not None:
        context["left"], context["right"] = lease_sides(lease)
    template = "annotate/_workspace.html" if request.htmx else "annotate/judge.html"
    return render(request, template, context, status=status)


def _act_then_next(request, action):
    """Run a lease action; a refusal becomes a message. Then the next pair (a fragment for htmx)."""
    try:
        action()
    except assignments.AssignmentError as exc:
        messages.error(request, str(exc))
    if not request.htmx:
        return redirect("annotate:home")
    return _workspace(request)


@login_required
def home(request):
    return _workspace(request)


@login_required
@require_POST
def judge(request, assignment_id: int):
    form = JudgeForm(request.POST)
    if not form.is_valid():
        return _workspace(request, form=form, status=422)
    data = form.cleaned_data
    return _act_then_next(
        request,
        lambda: assignments.judgment_submit(
            assignment_id=assignment_id,
            annotator=request.user,
            labels=assignments.ScreenLabels(vq=data["vq"], mq=data["mq"], ta=data["ta"]),
            comment=data["comment"],
            flag=data["flag"] or "",
            duration_ms=data["duration_ms"],
            watched_ms=data["watched_ms"],
        ),
    )


@login_required
@require_POST
def skip(request, assignment_id: int):
    form = SkipForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    return _act_then_next(
        request, lambda: assignments.assignment_skip(assignment_id=assignment_id, annotator=request.user, reason=reason)
    )


@login_required
@require_POST
def heartbeat(request, assignment_id: int):
    try:
        lease = assignments.assignment_heartbeat(assignment_id=assignment_id, annotator=request.user)
    except assignments.AssignmentError as exc:
        return JsonResponse({"detail": str(exc)}, status=exc.status)
    return JsonResponse({"id": lease.pk, "expires_at": lease.expires_at.isoformat()})


@login_required
def guidelines(request):
    return render(request, "annotate/guidelines.html", {"rows": ROWS})


@login_required
def history(request):
    judgments = list(annotator_history(annotator=request.user))
    for judgment in judgments:
        judgment.screen = assignments.screen_labels(judgment)
    return render(
        request,
        "annotate/history.html",
        {"judgments": judgments, "progress": annotator_progress(annotator=request.user)},
    )
