import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from alignment.cli import main
from alignment.config import config_from_dict, load_config, start_study
from alignment.data import write_snapshot
from alignment.reward.train import RewardTrainConfig, checkpoints, train_reward_model
from alignment.toyworld import write_mp4
from tests.alignment.test_reward_model import tiny_qwen_folder  # noqa: F401  (session fixture)

torch.set_num_threads(2)
PROMPTS = ["a red circle moving left", "a blue square moving up", "a green triangle", "a white ball"]


def brightness_snapshot(folder: Path, n_videos=16, n_pairs=48, seed=0, val_flipped=False) -> Path:
    """Flat videos whose grey level decides VQ (brighter is better); ties when levels are equal.
    ``val_flipped``: the val pairs say the opposite (darker is better), so learning raises the val loss."""
    rng = np.random.default_rng(seed)
    levels = rng.choice([40, 80, 120, 160, 200], size=n_videos)
    video_folder = folder.parent / f"{folder.name}-videos"
    video_folder.mkdir(parents=True)
    videos = {}
    for index, level in enumerate(levels):
        frames = np.full((4, 32, 32, 3), level, np.uint8)
        frames[:, :, : 4 + index % 8] = 255 - level  # a little structure per video
        videos[f"videos/{index}.mp4"] = write_mp4(frames, video_folder / f"{index}.mp4", 4, min_side=1)
    rows = []
    for pair_id in range(n_pairs):
        a, b = rng.choice(n_videos, size=2, replace=False)
        label = int(np.sign(levels[a] - levels[b]))
        if val_flipped and pair_id % 4 == 0:
            label = -label
        rows.append(
            {
                "pair_id": pair_id,
                "prompt": PROMPTS[pair_id % 4],
                "video_a": f"videos/{a}.mp4",
                "video_b": f"videos/{b}.mp4",
                "vq": label,
                "mq": label,
                "ta": int(rng.integers(-1, 2)),
                "split": "val" if pair_id % 4 == 0 else "train",
            }
        )
    return write_snapshot(rows, folder, videos=videos)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    return brightness_snapshot(tmp_path_factory.mktemp("snap") / "s1")


def small_model(**overrides):
    return {
        "backbone": "small",
        "hidden_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "frame_size": 32,
        "num_frames": 4,
        "tubelet": [2, 8, 8],
        "vocab_size": 512,
        "fps": None,
        **overrides,
    }


def write_config(path: Path, **values) -> Path:
    path.write_text(json.dumps(values))
    return path


def train_config(tmp_path, snapshot, **overrides):
    values = {
        "output_dir": str(tmp_path / "run"),
        "snapshot": str(snapshot),
        "model": small_model(),
        "learning_rate": 3e-3,
        "batch_size": 4,
        "epochs": 1,
        "num_workers": 0,
        "progress": False,
    }
    values.update(overrides)
    return values


def test_config_loading_yaml_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: out\nsnapshot: snap\nmodel:\n  backbone: small\n  tubelet: [2, 4, 4]\n")
    config = load_config(RewardTrainConfig, path, ["epochs=3", "model.shared_head=true", "loss=bt"])
    assert config.epochs == 3 and config.model.shared_head and config.model.tubelet == (2, 4, 4) and config.loss == "bt"
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr'\]"):
        load_config(RewardTrainConfig, path, ["lr=1"])


def test_start_study_saves_the_config_and_refuses_a_folder_that_holds_a_study(tmp_path):
    from studies.reward_toy import ToyStudyConfig

    config = ToyStudyConfig(output_dir=str(tmp_path / "study" / "nested"), epochs=3)
    folder = start_study(config, "study_config.json", taken_by="snapshot")
    assert json.loads((folder / "study_config.json").read_text())["epochs"] == 3
    (folder / "snapshot").mkdir()
    with pytest.raises(FileExistsError, match=r"nested: already holds a study; pick a new --output-dir"):
        start_study(ToyStudyConfig(output_dir=str(folder), epochs=5), "study_config.json", taken_by="snapshot")
    assert json.loads((folder / "study_config.json").read_text())["epochs"] == 3  # the first study's config is kept


def test_reward_train_cli_two_steps_small(tmp_path, snapshot, capsys):
    config = write_config(tmp_path / "train.json", **train_config(tmp_path, snapshot, max_steps=2))
    assert main(["reward-train", "--config", str(config)]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert [entry["step"] for entry in metrics["train_loss"]] == [1, 2]
    assert all(np.isfinite(entry["loss"]) for entry in metrics["train_loss"])
    last = metrics["eval"][-1]
    assert last["n_pairs"] == 12 and set(last) >= {"VQ", "MQ", "TA", "loss"}
    assert 0.0 <= last["VQ"]["accuracy_with_ties"] <= 1.0
    assert set(metrics["normalization"]) == {"VQ", "MQ", "TA"}
    for folder in [run / "model", *checkpoints(run)]:
        assert {"model.safetensors", "reward_config.json", "train_config.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((run / "model" / "train_config.json").read_text())["max_steps"] == 2
    assert "reward-train: 2 steps" in capsys.readouterr().out

    assert (
        main(
            [
                "reward-eval",
                "--model",
                str(run / "model"),
                "--snapshot",
                str(snapshot),
                "--split",
                "val",
                "--quiet",
                "--output",
                str(tmp_path / "table.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "acc w/ ties" in out and "Pooled" in out and "reward-eval: 12 pairs" in out
    assert set(json.loads((tmp_path / "table.json").read_text())) == {"VQ", "MQ", "TA", "Pooled"}

    video = snapshot / "videos" / "0.mp4"
    assert (
        main(
            [
                "reward-score",
                "--model",
                str(run / "model"),
                "--video",
                str(video),
                "--video",
                str(snapshot / "videos" / "1.mp4"),
                "--prompt",
                "a red circle",
                "--quiet",
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 2 and set(lines[0]) == {"video", "prompt", "VQ", "MQ", "TA", "Overall"}
    assert lines[0]["Overall"] == pytest.approx(lines[0]["VQ"] + lines[0]["MQ"] + lines[0]["TA"])
    assert (
        main(["reward-score", "--model", str(run / "model"), "--pairs", str(snapshot / "videoalign.csv"), "--quiet"])
        == 0
    )
    from alignment.data import read_videoalign_csv

    pairs = read_videoalign_csv(snapshot / "videoalign.csv")
    distinct = {(p.video_a, p.prompt) for p in pairs} | {(p.video_b, p.prompt) for p in pairs}
    assert len(capsys.readouterr().out.strip().splitlines()) == len(distinct) < 2 * len(pairs)


def test_reward_eval_on_a_rewardbench_csv(tmp_path, snapshot, capsys):
    config = write_config(tmp_path / "train.json", **train_config(tmp_path, snapshot, max_steps=1))
    main(["reward-train", "--config", str(config)])
    bench = tmp_path / "bench.csv"
    lines = ["path_A,path_B,A_model,B_model,prompt,VQ,MQ,TA,Overall,fps_A,num_frames_A,fps_B,num_frames_B"]
    lines += [
        f"{snapshot}/videos/{a}.mp4,{snapshot}/videos/{b}.mp4,m1,m2,a cat,A,same,B,{o},4,4,4,4"
        for a, b, o in [(0, 1, "A"), (2, 3, "B"), (4, 5, "same")]
    ]
    bench.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert (
        main(["reward-eval", "--model", str(tmp_path / "run" / "model"), "--rewardbench-csv", str(bench), "--quiet"])
        == 0
    )
    out = capsys.readouterr().out
    assert "Overall" in out and "reward-eval: 3 pairs" in out


def test_reward_train_two_steps_tiny_qwen2vl(tmp_path, snapshot, tiny_qwen_folder):  # noqa: F811
    model = {
        "backbone": "qwen2vl",
        "backbone_path": str(tiny_qwen_folder),
        "lora_rank": 4,
        "lora_alpha": 8,
        "max_pixels": 28 * 56,
        "min_pixels": 28 * 28,
        "max_frames": 4,
        "fps": None,
    }
    metrics = train_reward_model(
        load_config(
            RewardTrainConfig,
            write_config(
                tmp_path / "q.json",
                **train_config(tmp_path, snapshot, model=model, max_steps=2, learning_rate=1e-3, max_eval_pairs=4),
            ),
        )
    )
    assert len(metrics["train_loss"]) == 2 and metrics["eval"][-1]["n_pairs"] == 4
    saved = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert any("lora_B" in key for key in saved) and "backbone.reward_token_embeddings" in saved
    assert not any("embed_tokens" in key for key in saved)


def make_config(tmp_path, snapshot, **overrides) -> RewardTrainConfig:
    return config_from_dict(RewardTrainConfig, train_config(tmp_path, snapshot, **overrides))


def test_resume_matches_an_uninterrupted_run(tmp_path, snapshot):
    straight = train_reward_model(make_config(tmp_path / "a", snapshot, max_steps=5))
    interrupted = make_config(tmp_path / "b", snapshot, max_steps=3, save_every_steps=1)
    train_reward_model(interrupted)
    run = tmp_path / "b" / "run"
    assert [p.name for p in checkpoints(run)] == ["step-00000002", "step-00000003"]  # keep_checkpoints = 2
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp leftovers
    interrupted.max_steps = 5
    resumed = train_reward_model(interrupted)
    assert [e["step"] for e in resumed["train_loss"]] == [1, 2, 3, 4, 5]
    assert [e["loss"] for e in resumed["train_loss"]] == pytest.approx(
        [e["loss"] for e in straight["train_loss"]], rel=1e-5
    )
    weights_a = load_file(tmp_path / "a" / "run" / "model" / "model.safetensors")
    weights_b = load_file(run / "model" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.allclose(weights_a[k], weights_b[k], atol=1e-6) for k in weights_a)


def test_small_reward_model_learns_brightness(tmp_path, snapshot):
    metrics = train_reward_model(make_config(tmp_path, snapshot, epochs=5, batch_size=6))
    final = metrics["eval"][-1]
    assert final["VQ"]["accuracy_without_ties"] >= 0.8, final
    losses = [entry["loss"] for entry in metrics["train_loss"]]
    assert np.mean(losses[-6:]) < np.mean(losses[:6])  # TA's labels are noise, so compare epochs, not steps


def test_python_dash_m_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "alignment", "reward-train", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert result.returncode == 0 and "--config" in result.stdout


def test_keep_best_by_loss_ends_with_the_epoch_of_the_lowest_validation_loss(tmp_path):
    """With keep_best the final model is the best epoch's (weights and normalisation), not the last one's:
    scoring the validation pairs with it gives back that epoch's validation loss. The val labels contradict
    the train labels, so the more the model learns, the worse it does there: the first epoch is the best."""
    from alignment.data import read_snapshot
    from alignment.losses import reward_loss
    from alignment.reward import load_reward_model
    from alignment.reward.evaluate import score_videos

    snapshot = brightness_snapshot(tmp_path / "flipped", val_flipped=True)
    config = make_config(
        tmp_path, snapshot, epochs=4, keep_best=True, best_by="loss", model=small_model(frame_cnn_channels=8)
    )
    metrics = train_reward_model(config)
    losses = [entry["loss"] for entry in metrics["eval"]]
    best = metrics["best"]
    assert best["loss"] == min(losses) and best["epoch"] == 1 + losses.index(min(losses)), (losses, best)
    model = load_reward_model(Path(config.output_dir) / "model")
    assert metrics["normalization"]["VQ"]["mean"] == pytest.approx(float(model.reward_mean[0]))

    loaded = read_snapshot(snapshot)
    pairs = loaded.split("val")
    items = [(p.video_a, p.prompt) for p in pairs] + [(p.video_b, p.prompt) for p in pairs]
    rewards = score_videos(model, items, roots=[loaded.root], batch_size=16, normalize=False, progress=False)
    labels = torch.tensor([[p.vq, p.mq, p.ta] for p in pairs])
    delta = (rewards[: len(pairs)] - rewards[len(pairs) :]).flatten()
    loss = reward_loss(delta, labels.long().flatten(), kind="bt_ties", theta=config.theta)
    assert float(loss) == pytest.approx(best["loss"], rel=1e-4)
    assert best["epoch"] == 1 and losses[-1] > losses[0], losses
    assert float(loss) != pytest.approx(losses[-1], rel=1e-4)  # model/ is not the last epoch's model


def test_better_epoch_by_accuracy_breaks_equal_accuracies_by_loss_and_by_loss_reads_only_loss():
    from alignment.reward.train import better_epoch, mean_accuracy_without_ties

    evaluation = {
        "VQ": {"accuracy_without_ties": 0.9},
        "MQ": {"accuracy_without_ties": float("nan")},
        "TA": {"accuracy_without_ties": 0.7},
    }
    assert mean_accuracy_without_ties(evaluation) == pytest.approx(0.8)  # a dimension with no decided pair is left out
    best = {"loss": 1.0, "accuracy": 0.7}
    assert better_epoch({"loss": 1.5, "accuracy": 0.8}, best, "accuracy")  # more accurate, though its loss is higher
    assert not better_epoch({"loss": 0.5, "accuracy": 0.6}, best, "accuracy")
    assert better_epoch({"loss": 0.9, "accuracy": 0.7}, best, "accuracy")  # as accurate, lower loss
    assert not better_epoch({"loss": 1.1, "accuracy": 0.7}, best, "accuracy")
    assert better_epoch({"loss": 0.5, "accuracy": 0.6}, best, "loss")
    assert not better_epoch({"loss": 1.5, "accuracy": 0.8}, best, "loss")
    assert better_epoch({"loss": 2.0, "accuracy": 0.1}, {"loss": 1.0}, "accuracy")  # a best saved before best_by


def test_keep_best_by_accuracy_keeps_the_most_accurate_epoch_and_an_unknown_rule_is_refused(tmp_path):
    from alignment.reward.train import mean_accuracy_without_ties

    snapshot = brightness_snapshot(tmp_path / "plain")
    config = make_config(tmp_path, snapshot, epochs=4, keep_best=True, model=small_model(frame_cnn_channels=8))
    assert config.best_by == "accuracy"  # the default
    metrics = train_reward_model(config)
    scored = [
        (mean_accuracy_without_ties(entry), -entry["loss"], -index) for index, entry in enumerate(metrics["eval"])
    ]
    chosen = metrics["eval"][-max(scored)[2]]
    assert metrics["best"]["epoch"] == chosen["epoch"] and metrics["best"]["accuracy"] == max(scored)[0]
    with pytest.raises(ValueError, match="best_by 'auc': choose one of accuracy, loss"):
        train_reward_model(make_config(tmp_path / "other", snapshot, keep_best=True, best_by="auc"))


def test_reward_training_keeps_the_frame_cache_within_its_limit(tmp_path, snapshot):
    from alignment.data.frame_cache import FrameCache

    cache = tmp_path / "frames"
    old = FrameCache(cache).folder / "ab" / f"{'ab' * 32}.npy"  # a video of an earlier run, used long ago
    old.parent.mkdir()
    old.write_bytes(b"\0" * 4096)
    os.utime(old, (1, 1))
    train_reward_model(
        make_config(tmp_path, snapshot, max_steps=1, frame_cache_dir=str(cache), frame_cache_max_gb=40e-6)
    )  # 40 kB: three of this snapshot's videos
    entries = list(cache.rglob("*.npy"))
    assert old not in entries and 1 <= len(entries) < 16  # the oldest went first; the newest of this run stay
    assert FrameCache(cache).size_bytes() <= 40_000

    with pytest.raises(ValueError, match="frame_cache_max_gb 0: give a size above 0"):
        train_reward_model(make_config(tmp_path / "other", snapshot, frame_cache_dir=str(cache), frame_cache_max_gb=0))
