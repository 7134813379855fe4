"""One training loop for every trainer: VideoReward (``alignment.reward.train``), SFT / Flow-DPO / Flow-RWR
(``alignment.flow.train``) and Flow-NRG's latent reward (``alignment.flow.latent_reward``).

``run_training(method, on_step=…)`` (``loop.py``) is the part the three trainers used to copy, and now share:

- an ``accelerate`` ``Accelerator`` (gradient accumulation, mixed precision, several processes), the seed,
  ``output_dir/train_config.json``, the micro-batch size (``batch_size`` over processes × accumulation steps);
- AdamW (by default) and the learning-rate schedule (``learning_rate_factor``: warmup, then constant or cosine)
  over ``ceil(items / batch_size) × epochs`` steps, ``max_steps`` capping it;
- resume: the newest complete checkpoint's weights (through the method), optimizer, scheduler, step, epoch,
  batches into the epoch and metrics; a resumed run sees the epoch's items in the same order (the sampler is
  seeded by seed + epoch) and skips those it already trained on;
- the step: every micro-batch gets a generator seeded by (seed, step, micro-batch, process), so its random
  draws are the same on a resumed run; accumulation, gradient clipping, the optimizer and scheduler steps; the
  step's record in ``metrics["train_loss"]`` (step, epoch, the method's fields, lr); the progress bar;
  ``on_step(step, total, loss)`` on the main process (``alignment.progress.ProgressFile.on_step`` writes the
  progress file a worker reads);
- the cadence: an evaluation every ``eval_every_steps`` (and/or at every epoch's end), a checkpoint every
  ``save_every_steps`` (``alignment.checkpoints``: written under a temporary name, renamed, old ones pruned),
  a last evaluation when the last one is not at the last step, a last checkpoint (``checkpoint_at_end``);
- the end: the throughput, the final artefact written atomically (``checkpoints.write_folder_atomic``: a run
  that fails before the end leaves none, nor half of one), ``metrics.json`` (atomically), the summary;
- the events, one INFO line each through the method's logger (a worker shows them): start (+ where it
  resumed from), checkpoints; the method logs its evaluations and its ``done`` line.

A ``TrainingMethod`` (``loop.py``) is the part that varies, as hooks; what each trainer puts there:

- ``FlowMethod`` (``alignment.flow.train``): loads the policy, builds the text/latent cache and the items of the
  method (winners, rewarded videos, preference pairs), adds LoRA adapters (float32 on a half-precision base) or
  keeps a frozen full copy; its loss draws σ and noise from the step's generator and, for Flow-DPO, runs the
  reference with the LoRA adapters switched off (or the frozen copy); it evaluates the same loss with fixed
  draws; saves LoRA weights or the transformer + ``flow_policy.json`` to ``final/``; adds the cache to metrics.
- ``RewardMethod`` (``alignment.reward.train``): pairs from a snapshot or CSV, ``RewardModel``, two learning
  rates (heads vs body), Bradley–Terry(-with-ties) loss; evaluates at every epoch's end (accuracy with/without
  ties, the rewards' normalisation), keeps the best epoch (``keep_best``) and checkpoints there; its artefact
  is ``model/`` (the best epoch's when kept), and it keeps the frame cache within its size.
- ``LatentRewardMethod`` (``alignment.flow.latent_reward``): the cache, a copy of the policy's first K blocks,
  BT-with-ties on pairs noised alike (σ and noise from the step's generator; or clean), a step's accuracy over
  the decided labels; evaluates per σ level and sets the normalisation from clean latents; ``final/``.

The method keeps its own data, frozen models and state on ``self``; the loop hands each hook the ``Run``
(config, accelerator, output_dir, the prepared model/optimizer/scheduler, state, metrics). Pure PyTorch and
``accelerate``: nothing here knows of Django.
"""

from alignment.training.loop import (
    LR_SCHEDULES,
    OnStep,
    Run,
    TrainingMethod,
    check_lr_schedule,
    for_this_machine,
    learning_rate_factor,
    micro_batch_size,
    run_training,
    step_generator,
)

__all__ = [
    "LR_SCHEDULES",
    "OnStep",
    "Run",
    "TrainingMethod",
    "check_lr_schedule",
    "for_this_machine",
    "learning_rate_factor",
    "micro_batch_size",
    "run_training",
    "step_generator",
]
