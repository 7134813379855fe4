"""``python -m studies``: eight studies whose options are generated from their config dataclasses; and the
product's command line (``python -m alignment``) without them."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from studies.cli import STUDIES, build_parser, config_options, main
from studies.flow_toy import FlowToyStudyConfig

pytestmark = pytest.mark.study

ROOT = Path(__file__).resolve().parents[2]
EIGHT = (
    "reward-toy",
    "toy-policy",
    "flow-toy",
    "grpo-toy",
    "guidance-toy",
    "active-learning",
    "oracle-table",
    "annotator-agreement",
)
OLD_STUDY_COMMANDS = ("reward-toy-study", "toy-policy", "flow-toy-study", "guidance-toy-study", "active-learning-study")


def _help(*module_and_args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", *module_and_args, "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_alignment_help_lists_only_the_product_commands():
    from alignment.cli import build_parser as alignment_parser

    text = _help("alignment")
    assert "study" not in text.lower() and "toy" not in text.lower()
    commands = _subcommands(alignment_parser())
    assert {
        "reward-train",
        "reward-eval",
        "reward-score",
        "sft",
        "flow-dpo",
        "flow-rwr",
        "latent-reward-train",
        "generate",
        "sample-plan",
    } <= set(commands)
    assert not set(OLD_STUDY_COMMANDS) & set(commands)
    assert all("study" not in (sub.description or "").lower() for sub in commands.values())


def test_studies_help_lists_the_eight_studies():
    text = _help("studies")
    assert all(f"    {name} " in text or f"    {name}\n" in text for name in EIGHT), text
    assert tuple(_subcommands(build_parser())) == EIGHT
    for name, sub in _subcommands(build_parser()).items():
        assert sub.description and len(sub.description) > 80, name  # every study says what it does
        assert "--help" in sub.format_help()


def test_flow_toy_help_shows_every_field_with_its_comment_and_default():
    text = " ".join(_help("studies", "flow-toy").split())  # unwrapped
    for option in ("--output-dir", "--quick", "--quiet", "--base-policy", "--seed", "--steps", "--beta", "--methods"):
        assert option in text
    assert "Flow-DPO's beta (both schedules) (default: 500.0)" in text
    assert "training steps of every method (default: 200; --quick: 40)" in text
    assert "--quick-policy, --no-quick-policy" in text


def test_generated_options_match_the_dataclass_fields():
    options = {option.name: option for option in config_options(FlowToyStudyConfig)}
    fields = {field.name: field for field in dataclasses.fields(FlowToyStudyConfig)}
    assert list(options) == [name for name in fields if name != "progress"]  # --quiet sets progress
    for name, option in options.items():
        assert option.flags[0] == "--" + name.replace("_", "-")
    assert options["output_dir"].kwargs["required"] is True  # no default: a required option
    assert options["steps"].kwargs["type"]("7") == 7 and "(default: 200)" in options["steps"].kwargs["help"]
    assert options["beta"].kwargs["type"]("0.5") == 0.5
    assert options["train_prompts"].kwargs["type"]("none") is None  # an optional int also takes none
    assert options["quick_policy"].kwargs["action"] is argparse.BooleanOptionalAction
    assert options["methods"].kwargs["nargs"] == "+"
    assert tuple(options["methods"].kwargs["choices"]) == ("sft", "flow-rwr", "flow-dpo", "flow-dpo-time")
    assert options["annotator_mix"].kwargs["metavar"] == "JSON"
    assert options["beta"].kwargs["help"].startswith("Flow-DPO's beta (both schedules)")  # the field's comment

    # every study's generated options are its config's fields
    for study in STUDIES:
        parser = _subcommands(build_parser())[study.name]
        config_fields = {f.name for f in dataclasses.fields(study.config_class()) if f.name != "progress"}
        group = next(g for g in parser._action_groups if g.title.startswith(study.config_class().__name__))
        assert {action.dest for action in group._group_actions} == config_fields, study.name


def _config(argv: list[str]):
    args = build_parser().parse_args(argv)
    return args.study.build_config(args)


def test_the_command_line_builds_the_config_it_names():
    config = _config(
        [
            "flow-toy",
            "--output-dir",
            "out",
            "--methods",
            "sft",
            "flow-dpo",
            "--steps",
            "5",
            "--train-prompts",
            "none",
            "--annotator-mix",
            '{"careful": 1}',
            "--quick-policy",
            "--quiet",
        ]
    )
    assert config == FlowToyStudyConfig(
        output_dir="out",
        methods=("sft", "flow-dpo"),
        steps=5,
        train_prompts=None,
        annotator_mix={"careful": 1},
        quick_policy=True,
        progress=False,
    )
    # --quick: the quick size, the options given over it
    assert _config(["flow-toy", "--output-dir", "out", "--quick", "--steps", "3"]) == FlowToyStudyConfig.quick(
        "out", steps=3
    )
    assert _config(["flow-toy", "--output-dir", "out", "--quick", "--train-prompts", "none"]).train_prompts is None
    from studies.reward_toy import ToyStudyConfig

    assert _config(
        [
            "reward-toy",
            "--output-dir",
            "o",
            "--prompts",
            "40",
            "--tubelet",
            "1",
            "4",
            "4",
            "--no-keep-best",
            "--best-by",
            "loss",
        ]
    ) == ToyStudyConfig(output_dir="o", n_prompts=40, tubelet=(1, 4, 4), keep_best=False, best_by="loss")
    from studies.toy_policy import ToyPolicyConfig

    assert _config(["toy-policy", "--output-dir", "p", "--quick", "--steps", "10"]) == ToyPolicyConfig.quick(steps=10)


@pytest.mark.parametrize(
    "argv",
    [
        ["flow-toy", "--output-dir", "out", "--methods", "dpo"],  # not a method
        ["guidance-toy", "--output-dir", "out", "--readout", "max"],  # not a readout
        ["reward-toy", "--output-dir", "out", "--tubelet", "1", "8"],  # a tubelet has three sides
        ["active-learning", "--quick"],  # --output-dir is required
        ["oracle-table", "--clips", "many"],
    ],
)
def test_bad_options_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err


def test_the_studies_parser_imports_no_torch():
    probe = "import sys, studies.cli; studies.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_product_never_imports_the_studies():
    offenders = []
    for package in ("alignment", "workers", "annotate", "config"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )
                offenders += [
                    f"{path.relative_to(ROOT)}:{node.lineno}"
                    for name in names
                    if name == "studies" or name.startswith("studies.")
                ]
    assert offenders == []
