"""The admin's hand-written forms: an import upload, a snapshot export, a guided preview, a pipeline run. The API
(``workers.api``) validates exports and previews with the same forms. The forms generated from a job kind's config
dataclass are ``workers.job_specs.JobConfigForm``."""

from __future__ import annotations

from django import forms

from alignment.flow.config import GenerationConfig
from alignment.labels import DIMENSIONS
from annotate.models import Batch, Campaign, Prompt
from annotate.services.campaigns import campaign_batch_ids
from workers.models import Job, ModelVersion
from workers.services.previews import MAX_SEED


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


class ExportForm(forms.Form):
    name = forms.SlugField(required=False, help_text="folder name (default: a timestamp)")
    judged_from = forms.DateTimeField(
        required=False, help_text="only judgments made at or after this (e.g. 2026-11-01)"
    )
    judged_until = forms.DateTimeField(required=False, help_text="only judgments made before this")
    campaign = forms.ModelChoiceField(
        Campaign.objects.all(), required=False, help_text="only this campaign's pairs (none selected: every campaign)"
    )
    batches = forms.ModelMultipleChoiceField(
        Batch.objects.all(), required=False, help_text="none selected: every batch"
    )
    min_judgments = forms.IntegerField(initial=1, min_value=1, max_value=100)
    min_agreement = forms.FloatField(
        initial=0.0,
        min_value=0.0,
        max_value=1.0,
        help_text="every label backed by at least this share of the pair's judgments",
    )
    no_majority = forms.ChoiceField(
        choices=[("tie", "tie"), ("drop", "no label")], initial="tie", help_text="a dimension without a strict majority"
    )
    include_flagged = forms.BooleanField(required=False, help_text="keep pairs an annotator flagged")
    include_excluded_annotators = forms.BooleanField(
        required=False, help_text="count disabled and 'excluded from training' annotators"
    )
    include_gold = forms.BooleanField(required=False)
    bundle_videos = forms.BooleanField(required=False, help_text="copy the videos into the snapshot")

    def job_params(self) -> dict:
        data = self.cleaned_data
        params = {
            key: data[key]
            for key in (
                "min_judgments",
                "min_agreement",
                "no_majority",
                "include_flagged",
                "include_excluded_annotators",
                "include_gold",
                "bundle_videos",
            )
        }
        params["batch_ids"] = campaign_batch_ids(data["campaign"], [batch.pk for batch in data["batches"]])
        if data["campaign"]:
            params["campaign"] = data["campaign"].slug
        for key in ("judged_from", "judged_until"):
            if data[key]:
                params[key] = data[key].isoformat()
        if data["name"]:
            params["name"] = data["name"]
        return params


PREVIEW_PARAMS = ("seed", "guidance_strength", "guidance_sigma_min", "guidance_max_ratio", "steps", "guidance_scale")


class RangeInput(forms.NumberInput):
    input_type = "range"


class PreviewForm(forms.Form):
    """The personalisation page: a prompt, the weight of each dimension, the guidance strength, a seed and the
    models. Weights range over [-1, 3]: a negative weight steers away from a dimension."""

    PROMPT_CHOICES = 500  # the newest prompts of the database in the select

    prompt_choice = forms.TypedChoiceField(
        coerce=int,
        required=False,
        empty_value=None,
        label="prompt",
        help_text=f"one of the database's newest {PROMPT_CHOICES} prompts",
    )
    prompt_text = forms.CharField(
        required=False,
        label="or your own",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="typed text wins over the selected prompt",
    )
    vq = forms.FloatField(
        label="VQ weight",
        initial=1.0,
        min_value=-1,
        max_value=3,
        widget=RangeInput(attrs={"min": -1, "max": 3, "step": 0.1}),
        help_text="visual quality",
    )
    mq = forms.FloatField(
        label="MQ weight",
        initial=1.0,
        min_value=-1,
        max_value=3,
        widget=RangeInput(attrs={"min": -1, "max": 3, "step": 0.1}),
        help_text="motion quality",
    )
    ta = forms.FloatField(
        label="TA weight",
        initial=1.0,
        min_value=-1,
        max_value=3,
        widget=RangeInput(attrs={"min": -1, "max": 3, "step": 0.1}),
        help_text="text alignment",
    )
    guidance_strength = forms.FloatField(
        initial=GenerationConfig.guidance_strength, help_text="Flow-NRG's w (the paper's 100)"
    )
    guidance_sigma_min = forms.FloatField(
        initial=GenerationConfig.guidance_sigma_min,
        min_value=0,
        max_value=0.99,
        label="stop guiding below σ",
        help_text="the last steps, at noise level σ ≤ this, are left unguided; 0 guides every step",
    )
    guidance_max_ratio = forms.FloatField(
        initial=GenerationConfig.guidance_max_ratio,
        min_value=0.01,
        label="cap on σ/(1 − σ)",
        help_text="how hard the noisiest steps are pushed; 1 guided best in the toy study",
    )
    seed = forms.IntegerField(initial=0, min_value=0, max_value=MAX_SEED, help_text="the same for both videos")
    policy_version = forms.ModelChoiceField(
        ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY),
        required=False,
        label="policy",
        empty_label="— the base policy —",
    )
    latent_reward_version = forms.ModelChoiceField(
        ModelVersion.objects.filter(kind=ModelVersion.Kind.LATENT_REWARD),
        label="latent reward model",
        help_text="trained on the policy's base ('Train a latent reward model')",
    )
    steps = forms.IntegerField(initial=GenerationConfig.steps, min_value=1, max_value=500, help_text="sampling steps")
    guidance_scale = forms.FloatField(
        initial=GenerationConfig.guidance_scale, help_text="classifier-free guidance; 1 turns it off"
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        prompts = Prompt.objects.order_by("-pk").values_list("pk", "text")[: self.PROMPT_CHOICES]
        self.fields["prompt_choice"].choices = [
            ("", "— type one below —"),
            *((pk, text if len(text) <= 120 else f"{text[:117]}…") for pk, text in prompts),
        ]
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
        return {
            "prompt": data["prompt"],
            "seed": data["seed"],
            "policy_version": data["policy_version"],
            "latent_reward_version": data["latent_reward_version"],
            "weights": ",".join(f"{dim}={data[dim]:g}" for dim in DIMENSIONS),
            "guidance_strength": data["guidance_strength"],
            "guidance_sigma_min": data["guidance_sigma_min"],
            "guidance_max_ratio": data["guidance_max_ratio"],
            "steps": data["steps"],
            "guidance_scale": data["guidance_scale"],
        }

    @classmethod
    def initial_from(cls, job: Job) -> dict:
        """The form as it was when ``job`` was queued (to tweak a preview and generate again)."""
        params = job.params
        weights = GenerationConfig(weights=params.get("weights", GenerationConfig.weights)).dimension_weights()
        return {
            "prompt_text": params.get("prompt", ""),
            **dict(zip(DIMENSIONS, weights)),
            **{key: params[key] for key in PREVIEW_PARAMS if key in params},
            "policy_version": params.get("policy_model_version_id"),
            "latent_reward_version": params.get("latent_reward_model_version_id"),
        }


class PipelineStartForm(forms.Form):
    alignment_method = forms.ChoiceField(
        choices=[("dpo", "Flow-DPO"), ("rwr", "Flow-RWR"), ("grpo", "Flow-GRPO")],
        help_text="default: VIDPREF_ALIGNMENT_METHOD",
    )
    generate_pairs = forms.IntegerField(min_value=1, max_value=100_000, help_text="new pairs queued for labelling")
    force = forms.BooleanField(
        required=False, help_text="run even if too few judgments arrived since the last snapshot"
    )
