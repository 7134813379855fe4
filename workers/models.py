"""Jobs, dataset snapshots and model versions: the record of everything the workers did."""

from django.conf import settings
from django.db import models
from django.db.models import F
from django.utils import timezone


class JobCancelled(Exception):
    """Raised inside a running task when its job was cancelled from the admin."""


class Pipeline(models.Model):
    """One turn of the loop: export → reward model → alignment → generate pairs → queued for labelling.
    Its stages are jobs (``Job.pipeline``); at most one pipeline is active at a time (a database constraint)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"
        CANCELLED = "cancelled"

    STAGES = ("export", "reward", "align", "generate")

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=16, blank=True, help_text="the stage running now, or the last one run")
    params = models.JSONField(default=dict, blank=True)
    trigger = models.CharField(max_length=16, default="admin", help_text="admin or schedule")
    is_active = models.BooleanField(default=True, help_text="queued or running; only one pipeline may be")
    reason = models.TextField(blank=True, help_text="why it was skipped, or what failed")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=models.Q(is_active=True), name="one_active_pipeline"
            ),
        ]

    def __str__(self) -> str:
        return f"pipeline #{self.pk} ({self.status}{f', {self.stage}' if self.stage else ''})"


class Job(models.Model):
    class Kind(models.TextChoices):
        IMPORT = "import", "import pairs"
        EXPORT = "export", "export snapshot"
        REWARD = "reward", "train reward model"
        SFT = "sft", "supervised fine-tuning"
        FLOW_DPO = "flow_dpo", "Flow-DPO"
        FLOW_RWR = "flow_rwr", "Flow-RWR"
        FLOW_GRPO = "flow_grpo", "Flow-GRPO"
        LATENT_REWARD = "latent_reward", "train latent reward model"
        GENERATE = "generate", "generate pairs"
        PREVIEW = "preview", "guided preview"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0, help_text="0 to 1")
    progress_text = models.CharField(max_length=300, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    celery_id = models.CharField(max_length=64, blank=True)
    attempts = models.JSONField(
        default=list,
        blank=True,
        help_text="one entry per delivery of the task: worker, pid, start, end, outcome (a redelivered job shows both)",
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="the worker's last sign of life")
    pipeline = models.ForeignKey(Pipeline, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(progress__gte=0, progress__lte=1), name="job_progress_range"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.SUCCEEDED, self.Status.FAILED, self.Status.CANCELLED}

    def report_progress(self, done: int, total: int, text: str = "") -> None:
        """Store progress and a heartbeat without touching other columns (a worker writes this while an admin
        reads). Raises ``JobCancelled`` once an admin has cancelled the job: long loops stop at their next step."""
        fraction = min(1.0, done / total) if total else 0.0
        updated = Job.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
            progress=fraction, progress_text=text[:300], heartbeat_at=timezone.now()
        )
        self.progress, self.progress_text = fraction, text[:300]
        if not updated:
            raise JobCancelled(f"job {self.pk} was cancelled")

    def append_log(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        Job.objects.filter(pk=self.pk).update(log=models.functions.Concat(F("log"), models.Value(f"{stamp} {line}\n")))


class GuidedPreview(Job):
    """Jobs of kind ``preview`` as the admin's personalisation page shows them (its entry in the admin index)."""

    class Meta:
        proxy = True
        verbose_name = "personalisation (guided preview)"
        verbose_name_plural = "personalisation (guided previews)"


class DatasetSnapshot(models.Model):
    """An exported snapshot (DESIGN §5): the files live at ``uri``; this row says what they hold."""

    class Kind(models.TextChoices):
        TRAINING = "training", "training (judged pairs)"
        EVALUATION = "evaluation", "evaluation set"

    name = models.CharField(max_length=100, unique=True)
    uri = models.CharField(max_length=500, help_text="the snapshot's folder (or s3:// prefix)")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TRAINING)
    filters = models.JSONField(default=dict, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    agreement = models.JSONField(default=dict, blank=True)
    bytes = models.BigIntegerField(default=0)
    judgment_watermark = models.BigIntegerField(
        null=True, blank=True, help_text="the highest judgment id in the database when exported: newer ones are news"
    )
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="snapshots")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"snapshot {self.name} ({self.counts.get('pairs', 0)} pairs)"


class ModelVersion(models.Model):
    """A trained model: its folder, what it was trained on, and how well it did."""

    class Kind(models.TextChoices):
        REWARD = "reward", "VideoReward"
        LATENT_REWARD = "latent_reward", "latent reward (Flow-NRG)"
        POLICY = "policy", "aligned video model"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=100, unique=True)
    path = models.CharField(max_length=500, help_text="the model folder (safetensors + configs)")
    snapshot = models.ForeignKey(
        DatasetSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions"
    )
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name}"


class Webhook(models.Model):
    """An endpoint told about snapshots and jobs; each request is signed with HMAC-SHA256 of its secret."""

    class Event(models.TextChoices):
        SNAPSHOT_CREATED = "snapshot.created"
        JOB_SUCCEEDED = "job.succeeded"
        JOB_FAILED = "job.failed"

    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=200, help_text="shared with the receiver; signs every delivery")
    events = models.JSONField(default=list, blank=True, help_text="event names; empty: every event")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"

    def wants(self, event: str) -> bool:
        return self.is_active and (not self.events or event in self.events)


class WebhookDelivery(models.Model):
    """One event sent to one webhook: the delivery log, with every attempt's outcome."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=50)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook.name} ({self.status})"
