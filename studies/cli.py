"""``python -m studies <study>``: run a research study; its options are generated from its config dataclass.

Every field of a study's config dataclass becomes an option ``--field-name`` (a field without a default is a
required option): its type, its default and its help (the field's trailing comment) come from the dataclass,
as the admin's job forms come from the trainers' configs (``alignment.config.config_fields``). A bool is
``--x`` / ``--no-x``, a tuple or list takes several values (a fixed-length tuple exactly its length), a
``typing.Literal`` (or a tuple of one) offers its values as choices, an optional field also takes ``none``,
and anything else (a dict) is JSON. Options left out keep the dataclass's default, or with ``--quick`` the
study's quick size (``Config.quick()``); the options given override either. ``--quiet`` turns the progress
bars off (the ``progress`` field).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

DESCRIPTION = (
    "Research studies: evidence, measured in the toy world, that the product's methods work. Each "
    "study's options are generated from its config dataclass: its fields, their types, defaults and "
    "comments."
)
SPECIAL_FIELDS = ("progress",)  # set by --quiet, not by an option of their own


# --------------------------------------------------------------------------------------------------
# Options from a config dataclass
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigOption:
    """One generated option: the config field it sets and the ``add_argument`` call that reads it."""

    name: str  # the field
    flags: tuple[str, ...]  # "--field-name" (and any aliases)
    kwargs: dict = field(hash=False)  # for ArgumentParser.add_argument
    convert: Callable[[Any], Any] | None = None  # parsed value → field value (a list → a tuple); None: as parsed


def _typed(kind: type, *, optional: bool) -> Callable[[str], Any]:
    """An argparse ``type`` reading ``kind`` (``none`` too when ``optional``), named for argparse's errors."""
    if kind is str and not optional:
        return str

    def read(text: str):
        if optional and text.lower() == "none":
            return None
        return kind(text)

    read.__name__ = kind.__name__
    return read


def _json_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): {text!r}") from error


_json_value.__name__ = "JSON"


def _show(value) -> str:
    """A default as one writes it on the command line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(_show(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def config_options(
    cls, *, quick=None, aliases: dict[str, tuple[str, ...]] | None = None, skip: tuple[str, ...] = SPECIAL_FIELDS
) -> list[ConfigOption]:
    """One option per init field of the dataclass ``cls`` (but ``skip``), in declaration order. ``quick``: the
    study's quick config, whose values the help shows next to the defaults where they differ."""
    from alignment.config import config_fields

    aliases = aliases or {}
    options = []
    for config_field in config_fields(cls):
        name, kind = config_field.name, config_field.kind
        if name in skip:
            continue
        if "." in name:
            raise TypeError(f"{cls.__name__}.{name}: nested config dataclasses have no generated options")
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        convert = None
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if config_field.choices:
            kwargs.update(
                type=_typed(type(config_field.choices[0]), optional=config_field.optional),
                choices=[*config_field.choices, *([None] if config_field.optional else [])],
            )
        elif kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind in (int, float, str):
            kwargs["type"] = _typed(kind, optional=config_field.optional)
            if kind is not str:
                kwargs["metavar"] = kind.__name__.upper()
        elif origin in (tuple, list) and args:
            item = args[0]
            if origin is tuple and Ellipsis not in args:
                kwargs["nargs"] = len(args)  # a fixed-length tuple: (1, 8, 8)
            else:
                kwargs["nargs"] = "+"
            if typing.get_origin(item) is typing.Literal:
                kwargs["choices"] = typing.get_args(item)
                item = type(kwargs["choices"][0])
            kwargs["type"] = _typed(item, optional=False)
            if item is not str and "choices" not in kwargs:
                kwargs["metavar"] = item.__name__.upper()
            convert = tuple if origin is tuple else list
        else:
            kwargs.update(type=_json_value, metavar="JSON")
        if config_field.default is dataclasses.MISSING:
            kwargs["required"] = True
            shown = "required"
        else:
            shown = f"default: {_show(config_field.default)}"
            quick_value = getattr(quick, name, config_field.default)
            if quick is not None and quick_value != config_field.default:
                shown += f"; --quick: {_show(quick_value)}"
        if kwargs.get("choices") and kwargs.get("nargs"):
            kwargs["metavar"] = name.upper()
            shown = f"from {', '.join(map(str, kwargs['choices']))}; {shown}"
        if kwargs.get("type") is _json_value:
            shown = f"JSON; {shown}"
        doc = config_field.doc
        kwargs["help"] = (f"{doc} ({shown})" if doc else shown).replace("%", "%%")
        flags = (f"--{name.replace('_', '-')}", *aliases.get(name, ()))
        options.append(ConfigOption(name, flags, kwargs, convert))
    return options


def add_config_options(parser: argparse.ArgumentParser, options: list[ConfigOption], *, title: str) -> None:
    group = parser.add_argument_group(title)
    for option in options:
        group.add_argument(*option.flags, **option.kwargs)


def config_values(options: list[ConfigOption], args: argparse.Namespace) -> dict:
    """The fields set on the command line: {name: value}; the options left out are absent."""
    values = {option.name: getattr(args, option.name) for option in options if hasattr(args, option.name)}
    return {
        name: option.convert(values[name]) if option.convert else values[name]
        for option in options
        for name in [option.name]
        if name in values
    }


# --------------------------------------------------------------------------------------------------
# The studies
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """A subcommand: the study's config dataclass (``module:Class``), what ``--help`` says, and how it runs."""

    name: str
    config: str
    run: Callable[[Any, argparse.Namespace], int]  # (config, args) → exit status; prints the study's report
    help: str
    description: str
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)  # field → more flags
    extra: Callable[[argparse.ArgumentParser], None] | None = None  # options that are no config field
    progress: bool = True  # it draws progress bars: --quiet turns them off

    def config_class(self):
        module, _, name = self.config.partition(":")
        return getattr(import_module(module), name)

    def has_quick(self) -> bool:
        return callable(getattr(self.config_class(), "quick", None))

    def quick_config(self, **values):
        """The study's quick size with ``values`` over it."""
        cls = self.config_class()
        if "output_dir" in {f.name for f in dataclasses.fields(cls)}:
            return cls.quick(values.pop("output_dir", "OUTPUT_DIR"), **values)
        return cls.quick(**values)

    def options(self) -> list[ConfigOption]:
        return config_options(
            self.config_class(), quick=self.quick_config() if self.has_quick() else None, aliases=self.aliases
        )

    def build_config(self, args: argparse.Namespace):
        """The config the command line asks for: the defaults (or with ``--quick`` the quick size), the options
        given over them, and ``progress`` off with ``--quiet``."""
        cls = self.config_class()
        values = config_values(self.options(), args)
        if "progress" in {f.name for f in dataclasses.fields(cls)}:
            values["progress"] = not getattr(args, "quiet", False)
        return self.quick_config(**values) if getattr(args, "quick", False) else cls(**values)


def _result_line(summary: str, output_dir: str) -> str:
    return f"{summary}; result in {Path(output_dir) / 'result.json'}"


def _reward_toy(config, args) -> int:
    from studies.reward_toy import MAIN_VARIANT, format_ablation_table, format_main_table, run_toy_study, summary_line

    result = run_toy_study(config)
    if MAIN_VARIANT in result["variants"]:
        print("\n" + format_main_table(result))
    print("\n" + format_ablation_table(result) + "\n")
    summary = summary_line(result) if MAIN_VARIANT in result["variants"] else f"reward-toy: {result['seconds']:.0f} s"
    print(_result_line(summary, config.output_dir))
    return 0


def _toy_policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True, help="the policy folder (built once, then reused)")


def _toy_policy(config, args) -> int:
    from studies.toy_policy import TOY_POLICY_FILE, ensure_toy_base_policy

    folder = ensure_toy_base_policy(args.output_dir, config=config, progress=not args.quiet)
    record = json.loads((Path(folder) / TOY_POLICY_FILE).read_text())
    print(
        f"toy-policy: {record['config']['steps']} flow-matching steps on {record['config']['n_clips']} toy clips "
        f"in {record['seconds']:.0f} s, final loss {record['final_loss']:.4f}; policy in {folder}"
    )
    return 0


def _flow_toy(config, args) -> int:
    from studies.flow_toy import format_table, run_flow_toy_study, summary_line

    if config.seeds:
        from studies.flow_toy import format_seeds_table, run_flow_toy_seeds, seeds_summary_line

        summary = run_flow_toy_seeds(config)
        print("\n" + format_seeds_table(summary) + "\n")
        print(f"{seeds_summary_line(summary)}; result in {Path(config.output_dir) / 'seeds.json'}")
        return 0
    result = run_flow_toy_study(config)
    print("\n" + format_table(result) + "\n")
    print(_result_line(summary_line(result), config.output_dir))
    return 0


def _grpo_toy(config, args) -> int:
    from studies.grpo_toy import format_table, run_grpo_toy

    summary = run_grpo_toy(config)
    print("\n" + format_table(summary) + "\n")
    print(_result_line(f"grpo-toy: {len(summary['seeds'])} seeds", config.output_dir))
    return 0


def _guidance_toy(config, args) -> int:
    from studies.guidance_toy import format_table, run_guidance_study, summary_line

    result = run_guidance_study(config)
    print("\n" + format_table(result) + "\n")
    print(_result_line(summary_line(result), config.output_dir))
    return 0


def _active_learning(config, args) -> int:
    from studies.active_learning import format_table, run_active_learning_study

    result = run_active_learning_study(config)
    print("\n" + format_table(result) + "\n")
    summary = f"active-learning: {config.rounds} rounds × {config.repeats} repeats in {result['seconds']:.0f} s"
    print(_result_line(summary, config.output_dir))
    return 0


def _oracle_table(config, args) -> int:
    from studies.toyworld_tables import run_oracle_table

    run_oracle_table(config)
    return 0


def _annotator_agreement(config, args) -> int:
    from studies.toyworld_tables import run_annotator_agreement

    run_annotator_agreement(config)
    return 0


STUDIES = (
    Study(
        "reward-toy",
        "studies.reward_toy:ToyStudyConfig",
        _reward_toy,
        aliases={"n_prompts": ("--prompts",)},
        help="train VideoReward on simulated toy-world judgments; compare with the oracle ceiling",
        description="Render toy pairs, let simulated annotators judge them (majority of 3 per dimension), train the "
        "small-backbone VideoReward on training prompts and report accuracy with and without ties on "
        "held-out prompts next to the oracle's own accuracy on the same labels (the ceiling), plus the "
        "ablation (BT with ties, BT, regression, shared head) and a shuffled-label control.",
    ),
    Study(
        "toy-policy",
        "studies.toy_policy:ToyPolicyConfig",
        _toy_policy,
        extra=_toy_policy_options,
        help="pretrain the toy world's base flow policy (a tiny Wan) on toy clips with defects",
        description="Pretrain a tiny Wan (a small learned conv codec, 32x32, 9 frames) with plain flow matching on "
        "toy clips rendered with defects of random strength, so its samples vary in quality; a "
        "diffusers-format policy folder. An existing toy policy folder is reused if it was built with "
        "the same config, and refused otherwise.",
    ),
    Study(
        "flow-toy",
        "studies.flow_toy:FlowToyStudyConfig",
        _flow_toy,
        help="align the toy base policy with SFT / Flow-RWR / Flow-DPO; oracle win rates",
        description="Sample pairs from the toy base policy, judge them with simulated annotators (majority of 3), "
        "write a snapshot, train SFT, Flow-RWR, Flow-DPO (constant beta) and Flow-DPO (beta_t) LoRAs "
        "and report each aligned policy's oracle win rate against the base on held-out prompts x "
        "seeds, per dimension and overall, with 95% bootstrap intervals. With --seeds, the whole study "
        "(base policy included) runs once per seed in output-dir/seed-N and the table reports each seed and "
        "the mean with a 95% t-interval across seeds; finished seeds are reused, so more seeds extend it.",
    ),
    Study(
        "grpo-toy",
        "studies.grpo_toy:GRPOToyConfig",
        _grpo_toy,
        help="Flow-GRPO on a VideoReward vs Flow-DPO on the judged pairs, per flow-toy seed; reward hacking",
        description="For each seed of a finished `flow-toy --seeds` folder: train the small VideoReward on its "
        "snapshot of simulated judgments, run Flow-GRPO from its base policy rewarded by that model, and report "
        "the oracle's win rate against the base on the flow-toy study's held-out clips next to Flow-DPO's, with "
        "the reward model's and the oracle's scores of held-out samples at every checkpoint (reward hacking). "
        "Finished seeds are reused; mean and 95% t-interval across seeds.",
    ),
    Study(
        "guidance-toy",
        "studies.guidance_toy:GuidanceStudyConfig",
        _guidance_toy,
        help="Flow-NRG on the toy base policy: guided vs unguided oracle win rates",
        description="Train a latent reward on noisy latents and one on clean latents (the ablation) from a snapshot "
        "of toy base-policy pairs judged by simulated annotators, choose each one's guidance strength on "
        "the validation prompts, and report the oracle win rates of guided against unguided samples "
        "(same initial noise) on held-out prompts x seeds for weights VQ:MQ:TA = 0:0:1, 1:1:0, 1:1:1, "
        "with 95% bootstrap intervals. An interrupted study in --output-dir resumes.",
    ),
    Study(
        "active-learning",
        "studies.active_learning:ActiveLearningConfig",
        _active_learning,
        help="does labelling by reward uncertainty beat random order? a toy-world curve",
        description="Render a pool of toy pairs judged by simulated annotators and test pairs on held-out prompts "
        "labelled by the oracle; label the pool round by round in random order (the baseline), by the "
        "smallest |reward margin| of VideoReward retrained each round (uncertainty: the labelling "
        "queue's priority), by the entropy of its BT-with-ties predictions (entropy) or by the "
        "disagreement of a committee of models trained from other seeds (committee), and report the "
        "test accuracy against the judgments collected. An interrupted study in --output-dir resumes; "
        "a finished one is extended by more --repeats, --rounds or --strategies.",
    ),
    Study(
        "oracle-table",
        "studies.toyworld_tables:OracleTableConfig",
        _oracle_table,
        progress=False,
        help="correlate each toy-world oracle score with each defect strength",
        description="Render random toy clips with a defect of random kind and strength in every dimension and print "
        "the Spearman correlation of each oracle score (VQ, MQ, TA) with each defect's strength and "
        "with each dimension's severity: each score should fall with its own defects only.",
    ),
    Study(
        "annotator-agreement",
        "studies.toyworld_tables:AnnotatorAgreementConfig",
        _annotator_agreement,
        progress=False,
        help="agreement of each simulated annotator kind with the toy-world oracle",
        description="Let one simulated annotator of every kind (careful, noisy, spammer, left_biased) judge VQ, MQ "
        "and TA of toy pairs and print its agreement with the oracle: on clear judgments (against its "
        "configured rate), without ties, and its tie and left rates.",
    ),
)


def _add_study(commands, study: Study) -> None:
    parser = commands.add_parser(study.name, help=study.help, description=study.description)
    run = parser.add_argument_group("running the study")
    if study.extra:
        study.extra(run)
    if study.has_quick():
        quick_doc = " ".join((study.config_class().quick.__doc__ or "").split())
        run.add_argument(
            "--quick",
            action="store_true",
            help=f"the study's quick size: {quick_doc} Options given override it.".replace("%", "%%"),
        )
    if study.progress:
        run.add_argument("--quiet", action="store_true", help="no progress bars")
    cls = study.config_class()
    add_config_options(parser, study.options(), title=f"{cls.__name__} (the study's config; {cls.__module__})")
    parser.set_defaults(study=study)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m studies",
        description=DESCRIPTION,
        epilog="python -m studies STUDY --help lists a study's options.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="STUDY")
    for study in STUDIES:
        _add_study(commands, study)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    study: Study = args.study
    return study.run(study.build_config(args), args)
