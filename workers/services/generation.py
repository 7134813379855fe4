"""New pairs for labelling (``gpu`` queue): two candidates per prompt, scored by the reward model, queued with a
priority that is higher the less sure the reward model is (small |Δr|): active learning.

Where the two candidates come from is the job's ``source`` (``GenerationConfig``):

- ``policy_vs_base``: the aligned policy and the base policy, each its own seed (so even a policy that barely
  moved yields two different videos);
- ``two_seeds``: one policy (an aligned one, else the base) with two seeds;
- ``guided_vs_unguided``: one policy and one seed, sampled with Flow-NRG reward guidance (a latent reward
  model, the job's VQ/MQ/TA ``weights`` and ``guidance_strength`` w) and without.

With a latent reward model, side A is the guided one whatever the source. Each video's generation params
record its seed, the sampling settings, the guidance (weights, strength, latent reward model) and its
generator name says what it is: ``flow-dpo-3``, ``base``, ``base+nrg(vq=1,mq=1,ta=2,w=100)``.

Prompts come from the job's ``prompt_file`` (CSV with a ``prompt`` column, or one prompt a line), else
``VIDPREF_PROMPT_SET``, else the prompts already in the database.

Generation jobs (``generate``): ``generation_job_create`` checks the inputs, records and queues one (the web
side); ``generation_work`` runs it (the worker side, the sampling in a child process).
"""

from __future__ import annotations

import csv
import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from alignment.config import config_from_dict
from alignment.flow.config import GenerationConfig
from alignment.labels import DIMENSION_NAMES
from annotate.models import Pair, Prompt
from annotate.services.ingest import GeneratedPair, generated_pairs_queue
from workers.models import Job, ModelVersion
from workers.services.alignment import base_policy_folder
from workers.services.jobs import job_create, job_folder
from workers.services.launch import SamplingPlanError, run_sampling


class GenerationInputError(ValueError):
    """A generation or preview request that cannot run; ``field`` names the form field to fix."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def prompts_load(path: str | Path | None) -> list[str]:
    """Prompts from a CSV with a ``prompt`` column or a text file with one a line; the database's without a path."""
    if not path:
        return list(Prompt.objects.order_by("pk").values_list("text", flat=True))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompt file not found")
    with open(path, newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(handle)
            if "prompt" not in (reader.fieldnames or []):
                raise ValueError(f"{path}: a prompt CSV needs a 'prompt' column; found {reader.fieldnames}")
            prompts = [row["prompt"].strip() for row in reader]
        else:
            prompts = [line.strip() for line in handle]
    prompts = [prompt for prompt in prompts if prompt]
    if not prompts:
        raise ValueError(f"{path}: no prompts in it")
    return prompts


def generation_config(values: dict) -> GenerationConfig:
    """A GenerationConfig from a job's params (the fields it names; the rest are the dataclass's defaults)."""
    names = {field.name for field in dataclasses.fields(GenerationConfig)}
    chosen = {key: value for key, value in values.items() if key in names}
    source = chosen.get("source", GenerationConfig.source)
    if source not in GenerationConfig.SOURCES:
        raise GenerationInputError("source", f"{source!r}: choose one of {', '.join(GenerationConfig.SOURCES)}")
    try:
        return config_from_dict(GenerationConfig, chosen, where="generation")
    except ValueError as exc:  # what GenerationConfig checks besides the source: the weights' syntax
        raise GenerationInputError("weights", str(exc).removeprefix("weights ")) from None


def model_version_check(version: ModelVersion | None, kind: str, field: str) -> None:
    if version is not None and version.kind != kind:
        raise GenerationInputError(
            field, f"{version.name} is a {version.get_kind_display()}, not a {ModelVersion.Kind(kind).label}"
        )


def guidance_inputs_check(
    config: GenerationConfig, latent_reward_version: ModelVersion | None, *, required: bool
) -> None:
    """A guided side needs a latent reward model, a non-zero weight and a non-zero strength."""
    model_version_check(latent_reward_version, ModelVersion.Kind.LATENT_REWARD, "latent_reward_version")
    if latent_reward_version is None:
        if required:
            raise GenerationInputError(
                "latent_reward_version",
                "guided sampling (Flow-NRG) needs a latent reward model; train one with 'Train a latent reward model'",
            )
        return
    if not any(config.dimension_weights()):
        raise GenerationInputError(
            "weights",
            f"{config.weights!r} weighs every dimension 0, so guidance would "
            "change nothing; give at least one dimension a weight",
        )
    if config.guidance_strength == 0:
        raise GenerationInputError("guidance_strength", "0 turns guidance off; the paper uses 100")


def generation_limits_check(config: GenerationConfig) -> None:
    if config.pairs < 1:
        raise GenerationInputError("pairs", f"{config.pairs}: generate at least one pair")
    if config.steps < 1:
        raise GenerationInputError("steps", f"{config.steps}: sampling needs at least one step")
    if not 0.0 <= config.guidance_sigma_min < 1.0:
        raise GenerationInputError(
            "guidance_sigma_min", f"{config.guidance_sigma_min:g}: give a noise level in [0, 1); 0 guides every step"
        )
    if not config.guidance_max_ratio > 0:
        raise GenerationInputError(
            "guidance_max_ratio",
            f"{config.guidance_max_ratio:g}: give a positive cap on "
            "σ/(1 − σ); 10 is the default, 1 guided best in the toy study",
        )


def generation_job_create(
    *,
    policy_version: ModelVersion | None = None,
    reward_version: ModelVersion | None = None,
    latent_reward_version: ModelVersion | None = None,
    overrides: dict | None = None,
    created_by=None,
) -> Job:
    """Queue pair generation; ``overrides`` are GenerationConfig values (``source``, ``pairs``, ``weights``…).

    ``policy_vs_base`` needs ``policy_version``; the other sources use the base policy without one.
    ``guided_vs_unguided`` needs ``latent_reward_version``; with another source it guides side A."""
    config = generation_config(overrides or {})
    model_version_check(policy_version, ModelVersion.Kind.POLICY, "policy_version")
    model_version_check(reward_version, ModelVersion.Kind.REWARD, "reward_version")
    if config.source == "policy_vs_base" and policy_version is None:
        raise GenerationInputError(
            "policy_version",
            "source policy_vs_base compares an aligned policy with the base "
            "policy; choose one, or pick the source two_seeds or guided_vs_unguided",
        )
    guidance_inputs_check(config, latent_reward_version, required=config.source == "guided_vs_unguided")
    generation_limits_check(config)
    params = {
        **(overrides or {}),
        "policy_model_version_id": policy_version.pk if policy_version else None,
        "reward_model_version_id": reward_version.pk if reward_version else None,
        "latent_reward_model_version_id": latent_reward_version.pk if latent_reward_version else None,
    }
    return job_create(kind=Job.Kind.GENERATE, params=params, created_by=created_by)


def uncertainty_priority(reward_a: float, reward_b: float) -> float:
    """In (0, 1]: 1 when the reward model cannot tell the two apart, towards 0 as it grows sure."""
    return 1.0 / (1.0 + abs(reward_a - reward_b))


def queue_priorities(rewards: list[tuple[float, float]], *, order: str, rng: random.Random) -> list[float]:
    """Each generated pair's queue priority, in (0, 1] like every generated pair's (demo pairs sit at 2, imports
    at 0): ``random`` — a uniform draw, so annotators meet the pairs in random order (the default: no order
    saved judgments in the measurements of docs/ml/reward.md §5); ``uncertainty`` — ``uncertainty_priority``."""
    if order == "uncertainty":
        return [uncertainty_priority(ra, rb) for ra, rb in rewards]
    if order == "random":
        return [1.0 - rng.random() for _ in rewards]  # in (0, 1]
    raise ValueError(f"queue_order {order!r}: choose random or uncertainty")


@dataclass(frozen=True)
class Side:
    """One side of the generated pairs: which policy samples it, its seeds' offset, whether it is guided."""

    policy_folder: str
    policy_name: str
    seed_offset: int
    guided: bool


def generator_name(policy_name: str, config: GenerationConfig, *, guided: bool) -> str:
    """What made a video: ``flow-dpo-3``, or ``flow-dpo-3+nrg(vq=1,mq=1,ta=2,w=100)`` when guided (with
    ``,cap=…`` and ``,sigma_min=…`` where those differ from the defaults)."""
    if not guided:
        return policy_name
    cap = (
        f",cap={config.guidance_max_ratio:g}"
        if config.guidance_max_ratio != GenerationConfig.guidance_max_ratio
        else ""
    )
    interval = f",sigma_min={config.guidance_sigma_min:g}" if config.guidance_sigma_min else ""
    return f"{policy_name}+nrg({config.weights_label()},w={config.guidance_strength:g}{cap}{interval})"


def generation_sides(
    *, config: GenerationConfig, policy_version: ModelVersion | None, latent_reward_version: ModelVersion | None
) -> tuple[Side, Side]:
    """Sides A and B for the config's source (see the module docstring)."""
    base_folder = str(base_policy_folder())
    folder, name = (policy_version.path, policy_version.name) if policy_version else (base_folder, "base")
    guided = latent_reward_version is not None
    if config.source == "policy_vs_base":
        return Side(folder, name, 0, guided), Side(base_folder, "base", 1, False)
    if config.source == "two_seeds":
        return Side(folder, name, 0, guided), Side(folder, name, 1, False)
    return Side(folder, name, 0, True), Side(folder, name, 0, False)


def generation_work(job: Job) -> dict:
    """A generation job's work (run by ``job_execute``): sample both sides' clips and score them in a child process
    (``alignment.cli_sample``: this task's process is a daemonic child of the worker, which must not hold CUDA),
    then queue the pairs here."""
    params = job.params
    config = generation_config({"pairs": settings.VIDPREF_PIPELINE_GENERATE_PAIRS, **params})
    prompts = prompts_load(config.prompt_file or settings.VIDPREF_PROMPT_SET or None)
    if not prompts:
        raise ValueError(
            "no prompts to generate for: give the job a prompt_file, set VIDPREF_PROMPT_SET, or import some pairs first"
        )
    versions = ModelVersion.objects.in_bulk(
        [
            pk
            for pk in (
                params.get("policy_model_version_id"),
                params.get("latent_reward_model_version_id"),
                params.get("reward_model_version_id"),
            )
            if pk
        ]
    )
    policy_version = versions.get(params.get("policy_model_version_id"))
    latent_version = versions.get(params.get("latent_reward_model_version_id"))
    reward_version = versions.get(params.get("reward_model_version_id"))
    sides = generation_sides(config=config, policy_version=policy_version, latent_reward_version=latent_version)
    count = config.pairs
    rng = random.Random(job.pk)
    chosen = [rng.choice(prompts) for _ in range(count)]
    seeds = [rng.randrange(2**31) for _ in range(count)]
    folder = job_folder(job) / "videos"
    sampling = {"steps": config.steps, "guidance_scale": config.guidance_scale}
    guidance = (
        {
            "weights": dict(zip(DIMENSION_NAMES, config.dimension_weights())),
            "strength": config.guidance_strength,
            "sigma_min": config.guidance_sigma_min,
            "max_ratio": config.guidance_max_ratio,
            "latent_reward": latent_version.name,
        }
        if latent_version
        else None
    )
    generators = {name: generator_name(side.policy_name, config, guided=side.guided) for name, side in zip("ab", sides)}
    side_seeds = {name: [seed + side.seed_offset for seed in seeds] for name, side in zip("ab", sides)}
    plan = {
        "config": dataclasses.asdict(config),
        "total": 2 * count + 1,
        "latent_reward": latent_version.path if latent_version else None,
        "latent_reward_name": latent_version.name if latent_version else None,
        "reward_model": reward_version.path if reward_version else None,
        "reward_model_name": reward_version.name if reward_version else None,
        "sides": [
            {
                "name": name,
                "policy": side.policy_folder,
                "label": generators[name],
                "prompts": chosen,
                "seeds": side_seeds[name],
                "guided": side.guided,
                "folder": str(folder),
                "stems": [f"{name}-{i:05d}" for i in range(count)],
            }
            for name, side in zip("ab", sides)
        ],
    }
    try:
        sampled = run_sampling(job=job, plan=plan)
    except SamplingPlanError as error:
        raise GenerationInputError(error.field or "latent_reward_version", str(error)) from None
    paths = {name: [Path(path) for path in sampled["sides"][name]["paths"]] for name in "ab"}
    params_of = {
        name: [
            {
                "seed": seed,
                "generator": generators[name],
                "source": config.source,
                "policy": side.policy_name,
                **sampling,
                "nrg": guidance if side.guided else None,
            }
            for seed in side_seeds[name]
        ]
        for name, side in zip("ab", sides)
    }
    job.report_progress(2 * count + 1, 2 * count + 1, "queueing")
    if reward_version:
        rewards = list(zip(sampled["reward_scores"]["a"], sampled["reward_scores"]["b"]))
    else:
        rewards = [(0.0, 0.0)] * count
    priorities = queue_priorities(rewards, order=config.queue_order, rng=rng)
    pairs = [
        GeneratedPair(
            prompt=prompt,
            video_a=a,
            video_b=b,
            generator_a=generators["a"],
            generator_b=generators["b"],
            params_a={**pa, "reward": ra},
            params_b={**pb, "reward": rb},
            priority=priority,
        )
        for prompt, a, b, pa, pb, (ra, rb), priority in zip(
            chosen, paths["a"], paths["b"], params_of["a"], params_of["b"], rewards, priorities
        )
    ]
    report = generated_pairs_queue(
        pairs=pairs,
        source=f"generated:job-{job.pk}",
        name=f"{config.source}: {generators['a']} vs {generators['b']} (job {job.pk})",
        created_by=job.created_by,
    )
    job.append_log(report.summary())
    held = pairs_hold_if_untrained(batch_id=report.batch_id)
    if held:
        job.append_log(
            f"{held} new pairs held out of the labelling queue: they were sampled from the built-in tiny "
            "policy, which is untrained and makes noise (no VIDPREF_BASE_POLICY is set). They are in the "
            "batch, retired. Point VIDPREF_BASE_POLICY at a real video model to queue what it generates "
            "(VIDPREF_QUEUE_UNTRAINED_POLICY_PAIRS=true queues them anyway)."
        )
    return {
        **report.as_dict(),
        "pairs_held": held,
        "source": config.source,
        "generator_a": generators["a"],
        "generator_b": generators["b"],
        "policy": policy_version.name if policy_version else "base",
    }


def pairs_hold_if_untrained(*, batch_id: int) -> int:
    """Without ``VIDPREF_BASE_POLICY`` every policy is the built-in tiny Wan (random weights, or a short LoRA on
    them): enough to run the loop on a CPU, but its videos are noise that nobody can judge. Such pairs are
    kept (retired) rather than served to annotators, unless ``VIDPREF_QUEUE_UNTRAINED_POLICY_PAIRS`` asks
    for them. Returns how many were held."""
    if settings.VIDPREF_BASE_POLICY or settings.VIDPREF_QUEUE_UNTRAINED_POLICY_PAIRS:
        return 0
    return Pair.objects.filter(batch_id=batch_id, status=Pair.Status.OPEN, filled=0).update(status=Pair.Status.RETIRED)
