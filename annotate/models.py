"""Campaigns, prompts, videos, pairs, leases and judgments (docs/architecture.md §2, campaigns §11).

Invariants live in the database: unique (pair, annotator) for leases and judgments, check constraints
on label values, on ``video_a != video_b`` and on the counters that keep a pair at or below k.
"""

import hashlib

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from alignment.labels import DIMENSIONS


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Prompt(models.Model):
    text = models.TextField()
    # Prompts can be long (a unique btree on the text itself would fail past ~2.7 kB): dedupe on a hash.
    text_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    source = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def save(self, *args, **kwargs):
        self.text_sha256 = text_sha256(self.text)
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return self.text if len(self.text) <= 80 else self.text[:77] + "…"


class Video(models.Model):
    class Origin(models.TextChoices):
        IMPORTED = "imported"
        GENERATED = "generated"

    class Status(models.TextChoices):
        READY = "ready"
        REJECTED = "rejected"

    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="videos")
    file = models.FileField(upload_to="videos/%Y/%m/", max_length=300)
    poster = models.FileField(upload_to="posters/%Y/%m/", max_length=300, blank=True)
    # sha256 of the original upload, before transcoding: identical files are stored once.
    sha256 = models.CharField(max_length=64, unique=True)
    generator = models.CharField(max_length=200, blank=True)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.IMPORTED)
    generation_params = models.JSONField(default=dict, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    fps = models.FloatField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    num_frames = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"video {self.pk} ({self.generator or 'unknown generator'})"


DEFAULT_CAMPAIGN_SLUG = "default"


class Campaign(models.Model):
    """A labelling campaign: batches of pairs, who may judge them and how (guidelines, qualification, gold
    floor), a quota per person, open/close dates and the completion code an external crowd returns with."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True, help_text="the external link is /c/<slug>/")
    guidelines = models.TextField(
        blank=True, help_text="HTML written by staff, shown to every participant before they start"
    )
    overlap = models.PositiveSmallIntegerField(default=3, help_text="k: judgments wanted per pair imported into it")
    # who may judge
    open_to_all_accounts = models.BooleanField(
        default=False, help_text="every annotator account may judge (the default campaign)"
    )
    annotator_group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.SET_NULL, help_text="accounts in this group may judge"
    )
    external_link = models.BooleanField(default=False, help_text="people arriving by /c/<slug>/?<participant>=… join")
    participant_param = models.CharField(max_length=60, default="PROLIFIC_PID")
    study_param = models.CharField(max_length=60, default="STUDY_ID", blank=True)
    session_param = models.CharField(max_length=60, default="SESSION_ID", blank=True)
    max_participants = models.PositiveIntegerField(null=True, blank=True, help_text="empty: no limit")
    quota = models.PositiveIntegerField(null=True, blank=True, help_text="judgments per person; empty: no quota")
    opens_at = models.DateTimeField(null=True, blank=True)
    closes_at = models.DateTimeField(null=True, blank=True)
    # quality
    qualification_pairs = models.ManyToManyField(
        "Pair", blank=True, related_name="qualification_for", help_text="gold pairs judged first, with feedback"
    )
    qualification_threshold = models.FloatField(
        default=0.7, help_text="share of qualification pairs to agree with the reference on, in every dimension"
    )
    gold_floor = models.FloatField(default=0.6, help_text="pause a person whose rolling gold accuracy falls below")
    gold_window = models.PositiveSmallIntegerField(default=20, help_text="gold judgments in the rolling accuracy")
    gold_min = models.PositiveSmallIntegerField(default=5, help_text="gold judgments before the floor applies")
    # the end
    completion_code = models.CharField(max_length=100, blank=True)
    completion_url = models.URLField(
        max_length=500, blank=True, help_text="where a person who reached the quota is sent (e.g. Prolific's)"
    )
    break_every_min = models.PositiveSmallIntegerField(default=45, help_text="break reminder after this active time")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(qualification_threshold__gte=0, qualification_threshold__lte=1),
                name="campaign_threshold_share",
            ),
            models.CheckConstraint(condition=Q(gold_floor__gte=0, gold_floor__lte=1), name="campaign_floor_share"),
        ]

    def __str__(self) -> str:
        return self.name


def default_campaign_pk() -> int:
    """The campaign of pairs and batches created without one (existing data was migrated into it). Reads only
    its primary key, so the migration that adds the columns (which creates it first) never depends on later
    fields of ``Campaign``."""
    pk = Campaign.objects.filter(slug=DEFAULT_CAMPAIGN_SLUG).values_list("pk", flat=True).first()
    if pk is None:
        pk = Campaign.objects.get_or_create(
            slug=DEFAULT_CAMPAIGN_SLUG, defaults={"name": "Default", "open_to_all_accounts": True}
        )[0].pk
    return pk


class CampaignExample(models.Model):
    """A worked example in a campaign's guidelines: a pair (A on the left), the reference label for one
    dimension, and why."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="examples")
    pair = models.ForeignKey("Pair", on_delete=models.PROTECT, related_name="+")
    dimension = models.CharField(max_length=2, choices=[(dim, dim.upper()) for dim in DIMENSIONS])
    label = models.CharField(max_length=3, choices=[("A", "left better"), ("B", "right better"), ("TIE", "tie")])
    reason = models.TextField(help_text="why: what to look at in this pair")
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["dimension", "order", "pk"]

    def __str__(self) -> str:
        return f"{self.dimension.upper()} example: pair {self.pair_id}"


class CampaignMember(models.Model):
    """A person in a campaign: an account (group or open campaign) or an external participant (no password)."""

    class Status(models.TextChoices):
        NEW = "new", "reading the guidelines"
        QUALIFYING = "qualifying"
        ACTIVE = "active"
        FAILED = "failed", "failed qualification"
        PAUSED = "paused", "paused (gold accuracy)"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="campaign_memberships")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    external_id = models.CharField(max_length=200, blank=True, help_text="e.g. the PROLIFIC_PID")
    study_id = models.CharField(max_length=200, blank=True)
    session_id = models.CharField(max_length=200, blank=True)
    joined_at = models.DateTimeField(auto_now_add=True)
    guidelines_read_at = models.DateTimeField(null=True, blank=True)
    admitted_at = models.DateTimeField(null=True, blank=True)
    qualification = models.JSONField(default=dict, blank=True, help_text="agreement per dimension, passed")
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_reason = models.TextField(blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "user"], name="member_once_per_campaign"),
            models.UniqueConstraint(
                fields=["campaign", "external_id"], condition=~Q(external_id=""), name="member_external_id_unique"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["new", "qualifying", "active", "failed", "paused"]), name="member_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.external_id or self.user} in {self.campaign}"


class Batch(models.Model):
    """Where a set of pairs came from: an import file, a generation job, the demo."""

    campaign = models.ForeignKey(
        Campaign, on_delete=models.PROTECT, default=default_campaign_pk, related_name="batches"
    )
    name = models.CharField(max_length=200)
    source = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    report = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return self.name


class Pair(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        COMPLETE = "complete"
        RETIRED = "retired"

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, default=default_campaign_pk, related_name="pairs")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="pairs")
    video_a = models.ForeignKey(Video, on_delete=models.PROTECT, related_name="+")
    video_b = models.ForeignKey(Video, on_delete=models.PROTECT, related_name="+")
    # Copies of video_a/b.generator, kept by database triggers (migration 0004) on every path that writes pairs or
    # renames a generator: the statistics rank generators without joining millions of videos (docs/architecture.md §4).
    generator_a = models.CharField(max_length=200, db_default="", editable=False)
    generator_b = models.CharField(max_length=200, db_default="", editable=False)
    overlap = models.PositiveSmallIntegerField(default=3, help_text="k: judgments wanted from k annotators")
    priority = models.FloatField(default=0.0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    is_gold = models.BooleanField(default=False)
    gold_labels = models.JSONField(null=True, blank=True, help_text='{"vq": "A"|"B"|"TIE", "mq": …, "ta": …}')
    gold_reason = models.TextField(blank=True, help_text="why the reference labels: the feedback after qualification")
    batch = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="pairs")
    # Slots taken: active leases + submitted judgments. Kept by the assignment services in the same
    # transaction that changes a lease, so selection reads one row instead of counting.
    filled = models.PositiveSmallIntegerField(default=0)
    judgment_count = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(video_a=F("video_b")), name="pair_two_different_videos"),
            # unordered-unique: the service stores the lower video id as video_a
            models.CheckConstraint(condition=Q(video_a__lt=F("video_b")), name="pair_videos_ordered"),
            models.UniqueConstraint(fields=["video_a", "video_b"], name="pair_unique_videos"),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="pair_overlap_positive"),
            models.CheckConstraint(condition=Q(judgment_count__lte=F("filled")), name="pair_judgments_within_filled"),
            models.CheckConstraint(
                condition=Q(is_gold=True) | Q(filled__lte=F("overlap")), name="pair_never_over_collected"
            ),
        ]
        indexes = [
            # The next-pair query walks this index in order: open, not full, best first.
            models.Index(
                F("campaign"),
                F("priority").desc(),
                F("filled").desc(),
                F("id").asc(),
                name="pair_open_queue",
                condition=Q(status="open", is_gold=False, filled__lt=F("overlap")),
            ),
            models.Index(fields=["campaign", "id"], name="pair_gold", condition=Q(is_gold=True, status="open")),
        ]

    def __str__(self) -> str:
        return f"pair {self.pk}"


class Assignment(models.Model):
    """A lease: annotator *u* may judge this pair until ``expires_at``."""

    class State(models.TextChoices):
        ACTIVE = "active"
        SUBMITTED = "submitted"
        SKIPPED = "skipped"
        EXPIRED = "expired"

    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    left_is_a = models.BooleanField()
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    skip_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pair", "annotator"], name="assignment_once_per_annotator"),
            models.CheckConstraint(
                condition=Q(state__in=["active", "submitted", "skipped", "expired"]), name="assignment_state_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["annotator"], name="assignment_active_by_user", condition=Q(state="active")),
            models.Index(fields=["expires_at"], name="assignment_active_expiry", condition=Q(state="active")),
        ]


class Label(models.TextChoices):
    A = "A", "A better"
    B = "B", "B better"
    TIE = "TIE", "tie"


class Judgment(models.Model):
    """Labels in the pair's A/B terms; the screen side is kept to measure position bias."""

    class Flag(models.TextChoices):
        NONE = "", "no flag"
        BROKEN = "broken", "broken video"
        UNSAFE = "unsafe", "unsafe content"
        UNCLEAR = "unclear", "prompt unclear"

    pair = models.ForeignKey(Pair, on_delete=models.PROTECT, related_name="judgments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments")
    assignment = models.OneToOneField(Assignment, on_delete=models.PROTECT, related_name="judgment")
    vq = models.CharField(max_length=3, choices=Label.choices)
    mq = models.CharField(max_length=3, choices=Label.choices)
    ta = models.CharField(max_length=3, choices=Label.choices)
    left_is_a = models.BooleanField()
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    watched_ms = models.PositiveIntegerField(null=True, blank=True)
    # time with the page visible and the person playing or judging (measured in the page): what people are paid by
    active_ms = models.PositiveIntegerField(null=True, blank=True)
    comment = models.TextField(blank=True, max_length=2000)
    flag = models.CharField(max_length=16, choices=Flag.choices, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pair", "annotator"], name="judgment_once_per_annotator"),
            *[
                models.CheckConstraint(condition=Q(**{f"{dim}__in": Label.values}), name=f"judgment_{dim}_valid")
                for dim in DIMENSIONS
            ],
            models.CheckConstraint(
                condition=Q(flag__in=["", "broken", "unsafe", "unclear"]), name="judgment_flag_valid"
            ),
        ]


class AgreementReport(models.Model):
    """The agreement statistics (``annotate.stats.agreement_report``) for one set of filters, as computed
    at ``computed_at``: the dashboard and the API render from this row, never recomputing per request."""

    filters_key = models.CharField(max_length=64, db_index=True, help_text="sha256 of the canonical filters")
    filters = models.JSONField(default=dict)
    report = models.JSONField(default=dict)
    seconds = models.FloatField(default=0.0)
    computed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-computed_at"]
        verbose_name = verbose_name_plural = "agreement dashboard"

    def __str__(self) -> str:
        return f"agreement report {self.computed_at:%Y-%m-%d %H:%M}"
