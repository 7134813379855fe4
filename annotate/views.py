"""The annotator's pages (htmx): a full page on first load, the workspace fragment after each action.

Every page works in one campaign, the person's current one (``current_member``): its pairs only, its
guidelines, qualification, quota and completion code (docs/architecture.md §11)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from alignment.labels import DIMENSION_TITLES
from annotate.forms import JudgeForm, SkipForm
from annotate.models import Campaign, CampaignMember
from annotate.selectors import annotator_history, annotator_progress, lease_sides
from annotate.services import assignment as assignments
from annotate.services import campaigns
from annotate.services.campaigns import CampaignError

SESSION_CAMPAIGN = "vidpref_campaign"

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


def current_member(request) -> CampaignMember:
    """The person's membership in their current campaign: the one chosen in this session (``/c/<slug>/``), else
    the first of theirs; a refusal (``CampaignError``) when they belong to none."""
    chosen = request.session.get(SESSION_CAMPAIGN)
    if chosen is not None:
        member = CampaignMember.objects.select_related("campaign").filter(campaign_id=chosen, user=request.user).first()
        if member is not None:
            return member
    campaign = campaigns.campaigns_for(request.user).first()
    if campaign is None:
        raise CampaignError("No study for you yet", "Your account is not part of any labelling campaign yet.")
    member = campaigns.membership(request.user, campaign)
    request.session[SESSION_CAMPAIGN] = campaign.pk
    return member


def _status_page(request, error: CampaignError | None = None, *, member: CampaignMember | None = None, status=200):
    """A page instead of the workspace: a refusal, failed qualification, a pause, or the completion code."""
    context = {"error": error, "member": member, "campaign": member.campaign if member else None}
    if member is not None and member.qualification.get("agreement"):
        scores = member.qualification["agreement"]  # jsonb does not keep the order: VQ, MQ, TA again
        context["agreement"] = [(DIMENSION_TITLES[dim], scores[dim]) for dim in DIMENSION_TITLES if dim in scores]
    if member is not None and member.status == CampaignMember.Status.ACTIVE and member.campaign.quota is not None:
        context["completion_link"] = campaigns.completion_link(member.campaign)
    if error is not None:
        status = error.status
    if request.htmx:
        return render(request, "annotate/_status.html", context, status=status)
    return render(request, "annotate/status.html", context, status=status)


def _redirect(request, url: str):
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _workspace(request, *, form: JudgeForm | None = None, status: int = 200):
    try:
        member = current_member(request)
    except CampaignError as error:
        return _status_page(request, error)
    Status = CampaignMember.Status
    if member.status == Status.NEW:
        return _redirect(request, reverse("annotate:campaign_guidelines", args=[member.campaign.slug]))
    if member.status in (Status.FAILED, Status.PAUSED):
        return _status_page(request, member=member)
    if member.status == Status.ACTIVE and campaigns.quota_reached(member):
        return _status_page(request, member=member)
    qualifying = member.status == Status.QUALIFYING
    lease = assignments.assignment_next(annotator=request.user, campaign=member.campaign, qualification=qualifying)
    if qualifying and lease is None:  # every qualification pair judged (or none left): decide
        campaigns.qualification_decide(member)
        return _workspace(request, form=form, status=status)
    campaign = member.campaign
    progress = annotator_progress(annotator=request.user)
    progress.update(done=campaigns.counted_judgments(member).count(), quota=campaign.quota)
    context = {
        "lease": lease,
        "progress": progress,
        "rows": ROWS,
        "form": form,
        "require_full_view": settings.VIDPREF["REQUIRE_FULL_VIEW"],
        "heartbeat_s": max(15, int(settings.VIDPREF["LEASE_TTL"].total_seconds() // 3)),
        "campaign": campaign if not campaign.open_to_all_accounts or campaign.guidelines else None,
        "campaign_choices": _other_campaigns(request, member),
        "qualification": campaigns.qualification_progress(member) if qualifying else None,
        "undo": _undo(request, member),
        "break_every_min": campaign.break_every_min,
    }
    if lease is not None:
        context["left"], context["right"] = lease_sides(lease)
    template = "annotate/_workspace.html" if request.htmx else "annotate/judge.html"
    return render(request, template, context, status=status)


def _other_campaigns(request, member: CampaignMember) -> list[Campaign]:
    if campaigns.is_participant(request.user):
        return []
    return [c for c in campaigns.campaigns_for(request.user) if c.pk != member.campaign_id]


def _undo(request, member: CampaignMember) -> dict | None:
    last = assignments.judgment_undoable(annotator=request.user)
    if last is None or last.pair.campaign_id != member.campaign_id:
        return None
    left = assignments.undo_window() - (timezone.now() - last.created_at)
    return {
        "url": reverse("annotate:undo", args=[last.assignment_id]),
        "seconds_left": max(0, int(left.total_seconds())),
    }


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
    try:
        judgment, created = assignments.judgment_submit(
            assignment_id=assignment_id,
            annotator=request.user,
            labels=assignments.ScreenLabels(vq=data["vq"], mq=data["mq"], ta=data["ta"]),
            comment=data["comment"],
            flag=data["flag"] or "",
            duration_ms=data["duration_ms"],
            watched_ms=data["watched_ms"],
            active_ms=data["active_ms"],
        )
    except assignments.AssignmentError as exc:
        messages.error(request, str(exc))
        return _workspace(request) if request.htmx else redirect("annotate:home")
    member = (
        CampaignMember.objects.select_related("campaign")
        .filter(campaign_id=judgment.pair.campaign_id, user=request.user)
        .first()
    )
    if member is not None and judgment.pair.qualification_for.filter(pk=member.campaign_id).exists():
        feedback = campaigns.qualification_feedback(member, judgment)  # the reference answer, then the next pair
        context = {"feedback": feedback, "member": member, "campaign": member.campaign}
        return render(request, "annotate/_feedback.html" if request.htmx else "annotate/feedback.html", context)
    if member is not None and created and judgment.pair.is_gold:
        campaigns.gold_check(member)
    if not request.htmx:
        return redirect("annotate:home")
    return _workspace(request)


@login_required
@require_POST
def undo(request, assignment_id: int):
    """Take back the last judgment (within the undo window): the same pair comes back."""
    return _act_then_next(
        request, lambda: assignments.judgment_undo(assignment_id=assignment_id, annotator=request.user)
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
    try:
        member = current_member(request)
    except CampaignError:
        member = None
    if member is not None and (member.campaign.guidelines or member.campaign.examples.exists()):
        return redirect("annotate:campaign_guidelines", member.campaign.slug)
    return render(request, "annotate/guidelines.html", {"rows": ROWS})


def campaign_entry(request, slug: str):
    """``/c/<slug>/``: an external participant arrives with the platform's ids in the query (created or
    resumed, logged in, no password); an account opens the campaign. Then on to its next step."""
    campaign = get_object_or_404(Campaign, slug=slug)
    try:
        if campaign.participant_param in request.GET:
            member = campaigns.participant_enter(campaign, request.GET.dict())
            if request.user != member.user:
                login(request, member.user, backend="django.contrib.auth.backends.ModelBackend")
        elif request.user.is_authenticated:
            member = campaigns.membership(request.user, campaign)
        elif campaign.external_link:
            raise CampaignError(
                "Missing participant id",
                f"The link lacks {campaign.participant_param}. Please open the study from the link you were given.",
                status=400,
            )
        else:
            return redirect(f"{reverse('login')}?next={request.path}")
    except CampaignError as error:
        return _status_page(request, error)
    request.session[SESSION_CAMPAIGN] = campaign.pk
    if member.status == CampaignMember.Status.NEW:
        return redirect("annotate:campaign_guidelines", slug)
    return redirect("annotate:home")


@login_required
def campaign_guidelines(request, slug: str):
    """The campaign's guidelines and worked examples; reading them (the button) starts qualification."""
    campaign = get_object_or_404(Campaign, slug=slug)
    try:
        member = campaigns.membership(request.user, campaign)
    except CampaignError as error:
        return _status_page(request, error)
    if request.method == "POST":
        campaigns.guidelines_read(member)
        request.session[SESSION_CAMPAIGN] = campaign.pk
        return redirect("annotate:home")
    examples = list(campaign.examples.select_related("pair__prompt", "pair__video_a", "pair__video_b"))
    context = {
        "campaign": campaign,
        "member": member,
        "rows": ROWS,
        "examples": [(title, [e for e in examples if e.dimension == field]) for field, title, _, _ in ROWS],
        "qualification_total": campaign.qualification_pairs.count(),
    }
    return render(request, "annotate/campaign_guidelines.html", context)


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
