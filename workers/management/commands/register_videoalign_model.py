"""Register KwaiVGI's released VideoReward (a VideoAlign checkpoint folder) as a reward ``ModelVersion``."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from workers.models import ModelVersion

# The file names of VideoAlign's format (alignment/reward/videoalign.py; not imported: it needs torch)
CONFIG_FILE = "model_config.json"
BASE_MODEL_HINT_FILE = "vidpref_base_model.json"


def videoalign_checkpoints(folder: Path) -> list[str]:
    """The ``checkpoint-<step>`` folders holding weights, or ``["."]`` when the folder holds them itself."""
    weights = ("non_lora_state_dict.pth", "model.pth")
    found = sorted(
        (p for p in folder.glob("checkpoint-*") if p.is_dir() and any((p / w).is_file() for w in weights)),
        key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1,
    )
    if found:
        return [p.name for p in found]
    return ["."] if any((folder / w).is_file() for w in weights) else []


class Command(BaseCommand):
    help = (
        "Register a VideoAlign checkpoint folder (KwaiVGI's released VideoReward: model_config.json + "
        "checkpoint-<step>/ with the LoRA adapter and non_lora_state_dict.pth) as a reward model version, for "
        "generation and pipelines. The base Qwen2-VL must be a local folder: it is recorded next to the "
        f"checkpoint in {BASE_MODEL_HINT_FILE} so every loader finds it."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path, help="the VideoAlign checkpoint folder (holds model_config.json)")
        parser.add_argument("--name", required=True, help="the model version's name (unique)")
        parser.add_argument(
            "--base-model",
            type=Path,
            default=None,
            help="the local base Qwen2-VL folder (default: the checkpoint's "
            "model_name_or_path, if that is a local folder)",
        )

    def handle(self, *args, folder: Path, name: str, base_model: Path | None, **options):
        folder = folder.resolve()
        config_path = folder / CONFIG_FILE
        try:
            sections = json.loads(config_path.read_text())
        except (OSError, ValueError) as error:
            raise CommandError(f"{config_path}: not readable as VideoAlign's model_config.json ({error})") from error
        if not isinstance(sections, dict) or "model_config" not in sections or "data_config" not in sections:
            raise CommandError(f"{config_path}: lacks model_config/data_config; not a VideoAlign checkpoint")
        checkpoints = videoalign_checkpoints(folder)
        if not checkpoints:
            raise CommandError(f"{folder}: no checkpoint-<step>/ with non_lora_state_dict.pth or model.pth")
        trained_on = str(sections["model_config"].get("model_name_or_path") or "Qwen/Qwen2-VL-2B-Instruct")
        base = base_model or Path(trained_on)
        if not (base / "config.json").is_file():
            raise CommandError(
                f"the base model {str(base)!r} is not a local folder (the checkpoint was trained on {trained_on!r}); "
                "download it elsewhere, copy it here and pass --base-model DIR"
            )
        if ModelVersion.objects.filter(name=name).exists():
            raise CommandError(f"a model version named {name!r} exists already")
        base = base.resolve()
        (folder / BASE_MODEL_HINT_FILE).write_text(json.dumps({"base_model": str(base)}, indent=2) + "\n")
        version = ModelVersion.objects.create(
            kind=ModelVersion.Kind.REWARD,
            name=name,
            path=str(folder),
            config={
                "format": "videoalign",
                "base_model": str(base),
                "trained_on": trained_on,
                "checkpoints": checkpoints,
                "data_config": {k: v for k, v in sections["data_config"].items() if k not in ("meta_data", "data_dir")},
                "model_config": sections["model_config"],
            },
            metrics={"normalization": sections.get("inference_config")},
        )
        self.stdout.write(f"registered reward model version {version.name} (id {version.pk}) at {folder}")
