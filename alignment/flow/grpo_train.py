"""Flow-GRPO training (``python -m alignment flow-grpo``): online RL of a flow policy's LoRA from a VideoReward.

Each optimizer step takes ``batch_size`` prompts (a snapshot's training prompts, or a prompt file), samples
``group_size`` videos per prompt from the current policy with the SDE (``alignment.flow.grpo``; few steps —
"denoising reduction" — while the final policy samples with the full schedule), decodes and scores them with the
reward model (a weighted sum of its normalised VQ/MQ/TA), standardises the rewards within each prompt's group
(the advantages) and takes the clipped objective with a KL penalty to the reference (the policy with its LoRA
off) over ``train_steps_per_sample`` of the sampled steps. The shared loop (``alignment.training``) gives it
accumulation, several processes, checkpoints and resume; ``metrics.json`` records per step the reward's mean and
std (and per dimension), the KL and the clip fraction, and per evaluation the mean reward of the validation
prompts sampled with the ODE and fixed seeds.

Several processes: each samples and scores the groups of its own prompts, so a group's advantages are computed
where the group is (no gathering needed); the losses are averaged by the loop as for every trainer.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

from alignment.config import save_config
from alignment.flow.config import FlowGRPOConfig, check_grpo_config  # noqa: F401  (imported from here too)
from alignment.flow.grpo import (
    group_advantages,
    grpo_loss,
    reference_step_mean,
    sample_trajectories,
    step_log_prob,
    trainable_steps,
)
from alignment.flow.model import TRAINED_POLICY_FILE, load_policy
from alignment.flow.sample import initial_noise, sample_latents, write_clips
from alignment.flow.train import TRAIN_CONFIG_FILE
from alignment.training import Run, TrainingMethod, for_this_machine, run_training

log = logging.getLogger("alignment.flow.grpo")


def grpo_prompts(config: FlowGRPOConfig) -> tuple[list[str], list[str]]:
    """(training prompts, validation prompts), each distinct and in a stable order."""
    if config.prompt_file:
        lines = [line.strip() for line in Path(config.prompt_file).read_text(encoding="utf-8").splitlines()]
        prompts = list(dict.fromkeys(line for line in lines if line))
        if not prompts:
            raise ValueError(f"{config.prompt_file}: no prompts (one a line)")
        return prompts, prompts[: config.max_eval_items or 0]
    from alignment.data import read_snapshot

    snapshot = read_snapshot(config.snapshot)
    train = list(dict.fromkeys(pair.prompt for pair in snapshot.split(config.train_split)))
    val = list(dict.fromkeys(pair.prompt for pair in snapshot.split(config.val_split)))
    if not train:
        raise ValueError(f"{config.snapshot}: no prompts in split {config.train_split!r}")
    return train, val[: config.max_eval_items] if config.max_eval_items is not None else val


class Prompts(Dataset):
    def __init__(self, prompts: list[str]):
        self.prompts = prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> str:
        return self.prompts[index]


def _as_list(batch: list[str]) -> list[str]:
    return list(batch)


class FlowGRPOMethod(TrainingMethod):
    """Flow-GRPO in the shared loop: a batch is prompts; its loss samples, scores and takes the clipped objective."""

    name = "flow-grpo"
    log = log
    throughput_key = "train_videos_per_second"

    def setup(self, run: Run):
        config, accelerator = self.config, run.accelerator
        from alignment.reward import load_reward_model

        self.half = half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
        self.policy = policy = load_policy(
            config.policy, device=accelerator.device, encoder_dtype=half or torch.float32, dtype=half or torch.float32
        )
        train, self.val_prompts = grpo_prompts(config)
        everything = list(dict.fromkeys(train + self.val_prompts))
        self.text = {prompt: embeds for prompt, embeds in zip(everything, policy.encode_prompts(everything))}
        self.reward_model = load_reward_model(config.reward_model, base_model=config.reward_base_model)
        self.reward_model.to(accelerator.device).eval().requires_grad_(False)
        self.weights = torch.tensor(config.dimension_weights, dtype=torch.float32)
        self.latent_shape = policy.latent_shape(config.num_frames, config.height, config.width)
        model = policy.transformer
        policy.add_lora(rank=config.lora_rank, alpha=config.lora_alpha, target_modules=config.lora_target_modules)
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()  # adapters train in float32 under a half-precision base
        if torch.cuda.is_available() and config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        model.train()
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        return model, Prompts(train), _as_list

    def optimizer(self, model):
        return torch.optim.AdamW(self.trainable, lr=self.config.learning_rate, weight_decay=self.config.weight_decay)

    def clip_parameters(self, run: Run):
        return self.trainable

    def prepared(self, run: Run) -> None:
        self.lora_model = run.unwrapped

    def initial_metrics(self, run: Run) -> dict:
        return {"method": "flow-grpo", "n_train": len(run.train_set), "n_val": len(self.val_prompts)}

    def restore_weights(self, checkpoint: Path, run: Run) -> None:
        self.policy.load_lora_into_adapter(checkpoint)

    def start_message(self, run: Run) -> str:
        config = self.config
        return (
            f"flow-grpo on {len(run.train_set)} prompts ({len(self.val_prompts)} for evaluation), {run.total_steps} "
            f"steps of {config.batch_size} prompts × {config.group_size} samples, {config.sample_steps} SDE steps, "
            f"{run.accelerator.num_processes} process(es), mixed precision {run.accelerator.mixed_precision}"
        )

    # ---- rewards -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def rewards(self, latents: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Normalised VQ/MQ/TA scores (N, 3) of decoded latents: written as the MP4s the reward model reads (its
        own frame sampling, as for any other video), then scored."""
        from alignment.reward.evaluate import score_videos

        clips = self.policy.decode_latents(latents)
        with tempfile.TemporaryDirectory(prefix="flow-grpo-") as folder:
            names = [f"{index:04d}" for index in range(len(clips))]
            paths = write_clips(clips, folder, names, fps=self.policy.fps)
            return score_videos(
                self.reward_model,
                [(str(path), prompt) for path, prompt in zip(paths, prompts)],
                batch_size=self.config.score_batch_size,
                progress=False,
            )

    def weighted(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.float() @ self.weights

    # ---- a step --------------------------------------------------------------------------------------------

    def loss(self, run: Run, batch: list[str], generator: torch.Generator):
        config, policy = self.config, self.policy
        prompts = [prompt for prompt in batch for _ in range(config.group_size)]
        groups = [index for index in range(len(batch)) for _ in range(config.group_size)]
        text = policy.pad_text([self.text[prompt] for prompt in prompts])
        noise = torch.randn((len(prompts), *self.latent_shape), generator=generator)
        run.model.eval()  # sampling: no dropout
        trajectory = sample_trajectories(
            policy,
            text,
            noise,
            steps=config.sample_steps,
            noise_level=config.noise_level,
            generator=generator,
            transformer=run.model,
        )
        run.model.train()
        scores = self.rewards(trajectory.final, prompts)  # (N, 3)
        rewards = self.weighted(scores)
        advantages = group_advantages(rewards, groups).to(trajectory.latents.device)
        steps = trainable_steps(trajectory)
        if config.train_steps_per_sample is not None and config.train_steps_per_sample < len(steps):
            chosen = torch.randperm(len(steps), generator=generator)[: config.train_steps_per_sample]
            steps = sorted(steps[int(i)] for i in chosen)
        total = torch.zeros((), device=trajectory.latents.device)
        kl = clip_fraction = 0.0
        for k in steps:
            step = step_log_prob(policy, trajectory, k, noise_level=config.noise_level, transformer=run.model)
            reference_mean = None
            if config.kl_weight > 0:
                reference_mean = reference_step_mean(
                    policy, trajectory, k, noise_level=config.noise_level, lora_model=self.lora_model
                )
            parts = grpo_loss(
                step.log_prob,
                trajectory.log_probs[:, k],
                advantages,
                clip_range=config.clip_range,
                adv_clip_max=config.adv_clip_max,
                kl_weight=config.kl_weight,
                mean=step.mean,
                reference_mean=reference_mean,
                std=step.std,
            )
            total = total + parts.loss / len(steps)
            kl += float(parts.kl) / len(steps)
            clip_fraction += float(parts.clip_fraction) / len(steps)
        stats = {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std(unbiased=False)),
            "kl": kl,
            "clip_fraction": clip_fraction,
            **{f"reward_{name}": float(scores[:, i].mean()) for i, name in enumerate(("vq", "mq", "ta"))},
        }
        return total, stats

    def batch_items(self, batch: list[str]) -> int:
        return len(batch) * self.config.group_size

    # ---- evaluation and saving -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, run: Run) -> dict:
        """The validation prompts sampled with the ODE on ``eval_sample_steps`` steps from fixed seeds (the same
        noise at every evaluation) and scored: the mean reward, overall and per dimension."""
        config, step = self.config, run.state["step"]
        prompts = self.val_prompts
        if not prompts:
            return {"step": step, "n_items": 0}
        run.model.eval()
        text = self.policy.pad_text([self.text[prompt] for prompt in prompts])
        noise = initial_noise([config.seed * 10_000 + i for i in range(len(prompts))], self.latent_shape)
        latents = sample_latents(self.policy, text, None, noise, steps=config.eval_sample_steps, guidance_scale=1.0)
        run.model.train()
        scores = self.rewards(latents, prompts)
        result = {
            "step": step,
            "n_items": len(prompts),
            "reward_mean": float(self.weighted(scores).mean()),
            **{f"reward_{name}": float(scores[:, i].mean()) for i, name in enumerate(("vq", "mq", "ta"))},
        }
        if run.accelerator.is_main_process:
            self.log.info(
                "evaluation at step %d: %d prompts, mean reward %.4f", step, len(prompts), result["reward_mean"]
            )
        return result

    def save_weights(self, folder: Path, run: Run) -> None:
        import json

        folder.mkdir(parents=True, exist_ok=True)
        self.policy.save_lora(folder, transformer=run.unwrapped)
        info = {"base": str(Path(self.config.policy).resolve()), "finetune": "lora", "method": "flow-grpo"}
        (folder / TRAINED_POLICY_FILE).write_text(json.dumps(info, indent=2) + "\n")
        save_config(self.config, folder / TRAIN_CONFIG_FILE)

    def summary_fields(self, run: Run) -> dict:
        return {"final": str(run.output_dir / self.final_dir_name)}

    def report(self, run: Run, elapsed: float) -> None:
        metrics, final_dir = run.metrics, run.output_dir / self.final_dir_name
        last = metrics["train_loss"][-1] if metrics["train_loss"] else {}
        evaluation = metrics["eval"][-1] if metrics["eval"] else {}
        run.accelerator.print(
            f"flow-grpo: {run.state['step']} steps, last batch reward {last.get('reward_mean', float('nan')):.4f}, "
            f"val reward {evaluation.get('reward_mean', float('nan')):.4f}; LoRA in {final_dir}"
        )
        self.log.info("done: %d steps in %.0f s; LoRA in %s", run.state["step"], elapsed, final_dir)


def train_flow_grpo(config: FlowGRPOConfig, *, on_step=None) -> dict:
    """Train (or resume) and return the metrics (also in ``output_dir/metrics.json``)."""
    check_grpo_config(config)
    return run_training(FlowGRPOMethod(for_this_machine(config)), on_step=on_step)
