"""The training forms (admin → Jobs → Start a job → a training kind): the essentials first, the rest folded by
topic; a select wherever the config dataclass fixes the values; defaults that fit the machine that trains."""

import re

import pytest
from django import forms

from alignment.config import config_fields, machine_defaults
from alignment.flow.config import FlowDPOConfig, LatentRewardConfig
from workers.job_specs import JOB_SPECS, JobConfigForm, field_topic
from workers.models import DatasetSnapshot, Job

TRAINING_KINDS = [Job.Kind.REWARD, Job.Kind.SFT, Job.Kind.FLOW_DPO, Job.Kind.FLOW_RWR, Job.Kind.LATENT_REWARD]


@pytest.fixture
def snapshot(db):
    return DatasetSnapshot.objects.create(name="snap-1", uri="/nowhere", counts={"pairs": 40, "train": 32})


def as_posted(form: JobConfigForm) -> dict:
    """The form's initial values as a browser posts them (an unticked checkbox is left out)."""
    data = {name: form[name].value() for name in form.fields}
    return {
        key: ("on" if value is True else form.fields[key].prepare_value(value))
        for key, value in data.items()
        if value is not False and value is not None
    }


def test_the_essentials_come_first_and_every_other_field_is_folded_by_topic(db):
    form = JobConfigForm(JOB_SPECS[Job.Kind.FLOW_DPO])
    groups = form.groups()
    assert groups[0].title == "Essentials" and groups[0].open
    assert [field.name for field in groups[0].fields] == [
        "snapshot",
        "reward_version",
        "epochs",
        "max_steps",
        "batch_size",
        "learning_rate",
        "beta",
        "beta_schedule",
        "label_source",
        "finetune",
        "lora_rank",
    ]
    folded = {group.title: [field.name for field in group.fields] for group in groups[1:]}
    assert not any(group.open for group in groups[1:])
    assert folded["LoRA and fine-tuning"] == ["lora_alpha", "lora_target_modules"]
    assert {"mixed_precision", "gradient_checkpointing", "num_workers"} <= set(folded["Machine and data loading"])
    assert {"save_every_steps", "eval_every_steps"} <= set(folded["Evaluation and checkpoints"])
    assert "Other" not in folded  # every field of the flow configs has a topic
    shown = [field.name for group in groups for field in group.fields]
    assert sorted(shown) == sorted(form.fields) and len(shown) == len(set(shown))  # each field once


def test_the_reward_form_groups_the_model_by_its_sections(db):
    form = JobConfigForm(JOB_SPECS[Job.Kind.REWARD])
    groups = {group.title: [field.name for field in group.fields] for group in form.groups()}
    assert groups["Essentials"] == [
        "snapshot",
        "init_version",  # start from a VideoAlign checkpoint (the released VideoReward) instead of a new model
        "epochs",
        "batch_size",
        "learning_rate",
        "model.backbone",
        "model.backbone_path",
        "loss",
        "keep_best",
    ]
    assert "model.hidden_size" in groups["Model: small backbone"] and "model.lora_rank" in groups["Model: Qwen2-VL"]
    assert groups["Model: frames"] == ["model.fps", "model.max_frames", "model.max_pixels", "model.min_pixels"]
    titles = list(groups)
    assert titles.index("Model: Qwen2-VL") < titles.index("Optimiser and schedule")  # the model's groups first
    assert (
        field_topic(next(f for f in config_fields(LatentRewardConfig) if f.name == "mixed_precision"))
        == "Machine and data loading"
    )


@pytest.mark.parametrize("kind", TRAINING_KINDS + [Job.Kind.GENERATE])
def test_every_field_with_a_fixed_set_of_values_is_a_select(db, kind):
    spec = JOB_SPECS[kind]
    form = JobConfigForm(spec)
    for config_field in config_fields(spec.config_dataclass()):
        if config_field.name not in form.fields:
            continue
        field = form.fields[config_field.name]
        if config_field.choices:
            assert isinstance(field, forms.ChoiceField), config_field.name
            assert [value for value, _ in field.choices] == [str(choice) for choice in config_field.choices]
        elif config_field.kind in (int, float):
            assert not isinstance(field, forms.ChoiceField), config_field.name


def test_best_by_and_the_backbone_are_selects(staff_client, snapshot):
    form = JobConfigForm(JOB_SPECS[Job.Kind.REWARD])
    assert [value for value, _ in form.fields["best_by"].choices] == ["accuracy", "loss"]
    assert [value for value, _ in form.fields["model.backbone"].choices] == ["qwen2vl", "small"]
    assert form.fields["model.backbone"].initial == "small"  # the site's default (the small CPU backbone)
    assert [value for value, _ in form.fields["model.dtype"].choices] == ["float32", "bfloat16", "float16"]
    page = staff_client.get("/admin/workers/job/new/reward/").content.decode()
    assert re.search(r'<select name="best_by"[^>]*>', page) and re.search(r'<select name="model.backbone"', page)
    refused = staff_client.post(
        "/admin/workers/job/new/reward/", {"snapshot": snapshot.pk, "best_by": "auc", "model.backbone": "resnet"}
    )
    errors = refused.context["form"].errors
    assert "Select a valid choice" in errors["best_by"][0] and "Select a valid choice" in errors["model.backbone"][0]
    assert not Job.objects.exists()


def test_a_folded_group_with_an_error_opens_and_the_page_fits_a_laptop_screen(staff_client, snapshot):
    page = staff_client.get("/admin/workers/job/new/reward/").content.decode()
    essentials = page.index("config-essentials")
    assert essentials < page.index('<details class="config-group"')  # the essentials first, unfolded
    assert page.index('name="epochs"') < page.index('<details class="config-group"')
    assert page.index('name="model.hidden_size"') > page.index('data-group="Model: small backbone"')
    assert '<details class="config-group" open' not in page  # all folded until something needs fixing
    # Above the fold at 1366×768: the inputs and the primary fields, about 10 rows, not ~50.
    assert page[: page.index('<details class="config-group"')].count('class="form-row') <= 10
    refused = staff_client.post(
        "/admin/workers/job/new/reward/",
        {**as_posted(JobConfigForm(JOB_SPECS[Job.Kind.REWARD])), "snapshot": snapshot.pk, "model.tubelet": "2, x, 8"},
    ).content.decode()
    opened = re.findall(r'<details class="config-group" open data-group="([^"]+)"', refused)
    assert opened == ["Model: small backbone"]  # the group that holds the error, and only it


def test_flow_forms_default_to_auto_precision_and_checkpointing_decided_by_the_training_machine(
    staff_client, snapshot, django_capture_on_commit_callbacks
):
    form = JobConfigForm(JOB_SPECS[Job.Kind.FLOW_DPO])
    assert form.fields["mixed_precision"].initial == "auto"  # not bf16: the web cannot know whether workers have CUDA
    assert [value for value, _ in form.fields["mixed_precision"].choices] == ["auto", "no", "bf16", "fp16"]
    assert form["gradient_checkpointing"].value() == ""  # auto
    assert [label for _, label in form.fields["gradient_checkpointing"].choices] == ["auto", "on", "off"]
    data = {**as_posted(form), "snapshot": snapshot.pk, "gradient_checkpointing": "false", "mixed_precision": "no"}
    with django_capture_on_commit_callbacks():
        response = staff_client.post("/admin/workers/job/new/flow_dpo/", data)
    assert response.status_code == 302, response.context["form"].errors
    assert Job.objects.get().params["config"] == {"gradient_checkpointing": False, "mixed_precision": "no"}


def test_auto_settings_are_decided_on_the_machine_that_trains():
    config = FlowDPOConfig(output_dir="o", policy="p", snapshot="s")
    assert (config.mixed_precision, config.gradient_checkpointing) == ("auto", None)
    on_cpu = machine_defaults(config, cuda=False, bf16=False)
    assert (on_cpu.mixed_precision, on_cpu.gradient_checkpointing) == ("no", False)
    on_gpu = machine_defaults(config, cuda=True, bf16=True)
    assert (on_gpu.mixed_precision, on_gpu.gradient_checkpointing) == ("bf16", True)
    old_gpu = machine_defaults(config, cuda=True, bf16=False)
    assert (old_gpu.mixed_precision, old_gpu.gradient_checkpointing) == ("no", True)
    chosen = FlowDPOConfig(
        output_dir="o", policy="p", snapshot="s", mixed_precision="fp16", gradient_checkpointing=False
    )
    assert machine_defaults(chosen, cuda=True, bf16=True) == chosen  # what the admin chose is kept
