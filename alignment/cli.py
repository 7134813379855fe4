"""``python -m alignment <command>``: every method runs from a config file, without Django."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def _reward_train(args) -> int:
    from alignment.config import load_config
    from alignment.reward.train import RewardTrainConfig, train_reward_model

    config = load_config(RewardTrainConfig, args.config, args.set)
    if args.output_dir:
        config.output_dir = args.output_dir
    train_reward_model(config, on_step=_progress_file(args))
    return 0


def _progress_file(args):
    """With ``--progress-file``: an ``on_step`` that writes every step there, and the ``alignment`` loggers at
    INFO, their records kept in the same file as the run's events (its start, evaluations, checkpoints, end) for
    the worker that launched it. Under ``accelerate launch`` only the main process (rank 0) writes it."""
    if not args.progress_file or int(os.environ.get("RANK", "0")) != 0:
        return None
    from alignment.progress import ProgressFile

    progress = ProgressFile(args.progress_file)
    logger = logging.getLogger("alignment")
    logger.setLevel(logging.INFO)
    logger.addHandler(progress.log_handler())
    return progress.on_step


def _reward_eval(args) -> int:
    from alignment.reward import load_reward_model
    from alignment.reward.evaluate import evaluate_pairs, format_table, load_eval_pairs

    pairs, roots = load_eval_pairs(
        snapshot=args.snapshot,
        split=args.split,
        rewardbench_csv=args.rewardbench_csv,
        videoalign_csv=args.videoalign_csv,
        video_root=args.video_root,
    )
    if not pairs:
        print("reward-eval: no pairs to evaluate", file=sys.stderr)
        return 1
    model = load_reward_model(args.model, base_model=args.base_model)
    table = evaluate_pairs(
        model, pairs, roots=roots, batch_size=args.batch_size, num_workers=args.num_workers, progress=not args.quiet
    )
    print(format_table(table))
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(table, handle, indent=2)
    print(
        f"reward-eval: {len(pairs)} pairs, accuracies in percent" + (f"; table in {args.output}" if args.output else "")
    )
    return 0


def _reward_score(args) -> int:
    from alignment.labels import DIMENSION_NAMES
    from alignment.reward import load_reward_model
    from alignment.reward.evaluate import score_videos

    if bool(args.video) == bool(args.pairs):
        print("reward-score: give --video (with --prompt) or --pairs", file=sys.stderr)
        return 2
    model = load_reward_model(args.model, base_model=args.base_model)
    if args.video:
        if args.prompt is None:
            print("reward-score: --video needs --prompt", file=sys.stderr)
            return 2
        items = [(path, args.prompt) for path in args.video]
    else:
        from alignment.data import read_videoalign_csv

        pairs = read_videoalign_csv(args.pairs, video_root=args.video_root)
        items = sorted({(p.video_a, p.prompt) for p in pairs} | {(p.video_b, p.prompt) for p in pairs})
    rewards = score_videos(model, items, batch_size=args.batch_size, normalize=not args.raw, progress=not args.quiet)
    for (path, prompt), row in zip(items, rewards.tolist()):
        scores = dict(zip(DIMENSION_NAMES, row))
        print(json.dumps({"video": path, "prompt": prompt, **scores, "Overall": sum(row)}))
    return 0


def _flow_train(args) -> int:
    from alignment.config import load_config
    from alignment.flow.train import TRAINERS, train_flow

    config = load_config(TRAINERS[args.command], args.config, args.set)
    if args.output_dir:
        config.output_dir = args.output_dir
    train_flow(config, on_step=_progress_file(args))
    return 0


def _flow_grpo(args) -> int:
    from alignment.config import load_config
    from alignment.flow.grpo_train import FlowGRPOConfig, train_flow_grpo

    config = load_config(FlowGRPOConfig, args.config, args.set)
    if args.output_dir:
        config.output_dir = args.output_dir
    train_flow_grpo(config, on_step=_progress_file(args))
    return 0


def _latent_reward_train(args) -> int:
    from alignment.config import load_config
    from alignment.flow.latent_reward import LatentRewardConfig, train_latent_reward

    config = load_config(LatentRewardConfig, args.config, args.set)
    if args.output_dir:
        config.output_dir = args.output_dir
    train_latent_reward(config, on_step=_progress_file(args))
    return 0


def _generate(args) -> int:
    import time

    from alignment.flow.guidance import generate_videos, parse_weights, read_prompts

    if args.weights is not None and not args.latent_reward:
        print(
            "generate: --weights needs --latent-reward DIR (a latent-reward-train run's final/); "
            "without it the policy samples unguided",
            file=sys.stderr,
        )
        return 2
    for option, value in (("--scale", args.scale), ("--sigma-min", args.sigma_min), ("--max-ratio", args.max_ratio)):
        if value is not None and not args.latent_reward:
            print(f"generate: {option} needs --latent-reward DIR (a latent-reward-train run's final/)", file=sys.stderr)
            return 2
    try:
        weights = parse_weights(args.weights) if args.weights is not None else (1.0, 1.0, 1.0)
        prompts = read_prompts(args.prompts)
    except (OSError, ValueError) as error:
        print(f"generate: {error}", file=sys.stderr)
        return 2
    import torch

    from alignment.flow.guidance import DEFAULT_MAX_RATIO, DEFAULT_SCALE
    from alignment.flow.latent_reward import load_latent_reward
    from alignment.flow.model import load_policy

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    policy = load_policy(args.policy, device=device, dtype=dtype)
    latent_reward = load_latent_reward(args.latent_reward, map_location=device) if args.latent_reward else None
    scale = DEFAULT_SCALE if args.scale is None else args.scale
    start = time.perf_counter()
    records = generate_videos(
        policy,
        prompts,
        args.seeds,
        args.out,
        latent_reward=latent_reward,
        weights=weights,
        scale=scale,
        sigma_min=args.sigma_min or 0.0,
        max_ratio=DEFAULT_MAX_RATIO if args.max_ratio is None else args.max_ratio,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        negative_prompt=args.negative_prompt,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    guidance = (
        f"reward-guided (vq={weights[0]:g}, mq={weights[1]:g}, ta={weights[2]:g}, scale {scale:g})"
        if latent_reward is not None
        else "unguided"
    )
    print(
        f"generate: {len(records)} videos ({len(prompts)} prompts × {len(args.seeds)} seeds, {guidance}) in "
        f"{time.perf_counter() - start:.0f} s; list in {args.out}/videos.jsonl"
    )
    return 0


def _training_arguments(parser: argparse.ArgumentParser, *, config_help: str, set_example: str) -> None:
    """The options every trainer takes: its config file, overrides, the output folder, a progress file."""
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help=f"override a config value, e.g. {set_example}"
    )
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument(
        "--progress-file",
        help="write the latest step and the loss curve to this JSON file (for a launcher in another process)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alignment", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "reward-train",
        help="train VideoReward on a snapshot (resumes if checkpoints exist)",
        description="Train VideoReward from a RewardTrainConfig file (JSON or YAML).",
    )
    _training_arguments(
        train,
        config_help="RewardTrainConfig file (.json/.yaml)",
        set_example="--set epochs=1 --set model.shared_head=true",
    )
    train.set_defaults(handler=_reward_train)

    evaluate = commands.add_parser(
        "reward-eval",
        help="accuracy with and without ties, overall and per dimension",
        description="Evaluate a trained reward model on labelled pairs.",
    )
    evaluate.add_argument("--model", required=True, help="a reward model folder (a run's model/ or a checkpoint)")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--snapshot", help="a snapshot folder")
    source.add_argument("--rewardbench-csv", help="a VideoGen-RewardBench CSV")
    source.add_argument("--videoalign-csv", help="a VideoAlign training-format CSV")
    evaluate.add_argument("--split", default="test", help="snapshot split: train, val, test or all (default test)")
    evaluate.add_argument("--video-root", help="folder that relative video paths are under")
    evaluate.add_argument(
        "--base-model",
        help="a VideoAlign checkpoint's base Qwen2-VL as a local folder (default: its model_name_or_path, if local)",
    )
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--num-workers", type=int, default=0)
    evaluate.add_argument("--output", help="also write the table as JSON here")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=_reward_eval)

    score = commands.add_parser(
        "reward-score",
        help="score videos (VQ, MQ, TA, Overall) as JSON lines",
        description="Score single videos for a prompt, or every video of a pairs CSV.",
    )
    score.add_argument("--model", required=True, help="a reward model folder")
    score.add_argument("--video", action="append", default=[], help="a video file (repeatable)")
    score.add_argument("--prompt", help="the text prompt the --video files were generated from")
    score.add_argument("--pairs", help="a VideoAlign-format CSV: score both videos of every pair")
    score.add_argument("--video-root", help="folder that relative paths in --pairs are under")
    score.add_argument(
        "--base-model",
        help="a VideoAlign checkpoint's base Qwen2-VL as a local folder (default: its model_name_or_path, if local)",
    )
    score.add_argument("--batch-size", type=int, default=8)
    score.add_argument("--raw", action="store_true", help="raw rewards, without the validation normalisation")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(handler=_reward_score)

    flow_help = {
        "sft": (
            "supervised fine-tuning of a flow video model on the chosen videos",
            "Plain flow matching on the winning video of every decided pair, from an SFTConfig file.",
        ),
        "flow-dpo": (
            "Flow-DPO on a snapshot's preference pairs",
            "Flow-DPO (winner and loser share σ and noise; constant β, or β_t = β(1 − σ)² with "
            "beta_schedule=time) from a FlowDPOConfig file.",
        ),
        "flow-rwr": (
            "Flow-RWR: flow matching weighted by exp(reward / τ)",
            "Reward-weighted flow matching, rewards from consensus labels or a reward model, from a "
            "FlowRWRConfig file.",
        ),
    }
    for name, (summary, description) in flow_help.items():
        flow = commands.add_parser(
            name,
            help=f"{summary} (resumes if checkpoints exist)",
            description=(
                f"{description} LoRA (the reference is the network with adapters disabled) or a full fine-tune "
                "(a frozen copy); writes output_dir/final (LoRA loadable by WanPipeline.load_lora_weights), "
                "output_dir/checkpoints and output_dir/metrics.json."
            ),
        )
        _training_arguments(
            flow,
            config_help="config file (.json/.yaml): output_dir, policy, snapshot, …",
            set_example="--set max_steps=2 --set lora_rank=8",
        )
        flow.set_defaults(handler=_flow_train)

    grpo = commands.add_parser(
        "flow-grpo",
        help="Flow-GRPO: online RL of the policy's LoRA from a reward model (resumes if checkpoints exist)",
        description="Each step samples group_size videos per prompt from the current policy with the SDE "
        "(sample_steps steps), scores them with reward_model (dimension_weights over VQ/MQ/TA), standardises "
        "the rewards within each prompt's group and takes the clipped objective with a KL penalty to the policy "
        "with its LoRA off, from a FlowGRPOConfig file; prompts from a snapshot or a prompt file. Writes "
        "output_dir/final (LoRA loadable by WanPipeline.load_lora_weights), output_dir/checkpoints and "
        "output_dir/metrics.json (reward mean/std per step, KL, clip fraction, the validation reward).",
    )
    _training_arguments(
        grpo,
        config_help="config file (.json/.yaml): output_dir, policy, reward_model, snapshot or prompt_file, …",
        set_example="--set max_steps=2 --set group_size=4 --set kl_weight=0.04",
    )
    grpo.set_defaults(handler=_flow_grpo)

    latent = commands.add_parser(
        "latent-reward-train",
        help="train Flow-NRG's latent reward model on noisy latents (resumes if checkpoints exist)",
        description="Train a time-conditioned reward model on the policy's latents (its first num_layers transformer "
        "blocks, read per latent frame with the positions kept and over time, a prompt-conditioned head per "
        "dimension; readout=mean for mean-pooled tokens) with Bradley-Terry with ties on snapshot "
        "pairs noised alike, from a LatentRewardConfig file; writes output_dir/final (for generate --latent-reward), "
        "output_dir/checkpoints and output_dir/metrics.json.",
    )
    _training_arguments(
        latent,
        config_help="config file (.json/.yaml): output_dir, policy, snapshot, …",
        set_example="--set max_steps=2 --set noisy=false",
    )
    latent.set_defaults(handler=_latent_reward_train)

    generate = commands.add_parser(
        "generate",
        help="sample MP4s from a flow policy, optionally reward-guided (Flow-NRG)",
        description="Sample one video per prompt and seed from a policy folder (a base or a trained one's final/), "
        "with classifier-free guidance and, given --latent-reward, Flow-NRG reward guidance towards "
        "the --weights-weighted sum of the normalised VQ, MQ and TA rewards. Writes OUT/*.mp4 and "
        "OUT/videos.jsonl (prompt, seed, weights, scale, file).",
    )
    generate.add_argument("--policy", required=True, help="a policy folder (diffusers format, or a run's final/)")
    generate.add_argument(
        "--prompts", required=True, help="a text file with one prompt a line, or a CSV with a prompt column"
    )
    generate.add_argument("--out", required=True, help="output folder for the MP4s and videos.jsonl")
    generate.add_argument(
        "--latent-reward", metavar="DIR", help="a latent-reward-train run's final/: guide sampling with it"
    )
    generate.add_argument(
        "--weights", help="reward weights, e.g. vq=1,mq=1,ta=2 (needs --latent-reward; default all 1)"
    )
    generate.add_argument(
        "--scale", type=float, help="guidance strength w (needs --latent-reward; default 100, the paper's)"
    )
    generate.add_argument(
        "--sigma-min",
        type=float,
        help="leave the last steps, at noise level sigma <= this, unguided (needs --latent-reward; "
        "default 0: every step)",
    )
    generate.add_argument(
        "--max-ratio",
        type=float,
        help="cap on sigma/(1 - sigma), the push at the noisiest steps where the reward sees least "
        "(needs --latent-reward; default 10)",
    )
    generate.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="seeds; one video per prompt and seed (default 0)"
    )
    generate.add_argument("--steps", type=int, default=30, help="Euler sampling steps (default 30)")
    generate.add_argument("--guidance-scale", type=float, default=5.0, help="classifier-free guidance; 1 turns it off")
    generate.add_argument("--negative-prompt", default="", help="the negative prompt of classifier-free guidance")
    generate.add_argument("--batch-size", type=int, default=4, help="clips sampled together")
    generate.add_argument("--quiet", action="store_true", help="no progress bars")
    generate.set_defaults(handler=_generate)

    sample_plan = commands.add_parser(
        "sample-plan",
        help="sample, write and score videos as a JSON plan says (the workers' generation and previews)",
        description="Sample one clip per prompt and seed for each side of a plan (policy folder, prompts, seeds, "
        "Flow-NRG guidance or not), write them as MP4s and score them (latent reward, VideoReward); "
        "the plan's format is in alignment/cli_sample.py. A Celery worker runs this in a process of "
        "its own and follows --progress-file.",
    )
    sample_plan.add_argument("--plan", required=True, help="the plan (JSON)")
    sample_plan.add_argument("--result", required=True, help="where the result (JSON) is written")
    sample_plan.add_argument("--progress-file", help="write the progress to this JSON file")
    sample_plan.set_defaults(handler=_sample_plan)
    return parser


def _sample_plan(args) -> int:
    from alignment.cli_sample import main as sample_plan_main

    return sample_plan_main(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    return args.handler(args)
