"""The kinds of job an admin can start, and a form for each generated from its config dataclass.

A training job's form lists every field of its ``alignment`` config dataclass (nested ones as dotted
names, ``model.lora_rank``) with the site's defaults as initial values and the dataclass's field
comments as help text. The fields that matter first (the job's inputs and its spec's ``primary`` fields:
steps, batch size, learning rate, β, the backbone …) come first; the others are folded by topic
(``TOPICS``; a nested dataclass's fields by its section comments, "Model: small backbone"). A field whose
values are a fixed set (a ``typing.Literal``, ``metadata={"choices": …}``, or a comment that starts
``a | b | c``) is a select; an optional bool (None meaning "auto") a select of auto / on / off. The job
stores only what the admin changed; the worker merges that over the site's base config. The config
modules are torch-free, so the web process can read them; settings that depend on the machine that trains
(mixed precision, gradient checkpointing) default to ``auto``, decided by the trainer on that machine.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from django import forms

from alignment.config import config_fields
from workers.models import DatasetSnapshot, Job, ModelVersion
from workers.services.alignment import policy_base_config, policy_job_create
from workers.services.generation import generation_job_create
from workers.services.reward import reward_base_config, reward_job_create


@dataclass(frozen=True)
class JobSpec:
    kind: str
    title: str
    description: str
    config_class: str | None = None  # "module:Class" of a torch-free config dataclass
    hidden: frozenset[str] = frozenset()  # fields the worker fills in (paths, the snapshot)
    base_config: Callable[[], dict] | None = None  # the site's defaults over the dataclass's
    create: Callable[..., Job] | None = None  # the service: create(<inputs>=, overrides=, created_by=)
    url_name: str | None = None  # a kind with its own admin form (import, export)
    inputs: tuple[str, ...] = ("snapshot",)  # rows the job reads, chosen in the form (see JobConfigForm.INPUTS)
    primary: tuple[str, ...] = ()  # config fields shown first, unfolded, in this order; the rest folded by topic

    def config_dataclass(self):
        module, _, name = self.config_class.partition(":")
        return getattr(importlib.import_module(module), name)


_POLICY_HIDDEN = frozenset(
    {
        "output_dir",
        "policy",
        "snapshot",
        "media_root",
        "cache_dir",
        "progress",
        "reward_model",
        "train_split",
        "val_split",
    }
)
_POLICY_SPECS = [
    JobSpec(
        kind,
        title,
        description,
        config_class=f"alignment.flow.config:{name}",
        hidden=_POLICY_HIDDEN,
        base_config=partial(policy_base_config, kind),
        create=partial(policy_job_create, kind=kind),
        inputs=("snapshot", "reward_version"),
        primary=(
            "epochs",
            "max_steps",
            "batch_size",
            "learning_rate",
            *method_fields,
            "label_source",
            "finetune",
            "lora_rank",
        ),
    )
    for kind, title, name, method_fields, description in (
        (
            Job.Kind.SFT,
            "Supervised fine-tuning",
            "SFTConfig",
            (),
            "Plain flow matching on the chosen videos of a snapshot (LoRA on the base policy); gpu queue.",
        ),
        (
            Job.Kind.FLOW_DPO,
            "Flow-DPO",
            "FlowDPOConfig",
            ("beta", "beta_schedule"),
            "Direct preference optimisation for flow matching on the snapshot's pairs; gpu queue.",
        ),
        (
            Job.Kind.FLOW_RWR,
            "Flow-RWR",
            "FlowRWRConfig",
            ("temperature",),
            "Reward-weighted flow matching; rewards from consensus labels or a reward model; gpu queue.",
        ),
    )
]

_GRPO_SPEC = JobSpec(
    Job.Kind.FLOW_GRPO,
    "Flow-GRPO",
    "Online RL: the policy samples groups of videos for the snapshot's prompts, the reward model scores them, "
    "and the LoRA learns from the scores within each group (clipped, with a KL to the base); gpu queue.",
    config_class="alignment.flow.config:FlowGRPOConfig",
    hidden=frozenset(
        {"output_dir", "policy", "snapshot", "prompt_file", "progress", "reward_model", "reward_base_model"}
    ),
    base_config=partial(policy_base_config, Job.Kind.FLOW_GRPO),
    create=partial(policy_job_create, kind=Job.Kind.FLOW_GRPO),
    inputs=("snapshot", "reward_version"),
    primary=(
        "max_steps",
        "batch_size",
        "group_size",
        "sample_steps",
        "learning_rate",
        "kl_weight",
        "dimension_weights",
        "lora_rank",
    ),
)

JOB_SPECS: dict[str, JobSpec] = {
    spec.kind: spec
    for spec in (
        JobSpec(
            Job.Kind.IMPORT,
            "Import pairs",
            "Upload a manifest and its videos; probed, transcoded, deduplicated.",
            url_name="admin:workers_job_import",
        ),
        JobSpec(
            Job.Kind.EXPORT,
            "Export a snapshot",
            "Judged pairs with their consensus labels, as Parquet + CSV.",
            url_name="admin:workers_datasetsnapshot_export",
        ),
        JobSpec(
            Job.Kind.REWARD,
            "Train a reward model",
            "VideoReward (VQ, MQ, TA) on a training snapshot; gpu queue.",
            config_class="alignment.reward.config:RewardTrainConfig",
            hidden=frozenset(
                {
                    "output_dir",
                    "snapshot",
                    "train_csv",
                    "val_csv",
                    "media_root",
                    "progress",
                    "train_split",
                    "val_split",
                    "init_from",  # the "start from" input
                    "init_from_base_model",
                }
            ),
            inputs=("snapshot", "init_version"),
            base_config=reward_base_config,
            create=reward_job_create,
            primary=(
                "epochs",
                "batch_size",
                "learning_rate",
                "model.backbone",
                "model.backbone_path",
                "loss",
                "keep_best",  # best_by is folded under it: accuracy unless asked
            ),
        ),
        *_POLICY_SPECS,
        _GRPO_SPEC,
        JobSpec(
            Job.Kind.LATENT_REWARD,
            "Train a latent reward model",
            "Flow-NRG's reward on noisy latents: the "
            "policy's first blocks and a head per dimension, trained on the snapshot's pairs noised alike; "
            "gpu queue.",
            config_class="alignment.flow.config:LatentRewardConfig",
            hidden=_POLICY_HIDDEN,
            base_config=partial(policy_base_config, Job.Kind.LATENT_REWARD),
            create=partial(policy_job_create, kind=Job.Kind.LATENT_REWARD),
            primary=("epochs", "max_steps", "batch_size", "learning_rate", "num_layers", "readout", "noisy"),
        ),
        JobSpec(
            Job.Kind.GENERATE,
            "Generate pairs",
            "Two candidates per prompt — an aligned policy vs the base, two "
            "seeds of one policy, or Flow-NRG-guided vs unguided — scored by the reward model and queued for "
            "labelling in random order (or least certain first); gpu queue.",
            config_class="alignment.flow.config:GenerationConfig",
            create=generation_job_create,
            inputs=("policy_version", "latent_reward_version", "reward_version"),
            primary=("pairs", "source", "steps", "weights", "guidance_strength"),
        ),
        JobSpec(
            Job.Kind.PREVIEW,
            "Guided preview (personalisation)",
            "One prompt and seed sampled without and with "
            "Flow-NRG guidance by your VQ/MQ/TA weights, side by side; gpu queue.",
            url_name="admin:workers_guidedpreview_changelist",
        ),
    )
}


def choices_from_doc(doc: str) -> list[str] | None:
    """``"bt_ties | bt | regression"`` at the start of a field's comment: the values it takes."""
    match = re.match(r"^\s*([\w.-]+(?:\s*\|\s*[\w.-]+)+)(?:\s|$|\()", doc)
    return [value.strip() for value in match.group(1).split("|")] if match else None


def _nested_get(values: dict, dotted: str, default):
    node = values
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _nested_set(values: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = values
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


class TupleField(forms.CharField):
    """A tuple config value, typed as comma-separated items (``2, 8, 8``)."""

    def __init__(self, *args, item_type=str, **kwargs):
        self.item_type = item_type
        super().__init__(*args, **kwargs)

    def prepare_value(self, value):
        return ", ".join(str(item) for item in value) if isinstance(value, (tuple, list)) else value

    def to_python(self, value):
        text = super().to_python(value)
        if not text:
            return ()
        try:
            return tuple(self.item_type(item.strip()) for item in text.split(","))
        except ValueError as exc:
            raise forms.ValidationError(f"comma-separated {self.item_type.__name__} values, e.g. 2, 8, 8") from exc


class JSONValueField(forms.CharField):
    def prepare_value(self, value):
        return value if isinstance(value, str) else json.dumps(value)

    def to_python(self, value):
        text = super().to_python(value)
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not JSON: {exc}") from exc


AUTO_BOOL_CHOICES = [("", "auto"), ("true", "on"), ("false", "off")]


def _choice_field(choices, *, required: bool, **common) -> forms.Field:
    """A select of ``choices`` (any hashable values; posted as their text, coerced back)."""
    by_text = {str(choice): choice for choice in choices}
    options = [(str(choice), str(choice)) for choice in choices]
    if not required:
        options = [("", "— none —"), *options]
    return forms.TypedChoiceField(
        choices=options, coerce=lambda text: by_text[text], required=required, empty_value=None, **common
    )


def _form_field(config_field, initial) -> forms.Field:
    kind, doc = config_field.kind, config_field.doc
    required = not config_field.optional
    common = {"label": config_field.name, "help_text": doc, "initial": initial}
    choices = config_field.choices or (choices_from_doc(doc) if kind is str else None)
    if choices:
        return _choice_field(choices, required=required and initial is not None, **common)
    if kind is bool and config_field.optional:  # None means "auto": decided on the machine that trains
        return forms.TypedChoiceField(
            choices=AUTO_BOOL_CHOICES,
            coerce=lambda text: text == "true",
            required=False,
            empty_value=None,
            **{**common, "initial": {None: "", True: "true", False: "false"}.get(initial)},
        )
    if kind is bool:
        return forms.BooleanField(required=False, **common)
    if kind is int:
        return forms.IntegerField(required=required, **common)
    if kind is float:
        return forms.FloatField(required=required, **common)
    if kind is str:
        return forms.CharField(required=required and initial not in ("", None), **common)
    if typing.get_origin(kind) is tuple:
        item_types = [arg for arg in typing.get_args(kind) if arg is not Ellipsis]
        return TupleField(item_type=item_types[0] if item_types else str, required=False, **common)
    return JSONValueField(required=False, **{**common, "help_text": f"{doc} (JSON)".strip()})


# The folded groups of a form, in order: a field goes to the first topic that names it or a prefix of it. The
# fields of a nested dataclass ("model.…") are grouped by its section comments instead; the rest: "Other".
TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Labels, loss and data",
        ("loss", "theta", "label_source", "dimension_weights", "min_margin", "num_frames", "height", "width", "noisy"),
    ),
    ("LoRA and fine-tuning", ("finetune", "lora_")),
    (
        "Optimiser and schedule",
        (
            "epochs",
            "max_steps",
            "learning_rate",
            "head_learning_rate",
            "weight_decay",
            "batch_size",
            "gradient_accumulation_steps",
            "warmup_steps",
            "lr_schedule",
            "max_grad_norm",
            "sigma_shift",
            "beta",
            "temperature",
            "num_layers",
            "readout",
        ),
    ),
    (
        "Evaluation and checkpoints",
        ("keep_best", "best_by", "save_every_steps", "keep_checkpoints", "eval_every_steps", "max_eval_"),
    ),
    ("Sampling", ("pairs", "source", "steps", "guidance_scale", "prompt_file", "queue_order")),
    ("Flow-NRG guidance", ("weights", "guidance_")),
    (
        "Machine and data loading",
        (
            "mixed_precision",
            "gradient_checkpointing",
            "num_workers",
            "decode_threads",
            "cache_videos",
            "frame_cache_",
            "encode_batch_size",
            "seed",
        ),
    ),
)


def field_topic(config_field) -> str:
    """The folded group a config field belongs to (see ``TOPICS``)."""
    name = config_field.name
    if "." in name:
        prefix = name.rsplit(".", 1)[0].replace(".", " ").capitalize()
        section = config_field.section.split("(")[0].strip()
        return f"{prefix}: {section}" if section else prefix
    for title, names in TOPICS:
        if any(name == entry or (entry.endswith("_") and name.startswith(entry)) for entry in names):
            return title
    return "Other"


@dataclass
class FieldGroup:
    """Fields shown together: the first group unfolded, the others each in a ``<details>``."""

    title: str
    fields: list  # bound fields
    open: bool = False

    @property
    def has_errors(self) -> bool:
        return any(field.errors for field in self.fields)


class JobConfigForm(forms.Form):
    """The rows a job reads (a snapshot, model versions) and every config field of its kind, initialised
    with the site's defaults."""

    INPUTS = {
        "snapshot": lambda: forms.ModelChoiceField(
            DatasetSnapshot.objects.filter(kind=DatasetSnapshot.Kind.TRAINING),
            help_text="the training snapshot to learn from",
        ),
        "reward_version": lambda: forms.ModelChoiceField(
            ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD),
            required=False,
            label="reward model",
            help_text="relabels pairs (label_source reward_model), scores videos for Flow-RWR, orders generated pairs",
        ),
        "init_version": lambda: forms.ModelChoiceField(
            ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD, config__format="videoalign"),
            required=False,
            label="start from",
            empty_label="— a new model —",
            help_text="a VideoAlign checkpoint (KwaiVGI's released VideoReward, registered with "
            "register_videoalign_model, or one fine-tuned here) to fine-tune in its own format: its prompt, reward "
            "tokens and frame sampling; the model settings below then do not apply (but for model.dtype)",
        ),
        "policy_version": lambda: forms.ModelChoiceField(
            ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY),
            required=False,
            label="aligned policy",
            empty_label="— the base policy —",
            help_text="the policy that generates (next to the base for policy_vs_base, which needs one); empty: the "
            "base policy",
        ),
        "latent_reward_version": lambda: forms.ModelChoiceField(
            ModelVersion.objects.filter(kind=ModelVersion.Kind.LATENT_REWARD),
            required=False,
            label="latent reward model (Flow-NRG)",
            help_text="guides side A by the weights and strength below; needed for guided_vs_unguided",
        ),
    }

    def __init__(self, spec: JobSpec, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = spec
        for name in spec.inputs:
            self.fields[name] = self.INPUTS[name]()
        base = spec.base_config() if spec.base_config else {}
        self.config_initial = {}
        self.topics: dict[str, str] = {}
        folded: dict[str, forms.Field] = {}
        for config_field in config_fields(spec.config_dataclass()):
            if config_field.name in spec.hidden or config_field.name.split(".")[0] in spec.hidden:
                continue
            default = None if config_field.default is dataclasses.MISSING else config_field.default
            initial = _nested_get(base, config_field.name, default)
            self.config_initial[config_field.name] = initial
            field = _form_field(config_field, initial)
            if config_field.name in spec.primary:
                self.fields[config_field.name] = field
            else:
                folded[config_field.name] = field
                self.topics[config_field.name] = field_topic(config_field)
        # The inputs, then the primary fields in the spec's order, then the folded ones in the dataclass's.
        primary = [name for name in spec.primary if name in self.fields]
        self.fields = {**{name: self.fields[name] for name in [*spec.inputs, *primary]}, **folded}

    def groups(self) -> list[FieldGroup]:
        """The essentials (inputs and primary fields) unfolded, then one folded group per topic (in ``TOPICS``'
        order, a nested dataclass's sections where its first field is); a group with an error is open."""
        essentials = FieldGroup("Essentials", [], open=True)
        folded: dict[str, FieldGroup] = {}
        for bound in self:
            topic = self.topics.get(bound.name)
            if topic is None:
                essentials.fields.append(bound)
            else:
                folded.setdefault(topic, FieldGroup(topic, [])).fields.append(bound)
        order = [title for title, _ in TOPICS]  # a nested dataclass's groups first (as declared), "Other" last
        ranked = sorted(
            folded.values(),
            key=lambda group: (
                order.index(group.title) if group.title in order else len(order) if group.title == "Other" else -1
            ),
        )
        for group in ranked:
            group.open = group.has_errors
        return [essentials, *ranked]

    def config_overrides(self) -> dict:
        """The values the admin changed from the site's defaults, nested like the config dataclass."""
        overrides: dict = {}
        for name, initial in self.config_initial.items():
            value = self.cleaned_data.get(name)
            if isinstance(initial, list):
                initial = tuple(initial)
            if value != initial and not (value in ("", None) and initial in ("", None)):
                _nested_set(overrides, name, value)
        return overrides

    def create_job(self, *, created_by) -> Job:
        inputs = {name: self.cleaned_data.get(name) for name in self.spec.inputs}
        return self.spec.create(**inputs, overrides=self.config_overrides(), created_by=created_by)
