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

    pairs, roots = load_eval_pairs(snapshot=args.snapshot, split=args.split, rewardbench_csv=args.rewardbench_csv,
                                   videoalign_csv=args.videoalign_csv, video_root=args.video_root)
    if not pairs:
        print("reward-eval: no pairs to evaluate", file=sys.stderr)
        return 1
    model = load_reward_model(args.model)
    table = evaluate_pairs(model, pairs, roots=roots, batch_size=args.batch_size, num_workers=args.num_workers,
                           progress=not args.quiet)
    print(format_table(table))
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(table, handle, indent=2)
    print(f"reward-eval: {len(pairs)} pairs, accuracies in percent" + (f"; table in {args.output}" if args.output else ""))
    return 0


def _reward_score(args) -> int:
    from alignment.data.records import DIMENSIONS
    from alignment.reward import load_reward_model
    from alignment.reward.evaluate import score_videos

    if bool(args.video) == bool(args.pairs):
        print("reward-score: give --video (with --prompt) or --pairs", file=sys.stderr)
        return 2
    model = load_reward_model(args.model)
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
        scores = dict(zip(DIMENSIONS, row))
        print(json.dumps({"video": path, "prompt": prompt, **scores, "Overall": sum(row)}))
    return 0


def _reward_toy_study(args) -> int:
    from alignment.reward.toy_study import (
        MAIN_VARIANT,
        ToyStudyConfig,
        format_ablation_table,
        format_main_table,
        run_toy_study,
        summary_line,
    )

    overrides = {key: value for key, value in (("seed", args.seed), ("n_prompts", args.prompts),
                                               ("pairs_per_prompt", args.pairs_per_prompt), ("epochs", args.epochs),
                                               ("variants", tuple(args.variants) if args.variants else None),
                                               ("best_by", args.best_by))
                 if value is not None}
    overrides["progress"] = not args.quiet
    config = (ToyStudyConfig.quick(args.output_dir, **overrides) if args.quick
              else ToyStudyConfig(output_dir=args.output_dir, **overrides))
    result = run_toy_study(config)
    if MAIN_VARIANT in result["variants"]:
        print("\n" + format_main_table(result))
    print("\n" + format_ablation_table(result) + "\n")
    summary = summary_line(result) if MAIN_VARIANT in result["variants"] else f"reward-toy-study: {result['seconds']:.0f} s"
    print(f"{summary}; result in {args.output_dir}/result.json")
    return 0


def _flow_train(args) -> int:
    from alignment.config import load_config
    from alignment.flow.train import TRAINERS, train_flow

    config = load_config(TRAINERS[args.command], args.config, args.set)
    if args.output_dir:
        config.output_dir = args.output_dir
    train_flow(config, on_step=_progress_file(args))
    return 0


def _toy_policy(args) -> int:
    from pathlib import Path

    from alignment.flow.toy_policy import TOY_POLICY_FILE, ensure_toy_base_policy

    folder = ensure_toy_base_policy(args.output_dir, quick=args.quick, progress=not args.quiet)
    record = json.loads((Path(folder) / TOY_POLICY_FILE).read_text())
    print(f"toy-policy: {record['config']['steps']} flow-matching steps on {record['config']['n_clips']} toy clips "
          f"in {record['seconds']:.0f} s, final loss {record['final_loss']:.4f}; policy in {folder}")
    return 0


def _flow_toy_study(args) -> int:
    from alignment.flow.toy_study import FlowToyStudyConfig, format_table, run_flow_toy_study, summary_line

    overrides = {key: value for key, value in (("seed", args.seed), ("base_policy", args.base_policy),
                                               ("steps", args.steps), ("beta", args.beta),
                                               ("methods", tuple(args.methods) if args.methods else None))
                 if value is not None}
    overrides["progress"] = not args.quiet
    config = (FlowToyStudyConfig.quick(args.output_dir, **overrides) if args.quick
              else FlowToyStudyConfig(output_dir=args.output_dir, **overrides))
    result = run_flow_toy_study(config)
    print("\n" + format_table(result) + "\n")
    print(f"{summary_line(result)}; result in {args.output_dir}/result.json")
    return 0


def _guidance_toy_study(args) -> int:
    from alignment.flow.guidance_study import GuidanceStudyConfig, format_table, run_guidance_study, summary_line

    overrides = {key: value for key, value in (("seed", args.seed), ("base_policy", args.base_policy),
                                               ("snapshot", args.snapshot), ("reward_steps", args.reward_steps),
                                               ("readout", args.readout), ("scales", tuple(args.scales) if args.scales else None),
                                               ("max_ratios", tuple(args.max_ratios) if args.max_ratios else None),
                                               ("sigma_mins", tuple(args.sigma_mins) if args.sigma_mins else None))
                 if value is not None}
    overrides["progress"] = not args.quiet
    config = (GuidanceStudyConfig.quick(args.output_dir, **overrides) if args.quick
              else GuidanceStudyConfig(output_dir=args.output_dir, **overrides))
    result = run_guidance_study(config)
    print("\n" + format_table(result) + "\n")
    print(f"{summary_line(result)}; result in {args.output_dir}/result.json")
    return 0


def _active_learning_study(args) -> int:
    from alignment.reward.active_learning import ActiveLearningConfig, format_table, run_active_learning_study

    overrides = {key: value for key, value in (("seed", args.seed), ("pairs_per_prompt", args.pairs_per_prompt),
                                               ("initial", args.initial), ("batch", args.batch),
                                               ("rounds", args.rounds), ("repeats", args.repeats),
                                               ("min_steps", args.min_steps),
                                               ("committee_size", args.committee_size),
                                               ("policy_p_clean", args.policy_p_clean),
                                               ("strategies", tuple(args.strategies) if args.strategies else None))
                 if value is not None}
    overrides["progress"] = not args.quiet
    config = (ActiveLearningConfig.quick(args.output_dir, **overrides) if args.quick
              else ActiveLearningConfig(output_dir=args.output_dir, **overrides))
    result = run_active_learning_study(config)
    print("\n" + format_table(result) + "\n")
    print(f"active-learning-study: {config.rounds} rounds × {config.repeats} repeats in {result['seconds']:.0f} s; "
          f"result in {args.output_dir}/result.json")
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
        print("generate: --weights needs --latent-reward DIR (a latent-reward-train run's final/); "
              "without it the policy samples unguided", file=sys.stderr)
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
    records = generate_videos(policy, prompts, args.seeds, args.out, latent_reward=latent_reward, weights=weights,
                              scale=scale, sigma_min=args.sigma_min or 0.0,
                              max_ratio=DEFAULT_MAX_RATIO if args.max_ratio is None else args.max_ratio, steps=args.steps, guidance_scale=args.guidance_scale,
                              negative_prompt=args.negative_prompt, batch_size=args.batch_size, progress=not args.quiet)
    guidance = (f"reward-guided (vq={weights[0]:g}, mq={weights[1]:g}, ta={weights[2]:g}, scale {scale:g})"
                if latent_reward is not None else "unguided")
    print(f"generate: {len(records)} videos ({len(prompts)} prompts × {len(args.seeds)} seeds, {guidance}) in "
          f"{time.perf_counter() - start:.0f} s; list in {args.out}/videos.jsonl")
    return 0


def _training_arguments(parser: argparse.ArgumentParser, *, config_help: str, set_example: str) -> None:
    """The options every trainer takes: its config file, overrides, the output folder, a progress file."""
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, e.g. {set_example}")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--progress-file",
                        help="write the latest step and the loss curve to this JSON file (for a launcher in another process)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alignment", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("reward-train", help="train VideoReward on a snapshot (resumes if checkpoints exist)",
                                description="Train VideoReward from a RewardTrainConfig file (JSON or YAML).")
    _training_arguments(train, config_help="RewardTrainConfig file (.json/.yaml)",
                        set_example="--set epochs=1 --set model.shared_head=true")
    train.set_defaults(handler=_reward_train)

    evaluate = commands.add_parser("reward-eval", help="accuracy with and without ties, overall and per dimension",
                                   description="Evaluate a trained reward model on labelled pairs.")
    evaluate.add_argument("--model", required=True, help="a reward model folder (a run's model/ or a checkpoint)")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--snapshot", help="a snapshot folder")
    source.add_argument("--rewardbench-csv", help="a VideoGen-RewardBench CSV")
    source.add_argument("--videoalign-csv", help="a VideoAlign training-format CSV")
    evaluate.add_argument("--split", default="test", help="snapshot split: train, val, test or all (default test)")
    evaluate.add_argument("--video-root", help="folder that relative video paths are under")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--num-workers", type=int, default=0)
    evaluate.add_argument("--output", help="also write the table as JSON here")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=_reward_eval)

    score = commands.add_parser("reward-score", help="score videos (VQ, MQ, TA, Overall) as JSON lines",
                                description="Score single videos for a prompt, or every video of a pairs CSV.")
    score.add_argument("--model", required=True, help="a reward model folder")
    score.add_argument("--video", action="append", default=[], help="a video file (repeatable)")
    score.add_argument("--prompt", help="the text prompt the --video files were generated from")
    score.add_argument("--pairs", help="a VideoAlign-format CSV: score both videos of every pair")
    score.add_argument("--video-root", help="folder that relative paths in --pairs are under")
    score.add_argument("--batch-size", type=int, default=8)
    score.add_argument("--raw", action="store_true", help="raw rewards, without the validation normalisation")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(handler=_reward_score)

    toy = commands.add_parser(
        "reward-toy-study", help="train VideoReward on simulated toy-world judgments; compare with the oracle ceiling",
        description="Render toy pairs, let simulated annotators judge them (majority of 3 per dimension), train the "
                    "small-backbone VideoReward on training prompts and report accuracy with and without ties on "
                    "held-out prompts next to the oracle's own accuracy on the same labels (the ceiling), plus the "
                    "ablation (BT with ties, BT, regression, shared head) and a shuffled-label control.")
    toy.add_argument("--output-dir", required=True, help="a new folder: rendered clips, snapshot, runs, result.json")
    toy.add_argument("--quick", action="store_true", help="a small study (a few minutes) for tests and smoke runs")
    toy.add_argument("--seed", type=int, help="seed of the world, the annotators, the split and training (default 0)")
    toy.add_argument("--prompts", type=int, help="distinct prompts to render, at most 144")
    toy.add_argument("--pairs-per-prompt", type=int)
    toy.add_argument("--epochs", type=int)
    toy.add_argument("--variants", nargs="+", metavar="NAME",
                     help="ablation rows to train, from bt_ties (the model), bt, regression, shared_head, shuffled "
                          "(the control); default all, --quick: bt_ties shuffled")
    toy.add_argument("--best-by", choices=("accuracy", "loss"),
                     help="the epoch each model keeps: the best mean validation accuracy without ties (default) or "
                          "the lowest validation loss")
    toy.add_argument("--quiet", action="store_true", help="no progress bars")
    toy.set_defaults(handler=_reward_toy_study)

    toy_policy = commands.add_parser(
        "toy-policy", help="pretrain the toy world's base flow policy (a tiny Wan) on toy clips with defects",
        description="Pretrain a tiny Wan (a small learned conv codec, 32x32, 9 frames) with plain flow matching on toy clips "
                    "rendered with defects of random strength, so its samples vary in quality; a diffusers-format "
                    "policy folder. An existing toy policy folder is reused.")
    toy_policy.add_argument("--output-dir", required=True, help="the policy folder (built once, then reused)")
    toy_policy.add_argument("--quick", action="store_true", help="a rougher policy in a minute or two (tests)")
    toy_policy.add_argument("--quiet", action="store_true", help="no progress bars")
    toy_policy.set_defaults(handler=_toy_policy)

    flow_toy = commands.add_parser(
        "flow-toy-study", help="align the toy base policy with SFT / Flow-RWR / Flow-DPO; oracle win rates",
        description="Sample pairs from the toy base policy, judge them with simulated annotators (majority of 3), "
                    "write a snapshot, train SFT, Flow-RWR, Flow-DPO (constant beta) and Flow-DPO (beta_t) LoRAs "
                    "and report each aligned policy's oracle win rate against the base on held-out prompts x "
                    "seeds, per dimension and overall, with 95% bootstrap intervals.")
    flow_toy.add_argument("--output-dir", required=True, help="a new folder: base policy, snapshot, runs, result.json")
    flow_toy.add_argument("--quick", action="store_true",
                          help="a small study (a few minutes on one CPU thread) for tests: Flow-DPO only")
    flow_toy.add_argument("--base-policy", help="a toy base policy folder to use (built there if missing); "
                                                "default OUTPUT_DIR/base-policy")
    flow_toy.add_argument("--seed", type=int, help="seed of the split, the samples, the annotators and training")
    flow_toy.add_argument("--steps", type=int, help="training steps of every method")
    flow_toy.add_argument("--beta", type=float, help="Flow-DPO's beta (both schedules)")
    flow_toy.add_argument("--methods", nargs="+", metavar="NAME",
                          help="from sft, flow-rwr, flow-dpo, flow-dpo-time; default all (--quick: flow-dpo)")
    flow_toy.add_argument("--quiet", action="store_true", help="no progress bars")
    flow_toy.set_defaults(handler=_flow_toy_study)

    guidance_toy = commands.add_parser(
        "guidance-toy-study", help="Flow-NRG on the toy base policy: guided vs unguided oracle win rates",
        description="Train a latent reward on noisy latents and one on clean latents (the ablation) from a snapshot "
                    "of toy base-policy pairs judged by simulated annotators, choose each one's guidance strength on "
                    "the validation prompts, and report the oracle win rates of guided against unguided samples "
                    "(same initial noise) on held-out prompts x seeds for weights VQ:MQ:TA = 0:0:1, 1:1:0, 1:1:1, "
                    "with 95% bootstrap intervals.")
    guidance_toy.add_argument("--output-dir", required=True,
                              help="the study's folder: base policy, snapshot, reward runs, result.json "
                                   "(an interrupted study there resumes)")
    guidance_toy.add_argument("--quick", action="store_true", help="a small study for tests (quick base policy)")
    guidance_toy.add_argument("--base-policy", help="a toy base policy folder (built there if missing); "
                                                    "default OUTPUT_DIR/base-policy")
    guidance_toy.add_argument("--snapshot", help="reuse a flow toy study's snapshot of pairs of the same base policy")
    guidance_toy.add_argument("--reward-steps", type=int, help="training steps of each latent reward")
    guidance_toy.add_argument("--readout", choices=("frames", "mean"),
                              help="the latent rewards' readout: frames (per-frame attention pools keeping position, "
                                   "read over time, prompt-conditioned head; default) or mean (mean-pooled tokens)")
    guidance_toy.add_argument("--scales", type=float, nargs="+", metavar="W",
                              help="guidance strengths to choose from on the validation prompts")
    guidance_toy.add_argument("--max-ratios", type=float, nargs="+", metavar="CAP",
                              help="caps on sigma/(1 - sigma) to choose from with the strengths")
    guidance_toy.add_argument("--sigma-mins", type=float, nargs="+", metavar="SIGMA",
                              help="noise levels below which guidance stops, to choose from with the strengths")
    guidance_toy.add_argument("--seed", type=int, help="seed of the split, the samples, the annotators and training")
    guidance_toy.add_argument("--quiet", action="store_true", help="no progress bars")
    guidance_toy.set_defaults(handler=_guidance_toy_study)

    active = commands.add_parser(
        "active-learning-study", help="does labelling by reward uncertainty beat random order? a toy-world curve",
        description="Render a pool of toy pairs judged by simulated annotators and test pairs on held-out prompts "
                    "labelled by the oracle; label the pool round by round in random order, by the smallest "
                    "|reward margin| of VideoReward retrained each round (the labelling queue's priority), by the "
                    "entropy of its BT-with-ties predictions or by the disagreement of a committee of models, and "
                    "report the test accuracy against the judgments collected.")
    active.add_argument("--output-dir", required=True,
                        help="the study's folder: rendered pairs, one snapshot and reward run per round, result.json "
                             "(an interrupted study there resumes)")
    active.add_argument("--quick", action="store_true", help="a small study for tests (about a minute)")
    active.add_argument("--pairs-per-prompt", type=int, help="pool pairs per prompt (the pool's size)")
    active.add_argument("--initial", type=int, help="labelled pairs before the first round")
    active.add_argument("--batch", type=int, help="pairs labelled per round")
    active.add_argument("--rounds", type=int, help="labelling rounds (the first trains on the initial pairs)")
    active.add_argument("--min-steps", type=int,
                        help="optimizer steps every round trains for at least (small labelled sets get more epochs)")
    active.add_argument("--repeats", type=int, help="repeats with other initial pairs; the curve is their mean")
    active.add_argument("--strategies", nargs="+", metavar="NAME",
                        help="labelling orders: random (the baseline, first) and any of uncertainty (smallest |Δr| "
                             "of the mean normalised reward: the queue's rule), entropy (the least certain "
                             "BT-with-ties predictions over VQ, MQ, TA), committee (the pairs on which models trained "
                             "from other seeds disagree most; trains --committee-size models a round); default all "
                             "four. A finished study is extended by adding one")
    active.add_argument("--committee-size", type=int,
                        help="models the committee order trains each round, the evaluated one included (default 3)")
    active.add_argument("--policy-p-clean", type=float, metavar="P",
                        help="render policy-vs-base pairs: one clip of each pair from a generator that leaves each "
                             "dimension clean with probability P (the base: 0.25); default two seeds of the base")
    active.add_argument("--seed", type=int, help="seed of the pool, the annotators and training")
    active.add_argument("--quiet", action="store_true", help="no progress bars")
    active.set_defaults(handler=_active_learning_study)

    flow_help = {
        "sft": ("supervised fine-tuning of a flow video model on the chosen videos",
                "Plain flow matching on the winning video of every decided pair, from an SFTConfig file."),
        "flow-dpo": ("Flow-DPO on a snapshot's preference pairs",
                     "Flow-DPO (winner and loser share σ and noise; constant β, or β_t = β(1 − σ)² with "
                     "beta_schedule=time) from a FlowDPOConfig file."),
        "flow-rwr": ("Flow-RWR: flow matching weighted by exp(reward / τ)",
                     "Reward-weighted flow matching, rewards from consensus labels or a reward model, from a "
                     "FlowRWRConfig file."),
    }
    for name, (summary, description) in flow_help.items():
        flow = commands.add_parser(name, help=f"{summary} (resumes if checkpoints exist)", description=(
            f"{description} LoRA (the reference is the network with adapters disabled) or a full fine-tune "
            "(a frozen copy); writes output_dir/final (LoRA loadable by WanPipeline.load_lora_weights), "
            "output_dir/checkpoints and output_dir/metrics.json."))
        _training_arguments(flow, config_help="config file (.json/.yaml): output_dir, policy, snapshot, …",
                            set_example="--set max_steps=2 --set lora_rank=8")
        flow.set_defaults(handler=_flow_train)

    latent = commands.add_parser(
        "latent-reward-train", help="train Flow-NRG's latent reward model on noisy latents (resumes if checkpoints exist)",
        description="Train a time-conditioned reward model on the policy's latents (its first num_layers transformer "
                    "blocks, read per latent frame with the positions kept and over time, a prompt-conditioned head per "
                    "dimension; readout=mean for mean-pooled tokens) with Bradley-Terry with ties on snapshot "
                    "pairs noised alike, from a LatentRewardConfig file; writes output_dir/final (for generate --latent-reward), "
                    "output_dir/checkpoints and output_dir/metrics.json.")
    _training_arguments(latent, config_help="config file (.json/.yaml): output_dir, policy, snapshot, …",
                        set_example="--set max_steps=2 --set noisy=false")
    latent.set_defaults(handler=_latent_reward_train)

    generate = commands.add_parser(
        "generate", help="sample MP4s from a flow policy, optionally reward-guided (Flow-NRG)",
        description="Sample one video per prompt and seed from a policy folder (a base or a trained one's final/), "
                    "with classifier-free guidance and, given --latent-reward, Flow-NRG reward guidance towards "
                    "the --weights-weighted sum of the normalised VQ, MQ and TA rewards. Writes OUT/*.mp4 and "
                    "OUT/videos.jsonl (prompt, seed, weights, scale, file).")
    generate.add_argument("--policy", required=True, help="a policy folder (diffusers format, or a run's final/)")
    generate.add_argument("--prompts", required=True, help="a text file with one prompt a line, or a CSV with a prompt column")
    generate.add_argument("--out", required=True, help="output folder for the MP4s and videos.jsonl")
    generate.add_argument("--latent-reward", metavar="DIR", help="a latent-reward-train run's final/: guide sampling with it")
    generate.add_argument("--weights", help="reward weights, e.g. vq=1,mq=1,ta=2 (needs --latent-reward; default all 1)")
    generate.add_argument("--scale", type=float, help="guidance strength w (needs --latent-reward; default 100, the paper's)")
    generate.add_argument("--sigma-min", type=float,
                          help="leave the last steps, at noise level sigma <= this, unguided (needs --latent-reward; "
                               "default 0: every step)")
    generate.add_argument("--max-ratio", type=float,
                          help="cap on sigma/(1 - sigma), the push at the noisiest steps where the reward sees least "
                               "(needs --latent-reward; default 10)")
    generate.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds; one video per prompt and seed (default 0)")
    generate.add_argument("--steps", type=int, default=30, help="Euler sampling steps (default 30)")
    generate.add_argument("--guidance-scale", type=float, default=5.0, help="classifier-free guidance; 1 turns it off")
    generate.add_argument("--negative-prompt", default="", help="the negative prompt of classifier-free guidance")
    generate.add_argument("--batch-size", type=int, default=4, help="clips sampled together")
    generate.add_argument("--quiet", action="store_true", help="no progress bars")
    generate.set_defaults(handler=_generate)

    sample_plan = commands.add_parser(
        "sample-plan", help="sample, write and score videos as a JSON plan says (the workers' generation and previews)",
        description="Sample one clip per prompt and seed for each side of a plan (policy folder, prompts, seeds, "
                    "Flow-NRG guidance or not), write them as MP4s and score them (latent reward, VideoReward); "
                    "the plan's format is in alignment/cli_sample.py. A Celery worker runs this in a process of "
                    "its own and follows --progress-file.")
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
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.handler(args)
