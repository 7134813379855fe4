"""Jobs, dataset snapshots and model versions: the record of everything the workers did."""

from django.conf import settings
from django.db import models
from django.db.models import F
from django.utils import timezone


class Job(models.Model):
    class Kind(models.TextChoices):
        IMPORT = "import", "import pairs"
        EXPORT = "export", "export snapshot"
        REWARD = "reward", "train reward model"
        SFT = "sft", "supervised fine-tuning"
        FLOW_DPO = "flow_dpo", "Flow-DPO"
        FLOW_RWR = "flow_rwr", "Flow-RWR"
        LATENT_REWARD = "latent_reward", "train latent reward model"
        GENERATE = "generate", "generate pairs"

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
        """Store progress without touching other columns (a worker writes this while an admin reads)."""
        fraction = min(1.0, done / total) if total else 0.0
        Job.objects.filter(pk=self.pk).update(progress=fraction, progress_text=text[:300])
        self.progress, self.progress_text = fraction, text[:300]

    def append_log(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        Job.objects.filter(pk=self.pk).update(log=models.functions.Concat(F("log"), models.Value(f"{stamp} {line}\n")))


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
    snapshot = models.ForeignKey(DatasetSnapshot, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="model_versions")
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name}"
