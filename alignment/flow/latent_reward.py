"""Flow-NRG's latent reward model: r(x_σ, σ, y) on the policy's noisy latents, and its trainer.

The body is the first K blocks of the policy's ``WanTransformer3DModel``, copied with their weights:
patch embedding, timestep + text condition embedding, K transformer blocks (self-attention with RoPE,
cross-attention to the text, the timestep modulating every block), as the Wan transformer runs them.
The readout (``readout``):

- ``"frames"`` (the default) keeps where and when things are, which motion (MQ) and the prompt's direction (TA)
  are made of: per latent frame, a few learned attention pools over that frame's tokens each return what they
  attended to and *where* (the attended tokens' mean position), then time is read through the mean, trend and
  curvature of those per-frame features (orthonormal polynomials) and their roughness (RMS second difference:
  jitter, stalls); a small MLP and a head per dimension whose weights the prompt shifts map them to VQ, MQ, TA
  (``FrameReadout``).
- ``"mean"``: the tokens mean-pooled, layer-normed and read by a linear head per dimension. Simpler, but the
  pool forgets position; in the toy world it tops out near 69 % even on oracle labels.

The whole copy trains. Rewards are normalised with the mean and std of the raw rewards of clean (σ = 0)
validation latents, so that guidance weights combine dimensions on a common scale.

Training: snapshot pairs with their per-dimension labels (1 = A better, 0 = tie, −1 = B better; missing
labels are masked), both videos noised alike, x_σ = (1 − σ)·x₀ + σ·ε with the same σ ~ U(0, 1) and ε
(``noisy=False``: σ = 0, the clean-latent ablation), and Bradley–Terry with ties on Δ = r_A − r_B per
dimension (``alignment.losses.reward_loss(kind="bt_ties")``).

``output_dir/``
  ``train_config.json``
  ``cache/``                      text embeddings and latents (shared with the flow trainers)
  ``checkpoints/step-00000040/``  the model (as in final/) + optimizer.pt, scheduler.pt, trainer_state.json
  ``final/``                      ``latent_reward.safetensors``, ``latent_reward.json`` (architecture,
                                  normalisation), ``train_config.json``; ``load_latent_reward(final)``
  ``metrics.json``                loss and accuracy curves, validation loss and accuracy per σ level
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from alignment.config import save_config
from alignment.data import read_snapshot
from alignment.data.records import PairRecord
from alignment.flow.cache import FlowCache, build_cache, sha256_text
from alignment.flow.config import LatentRewardConfig
from alignment.flow.model import NUM_TRAIN_TIMESTEPS, load_policy
from alignment.flow.train import PadTextCollator, noised, sample_sigmas
from alignment.labels import DIMENSION_NAMES, LABEL_MISSING
from alignment.losses import reward_loss
from alignment.reward.small import orthonormal_time_basis
from alignment.training import (
    OnStep,
    Run,
    TrainingMethod,
    check_lr_schedule,
    for_this_machine,
    run_training,
    step_generator,
)

log = logging.getLogger(__name__)
WEIGHTS_FILE = "latent_reward.safetensors"
MODEL_FILE = "latent_reward.json"
TRAIN_CONFIG_FILE = "train_config.json"
EVAL_SIGMAS = (0.0, 0.25, 0.5, 0.75)  # validation noise levels (fixed noise), so evaluations compare
_COPIED_PREFIXES = ("patch_embedding.", "condition_embedder.")


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


READOUTS = ("frames", "mean")


class FrameReadout(nn.Module):
    """Tokens (B, t·h·w, width) on a (t, h, w) grid → (B, 3), keeping position and time.

    Per frame, each of ``heads`` attention pools (a learned query) weighs that frame's h·w tokens and returns
    the weighted token (projected to ``content`` values) and the weighted mean token position (x, y in
    [−1, 1]: where it looked, a soft centroid). Over the t frames, those ``heads·(content + 2)`` features are
    read through orthonormal polynomials of time up to ``degree`` (mean, trend, curvature: colour and shape
    live in the mean, direction and speed in the trend) and their RMS second difference (jitter, stalls and
    jumps accelerate); a layer norm and an MLP map them to hidden features, read per dimension by a linear head
    whose weights the prompt shifts (``text``, the mean of the prompt's projected token embeddings): text alignment
    is a product of what the prompt asks and what the video shows, which a fixed head cannot form."""

    def __init__(
        self, width: int, *, heads: int = 4, content: int = 16, degree: int = 2, hidden: int = 64, dropout: float = 0.1
    ):
        super().__init__()
        self.heads, self.content, self.degree = heads, content, degree
        self.query = nn.Linear(width, heads, bias=False)
        self.value = nn.Linear(width, heads * content)
        features = heads * (content + 2)
        self.hidden = hidden
        self.mlp = nn.Sequential(
            nn.LayerNorm((degree + 2) * features),
            nn.Dropout(dropout),
            nn.Linear((degree + 2) * features, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden, len(DIMENSION_NAMES))
        # the prompt's shift of the head's weights: starts at zero, so training begins from the fixed head
        self.text_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, len(DIMENSION_NAMES) * hidden))
        nn.init.zeros_(self.text_head[1].weight)
        nn.init.zeros_(self.text_head[1].bias)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int, int], text: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, t·h·w, width) frame-major on ``grid`` (t, h, w); ``text`` (B, width) → (B, 3)."""
        frames, rows, cols = grid
        batch = tokens.shape[0]
        tokens = tokens.reshape(batch, frames, rows * cols, -1)  # (B, t, hw, width)
        attention = self.query(tokens).softmax(dim=2)  # (B, t, hw, heads): over each frame's tokens
        content = torch.einsum(
            "bfnh,bfnhc->bfhc", attention, self.value(tokens).unflatten(-1, (self.heads, self.content))
        )  # (B, t, heads, c)
        ys = torch.linspace(-1.0, 1.0, rows, device=tokens.device) if rows > 1 else torch.zeros(1, device=tokens.device)
        xs = torch.linspace(-1.0, 1.0, cols, device=tokens.device) if cols > 1 else torch.zeros(1, device=tokens.device)
        positions = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(rows * cols, 2)  # (hw, 2)
        where = torch.einsum("bfnh,nk->bfhk", attention, positions)  # (B, t, heads, 2)
        per_frame = torch.cat([content, where], dim=-1).flatten(2)  # (B, t, F)
        basis = orthonormal_time_basis(frames, min(self.degree + 1, frames)).to(per_frame)  # (K, t)
        trends = torch.einsum("kf,bfe->bke", basis, per_frame)  # (B, K, F)
        if trends.shape[1] < self.degree + 1:  # fewer frames than polynomials: the missing ones read zero
            trends = torch.cat([trends, trends.new_zeros(batch, self.degree + 1 - trends.shape[1], trends.shape[2])], 1)
        if frames >= 3:
            curvature = per_frame[:, 2:] - 2 * per_frame[:, 1:-1] + per_frame[:, :-2]
            roughness = (curvature.square().mean(dim=1) + 1e-6).sqrt()  # (B, F); ε keeps the gradient finite
        else:
            roughness = per_frame.new_zeros(batch, per_frame.shape[2])
        hidden = self.mlp(torch.cat([trends.flatten(1), roughness], dim=1))  # (B, hidden)
        shift = self.text_head(text).unflatten(1, (len(DIMENSION_NAMES), self.hidden))  # (B, 3, hidden)
        return self.head(hidden) + torch.einsum("bdh,bh->bd", shift, hidden)


class LatentRewardModel(nn.Module):
    """r(x_σ, σ, y): latents (B, C, t, h, w), sigmas (B,), padded text embeddings (B, L, D) → (B, 3).

    ``transformer_config`` is the policy transformer's diffusers config; ``num_layers`` (K ≥ 1) blocks are
    built from it, read out by ``readout`` (``READOUTS``). ``from_policy`` copies the policy's weights in;
    ``load_latent_reward`` restores a saved one.
    """

    def __init__(self, transformer_config: dict, num_layers: int, readout: str = "frames"):
        super().__init__()
        from diffusers import WanTransformer3DModel

        if readout not in READOUTS:
            raise ValueError(f"readout {readout!r}: choose one of {', '.join(READOUTS)}")
        total = transformer_config["num_layers"]
        if not 1 <= num_layers <= total:
            raise ValueError(
                f"num_layers {num_layers}: the latent reward needs 1 to {total} blocks of the policy's "
                f"transformer (the blocks carry its time and text conditioning)"
            )
        self.transformer_config = {k: v for k, v in transformer_config.items() if not k.startswith("_")}
        self.num_layers, self.readout = num_layers, readout
        body = WanTransformer3DModel.from_config({**self.transformer_config, "num_layers": num_layers})
        # Only the input half of the transformer: its output norm and projection are left behind.
        self.rope, self.patch_embedding = body.rope, body.patch_embedding
        self.condition_embedder, self.blocks = body.condition_embedder, body.blocks
        width = body.config.num_attention_heads * body.config.attention_head_dim
        if readout == "frames":
            self.frame_readout = FrameReadout(width)
        else:
            self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
            # No bias: the BT losses see only r_A − r_B; the normalisation sets the offset.
            self.head = nn.Linear(width, len(DIMENSION_NAMES), bias=False)
            nn.init.normal_(self.head.weight, std=width**-0.5)
        self.register_buffer("reward_mean", torch.zeros(len(DIMENSION_NAMES)))
        self.register_buffer("reward_std", torch.ones(len(DIMENSION_NAMES)))

    @classmethod
    def from_policy(cls, transformer: nn.Module, num_layers: int, readout: str = "frames") -> LatentRewardModel:
        """A latent reward whose body starts as a copy of ``transformer``'s first ``num_layers`` blocks."""
        model = cls(dict(transformer.config), num_layers, readout)
        keep = (*_COPIED_PREFIXES, *(f"blocks.{i}." for i in range(num_layers)))
        state = {k: v.float() for k, v in transformer.state_dict().items() if k.startswith(keep)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        body_missing = [k for k in missing if not k.startswith(("head.", "frame_readout.", "reward_"))]
        if body_missing or unexpected:
            raise ValueError(
                f"the policy's transformer does not fit a Wan body (missing {body_missing[:3]}, "
                f"unexpected {unexpected[:3]}); give a base policy folder, not a LoRA-wrapped one"
            )
        return model

    def forward(self, latents: torch.Tensor, sigmas: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Raw rewards (B, 3)."""
        dtype = self.patch_embedding.weight.dtype
        hidden = latents.to(dtype)  # (B, C, t, h, w)
        rotary = self.rope(hidden)
        patches = self.patch_embedding(hidden)  # (B, width, t', h', w')
        grid = tuple(patches.shape[2:])
        tokens = patches.flatten(2).transpose(1, 2).contiguous()  # (B, N, width), frame-major
        timestep = (sigmas * NUM_TRAIN_TIMESTEPS).to(hidden.device)
        _, timestep_proj, text, _ = self.condition_embedder(timestep, text_embeds.to(dtype))
        timestep_proj = timestep_proj.unflatten(1, (6, -1))  # (B, 6, width): the blocks' shift/scale/gate
        for block in self.blocks:
            tokens = block(tokens, text, timestep_proj, rotary)
        if self.readout == "frames":
            # the prompt: the mean of its projected token embeddings (padding rows are all-zero embeddings)
            mask = (text_embeds.abs().sum(dim=-1) > 0).to(text.dtype).unsqueeze(-1)  # (B, L, 1)
            prompt = (text * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, width)
            return self.frame_readout(tokens.float(), grid, prompt.float())  # (B, 3)
        return self.head(self.norm(tokens.float().mean(dim=1)))  # (B, 3)

    def normalize(self, rewards: torch.Tensor) -> torch.Tensor:
        return (rewards - self.reward_mean) / self.reward_std

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.reward_mean.copy_(mean)
        self.reward_std.copy_(std.clamp_min(1e-6))

    def score(
        self, latents: torch.Tensor, sigmas: torch.Tensor, text_embeds: torch.Tensor, weights: Sequence[float]
    ) -> torch.Tensor:
        """r = Σ_d w_d · r̂_d, the weighted sum of the normalised VQ, MQ, TA rewards: (B,)."""
        weight = torch.as_tensor(weights, dtype=torch.float32, device=self.reward_mean.device)
        return self.normalize(self(latents, sigmas, text_embeds)) @ weight


def save_latent_reward(model: LatentRewardModel, folder: str | Path, config: LatentRewardConfig | None = None) -> Path:
    """Write ``latent_reward.safetensors``, ``latent_reward.json`` (and the training config, if given)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    info = {
        "num_layers": model.num_layers,
        "readout": model.readout,
        "transformer_config": model.transformer_config,
        "dimensions": list(DIMENSION_NAMES),
        "normalization": {
            dim: {"mean": float(model.reward_mean[i]), "std": float(model.reward_std[i])}
            for i, dim in enumerate(DIMENSION_NAMES)
        },
    }
    if config is not None:
        info.update(policy=str(Path(config.policy).resolve()), noisy=config.noisy)
        save_config(config, folder / TRAIN_CONFIG_FILE)
    (folder / MODEL_FILE).write_text(json.dumps(info, indent=2, default=list) + "\n")
    return folder


def load_latent_reward(folder: str | Path, *, map_location: str | torch.device = "cpu") -> LatentRewardModel:
    """A saved latent reward model (a run's ``final/`` or a checkpoint), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{folder}: no {MODEL_FILE}; give a latent-reward-train run's final/ or a checkpoint")
    info = json.loads((folder / MODEL_FILE).read_text())
    model = LatentRewardModel(info["transformer_config"], info["num_layers"], info.get("readout", "mean"))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.to(map_location).eval()


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def labelled_pairs(pairs: Sequence[PairRecord]) -> list[PairRecord]:
    """The pairs with at least one judged dimension (ties included: BT with ties learns from them)."""
    return [p for p in pairs if any(label != LABEL_MISSING for label in p.labels)]


class CachedLabelledPairs(Dataset):
    """PairRecords → {"text" (L_i, D), "latents_a", "latents_b" (C, t, h, w), "labels" (3,)} from the cache."""

    def __init__(self, pairs: list[PairRecord], cache: FlowCache):
        self.pairs, self.cache = pairs, cache

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        return {
            "text": self.cache.text.get(sha256_text(pair.prompt)),
            "latents_a": self.cache.latents.get(self.cache.video_keys[pair.video_a]),
            "latents_b": self.cache.latents.get(self.cache.video_keys[pair.video_b]),
            "labels": torch.tensor(pair.labels, dtype=torch.long),
        }


def pair_loss(
    model, batch: dict, sigmas: torch.Tensor, noise: torch.Tensor | None, *, theta: float
) -> tuple[torch.Tensor, dict]:
    """BT-with-ties loss of one micro-batch whose two videos are noised alike (``noise`` None: clean)."""
    latents_a, latents_b, text = batch["latents_a"], batch["latents_b"], batch["text"]  # (B, C, t, h, w), (B, L, D)
    if noise is not None:
        latents_a, latents_b = noised(latents_a, noise, sigmas)[0], noised(latents_b, noise, sigmas)[0]
    rewards_a, rewards_b = model(
        torch.cat([latents_a, latents_b]), torch.cat([sigmas, sigmas]), torch.cat([text, text])
    ).chunk(2)  # (B, 3) each
    delta, labels = (rewards_a - rewards_b).flatten(), batch["labels"].flatten()
    loss = reward_loss(delta, labels, kind="bt_ties", theta=theta)
    decided = (labels == 1) | (labels == -1)
    correct = (torch.sign(delta.detach()) == labels) & decided
    return loss, {"correct": float(correct.sum()), "decided": float(decided.sum())}


# --------------------------------------------------------------------------------------------------
# The method: what the shared loop (alignment.training) leaves to the latent reward
# --------------------------------------------------------------------------------------------------


def check_config(config: LatentRewardConfig) -> None:
    check_lr_schedule(config)
    if config.theta <= 1.0:
        raise ValueError(f"theta {config.theta}: the tie parameter must be > 1 (the paper uses 5)")
    if config.readout not in READOUTS:
        raise ValueError(f"readout {config.readout!r}: choose one of {', '.join(READOUTS)}")


def _prepare(config: LatentRewardConfig, accelerator, output_dir: Path):
    """Pairs, the cache and the initial model; the policy (and its encoders) is dropped afterwards."""
    # The policy is only read (encoders for the cache, K blocks copied into float32): half precision on a GPU.
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
    policy = load_policy(config.policy, device=accelerator.device, dtype=half or torch.float32)
    snapshot = read_snapshot(config.snapshot)
    roots = [snapshot.root, *([Path(config.media_root)] if config.media_root else [])]
    train_pairs = labelled_pairs(snapshot.split(config.train_split))
    val_pairs = labelled_pairs(snapshot.split(config.val_split))
    if config.max_eval_items is not None:
        val_pairs = val_pairs[: config.max_eval_items]
    if not train_pairs:
        raise ValueError(f"{config.snapshot}: no labelled pairs in split {config.train_split!r}")
    everything = train_pairs + val_pairs
    with accelerator.main_process_first():
        cache = build_cache(
            policy,
            [p.prompt for p in everything],
            [v for p in everything for v in (p.video_a, p.video_b)],
            cache_dir=config.cache_dir or output_dir / "cache",
            roots=roots,
            num_frames=config.num_frames,
            height=config.height,
            width=config.width,
            batch_size=config.encode_batch_size,
            progress=config.progress and accelerator.is_main_process,
        )
    model = LatentRewardModel.from_policy(policy.transformer, config.num_layers, config.readout).to(accelerator.device)
    return train_pairs, val_pairs, cache, model, policy.max_sequence_length


class LatentRewardMethod(TrainingMethod):
    """BT with ties on snapshot pairs noised alike (``noisy=False``: clean), on the policy's cached latents; a
    step's accuracy is over its decided labels; each evaluation sets the rewards' normalisation."""

    log = log
    throughput_key = "train_pairs_per_second"

    def __init__(self, config: LatentRewardConfig):
        super().__init__(config)
        self.name = config.method

    def setup(self, run: Run):
        config = self.config
        train_pairs, val_pairs, cache, model, max_sequence_length = _prepare(config, run.accelerator, run.output_dir)
        run.accelerator.print(
            f"latent-reward: {len(train_pairs)} training and {len(val_pairs)} validation pairs; "
            f"{cache.encoded_prompts} prompts and {cache.encoded_videos} videos newly cached"
        )
        self.train_set, self.val_set = CachedLabelledPairs(train_pairs, cache), CachedLabelledPairs(val_pairs, cache)
        self.collator = PadTextCollator(max_sequence_length)
        model.train()
        return model, self.train_set, self.collator

    def initial_metrics(self, run: Run) -> dict:
        config = self.config
        return {
            "method": config.method,
            "noisy": config.noisy,
            "num_layers": config.num_layers,
            "n_train": len(self.train_set),
            "n_val": len(self.val_set),
        }

    def restore_weights(self, checkpoint: Path, run: Run) -> None:
        run.unwrapped.load_state_dict(load_latent_reward(checkpoint, map_location=run.accelerator.device).state_dict())

    def start_message(self, run: Run) -> str:
        config, accelerator = self.config, run.accelerator
        return (
            f"training on {len(self.train_set)} training and {len(self.val_set)} validation pairs, "
            f"{run.total_steps} steps ({config.epochs} epochs, {config.batch_size} pairs a step), "
            f"{accelerator.num_processes} process(es), mixed precision {accelerator.mixed_precision}"
        )

    def loss(self, run: Run, batch: dict, generator: torch.Generator):
        config = self.config
        size, device = batch["latents_a"].shape[0], batch["latents_a"].device
        if config.noisy:
            sigmas = sample_sigmas(size, generator, config.sigma_shift).to(device)
            noise = torch.randn(batch["latents_a"].shape, generator=generator).to(device)  # shared by A and B
        else:
            sigmas, noise = torch.zeros(size, device=device), None
        return pair_loss(run.model, batch, sigmas, noise, theta=config.theta)

    def batch_items(self, batch: dict) -> int:
        return batch["latents_a"].shape[0]

    def step_metrics(self, totals: dict[str, float], count: int) -> dict[str, float | None]:
        return {
            "loss": totals["loss"] / count,
            "accuracy": totals["correct"] / totals["decided"] if totals["decided"] else None,
        }

    @torch.no_grad()
    def evaluate(self, run: Run) -> dict:
        """Loss and accuracy (decided labels) at each of ``EVAL_SIGMAS`` with fixed noise; sets the
        normalisation from the raw rewards of the clean validation latents (training ones if none)."""
        accelerator, step = run.accelerator, run.state["step"]
        run.model.eval()
        eval_set = self.val_set if len(self.val_set) else self.train_set
        by_sigma, rewards = self._score(run, eval_set)
        run.unwrapped.set_normalization(rewards.mean(dim=0), rewards.std(dim=0) if len(rewards) > 1 else torch.ones(3))
        run.model.train()
        levels = {
            f"{sigma:g}": {
                "loss": t["loss"] / max(t["batches"], 1),
                "accuracy": t["correct"] / t["decided"] if t["decided"] else None,
            }
            for sigma, t in by_sigma.items()
        }
        accuracies = [level["accuracy"] for level in levels.values() if level["accuracy"] is not None]
        result = {
            "step": step,
            "n_items": len(eval_set),
            "split": "val" if len(self.val_set) else "train",
            "loss": sum(level["loss"] for level in levels.values()) / len(levels),
            "accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
            "by_sigma": levels,
        }
        if accelerator.is_main_process:
            accuracy = f", accuracy {result['accuracy']:.3f}" if result["accuracy"] is not None else ""
            self.log.info(
                "evaluation at step %d on %d %s pairs: loss %.4f%s",
                step,
                len(eval_set),
                result["split"],
                result["loss"],
                accuracy,
            )
        return result

    def _score(self, run: Run, eval_set: Dataset) -> tuple[dict, torch.Tensor]:
        """Summed loss, correct and decided labels per σ level (the same noise for every evaluation), and the raw
        rewards of the clean latents (2N, 3) of every process."""
        config, accelerator, model = self.config, run.accelerator, run.model
        loader = accelerator.prepare(
            DataLoader(eval_set, batch_size=run.micro_batch, collate_fn=self.collator, num_workers=config.num_workers)
        )
        by_sigma = {sigma: {"loss": 0.0, "correct": 0.0, "decided": 0.0, "batches": 0} for sigma in EVAL_SIGMAS}
        clean_rewards = []
        for index, batch in enumerate(loader):
            noise = torch.randn(
                batch["latents_a"].shape, generator=step_generator(config.seed, -1, index, accelerator.process_index)
            ).to(batch["latents_a"].device)
            for sigma in EVAL_SIGMAS:
                sigmas = torch.full((noise.shape[0],), sigma, device=noise.device)
                loss, stats = pair_loss(model, batch, sigmas, noise, theta=config.theta)
                totals = by_sigma[sigma]
                totals["loss"] += float(accelerator.gather(loss).mean())
                totals["correct"] += stats["correct"]
                totals["decided"] += stats["decided"]
                totals["batches"] += 1
            zeros = torch.zeros(2 * noise.shape[0], device=noise.device)
            clean_rewards.append(
                accelerator.gather(
                    model(
                        torch.cat([batch["latents_a"], batch["latents_b"]]),
                        zeros,
                        torch.cat([batch["text"], batch["text"]]),
                    )
                )
            )
        return by_sigma, torch.cat(clean_rewards)

    def save_weights(self, folder: Path, run: Run) -> None:
        save_latent_reward(run.unwrapped, folder, self.config)

    def summary_fields(self, run: Run) -> dict:
        return {"final": str(run.output_dir / self.final_dir_name)}

    def report(self, run: Run, elapsed: float) -> None:
        config, metrics, final_dir = self.config, run.metrics, run.output_dir / self.final_dir_name
        last_loss = metrics["train_loss"][-1]["loss"] if metrics["train_loss"] else float("nan")
        last_eval = metrics["eval"][-1]
        accuracy = (
            f", {last_eval['split']} accuracy {last_eval['accuracy']:.3f}" if last_eval["accuracy"] is not None else ""
        )
        blocks = f"{config.num_layers} block{'s' if config.num_layers != 1 else ''}"
        run.accelerator.print(
            f"latent-reward: {run.state['step']} steps on {len(self.train_set)} pairs "
            f"({'noisy' if config.noisy else 'clean'} latents, {blocks}), last loss "
            f"{last_loss:.4f}, {last_eval['split']} loss {last_eval['loss']:.4f}{accuracy}; "
            f"model in {final_dir}"
        )
        self.log.info(
            "done: %d steps in %.0f s, last loss %.4f%s; model in %s",
            run.state["step"],
            elapsed,
            last_loss,
            accuracy,
            final_dir,
        )


def train_latent_reward(config: LatentRewardConfig, *, on_step: OnStep | None = None) -> dict:
    """Train (or resume) a latent reward model; return the final metrics (also ``output_dir/metrics.json``);
    the model is in ``output_dir/final``. ``on_step(step, total_steps, loss)`` runs after every step."""
    check_config(config)
    return run_training(LatentRewardMethod(for_this_machine(config)), on_step=on_step)
