"""register_videoalign_model: a VideoAlign checkpoint folder becomes a reward ModelVersion (no torch here)."""

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from workers.models import ModelVersion

pytestmark = pytest.mark.django_db


def videoalign_folder(root):
    folder = root / "VideoReward"
    (folder / "checkpoint-40").mkdir(parents=True)
    (folder / "checkpoint-40" / "non_lora_state_dict.pth").write_bytes(b"")
    sections = {
        "data_config": {
            "fps": 2.0,
            "meta_data": "/x.csv",
            "data_dir": "/x",
            "prompt_template_type": "detailed_special",
        },
        "model_config": {"model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct", "output_dim": 3},
        "inference_config": {"VQ_mean": 0.1, "VQ_std": 1.2},
    }
    (folder / "model_config.json").write_text(json.dumps(sections))
    base = root / "Qwen2-VL-2B-Instruct"
    base.mkdir()
    (base / "config.json").write_text("{}")
    return folder, base


def test_registers_a_reward_version_and_records_the_base_model(tmp_path):
    folder, base = videoalign_folder(tmp_path)
    call_command("register_videoalign_model", str(folder), "--name", "videoreward", "--base-model", str(base))
    version = ModelVersion.objects.get(name="videoreward")
    assert version.kind == ModelVersion.Kind.REWARD and version.path == str(folder.resolve())
    assert version.config["base_model"] == str(base.resolve()) and version.config["checkpoints"] == ["checkpoint-40"]
    assert "meta_data" not in version.config["data_config"]
    assert json.loads((folder / "vidpref_base_model.json").read_text()) == {"base_model": str(base.resolve())}


def test_refuses_without_a_local_base_model_or_a_checkpoint(tmp_path):
    folder, _ = videoalign_folder(tmp_path)
    with pytest.raises(CommandError, match="not a local folder"):
        call_command("register_videoalign_model", str(folder), "--name", "videoreward")
    with pytest.raises(CommandError, match="model_config.json"):
        call_command("register_videoalign_model", str(tmp_path), "--name", "other")
    assert not ModelVersion.objects.exists()
