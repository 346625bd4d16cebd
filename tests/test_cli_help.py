"""The CLI speaks one language: every subcommand's --help shows help and a default for every option,
subcommands come in workflow order, and the old flag names still parse as aliases of the one name."""

from __future__ import annotations

import argparse
import re

import pytest

from erckit.cli import build_parser, main

WORKFLOW = ["recipes", "prepare", "train", "predict", "combine", "evaluate", "report", "calibrate", "ensemble",
            "compare", "select", "merge", "serve"]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def _entries(text: str) -> dict[str, str]:
    """The help of each argument in a --help text, keyed by its first name, wrapped lines joined."""
    entries: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        head = re.match(r"^  (\S+)", line)
        if head:
            name = head.group(1).rstrip(",")
            entries[name] = line[2 + len(head.group(1)):]
        elif name and line.startswith("   "):
            entries[name] += " " + line.strip()
        else:
            name = None
    return {key: " ".join(value.split()) for key, value in entries.items()}


def test_subcommands_in_workflow_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(_subparsers()) == WORKFLOW
    text = _help([], capsys)
    assert [name for name in WORKFLOW if f"    {name}" in text] == WORKFLOW
    assert sorted(WORKFLOW, key=lambda name: text.index(f"    {name}")) == WORKFLOW


@pytest.mark.parametrize("command", WORKFLOW)
def test_every_option_has_help_and_default(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    entries = _entries(_help([command], capsys))
    arguments = [a for a in _subparsers()[command]._actions if not isinstance(a, argparse._HelpAction)]
    for action in arguments:
        name = action.option_strings[0] if action.option_strings else _positional(action)
        shown = entries[name]
        assert action.help and action.help.split()[0] in shown, f"erckit {command} {name}: no help"
        assert "(required)" in shown or "default:" in shown, f"erckit {command} {name}: no default shown: {shown!r}"
        assert "default: None" not in shown, f"erckit {command} {name}: {shown!r}"


def _positional(action: argparse.Action) -> str:
    """How --help names a positional argument: its metavar, its choices, or its name."""
    if action.metavar:
        return str(action.metavar)
    return "{" + ",".join(action.choices) + "}" if action.choices else action.dest


@pytest.mark.parametrize("command", ["predict", "select"])
def test_prompt_flags_say_the_run_wins(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    entries = _entries(_help([command], capsys))
    for name in ("--template", "--language", "--window", "--placement", "--form", "--max-length"):
        assert entries[name].endswith("(default: the run's)"), name


def test_prepare_shows_the_declared_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    entries = _entries(_help(["prepare"], capsys))
    assert entries["--window"].endswith("(default: 10)")
    assert entries["--language"].endswith("(default: detected from the text)")


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_select_model_is_run() -> None:
    old = _parse(["select", "--run", "r1", "r2", "--validation", "v.json"])
    new = _parse(["select", "--model", "r1", "r2", "--gold", "v.json"])
    assert vars(old) == vars(new) and new.run == ["r1", "r2"] and new.validation == "v.json"


def test_calibrate_gold_is_validation() -> None:
    old = _parse(["calibrate", "--model", "m", "--validation", "v.json"])
    new = _parse(["calibrate", "--model", "m", "--gold", "v.json"])
    assert vars(old) == vars(new) and new.validation == "v.json"


def test_ensemble_gold_is_validation() -> None:
    old = _parse(["ensemble", "--models", "a", "b", "--validation", "v.json", "--out", "f"])
    new = _parse(["ensemble", "--models", "a", "b", "--gold", "v.json", "--out", "f"])
    assert vars(old) == vars(new) and new.validation == "v.json"


def test_merge_model_is_adapter() -> None:
    old = _parse(["merge", "--adapter", "runs/llm", "--out", "m"])
    new = _parse(["merge", "--model", "runs/llm", "--out", "m"])
    assert vars(old) == vars(new) and new.adapter == "runs/llm"


def test_predict_adapter_keeps_its_meaning() -> None:
    args = _parse(["predict", "--model", "base", "--adapter", "lora", "--input", "x.json", "--out", "p.jsonl"])
    assert (args.model, args.adapter) == ("base", "lora")


@pytest.mark.parametrize("argv", [["--dtype", "half"], ["--template", "llama9"]])
def test_fixed_values_are_choices(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        _parse(["predict", "--model", "m", "--input", "x.json", "--out", "p.jsonl", *argv])
    assert done.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "line"), [
    (["predict", "--model", "m", "--input", "f"],
     "erckit predict: error: the following arguments are required: --out (see erckit predict --help)"),
    (["predict", "--model", "m", "--input", "f", "--out", "p.jsonl", "--foo"],  # the subcommand's, not erckit's
     "erckit predict: error: unrecognized arguments: --foo (see erckit predict --help)"),
    (["evaluate", "--predictions"], ("erckit evaluate: error: argument --predictions: expected one argument "
                                    "(see erckit evaluate --help)")),
    (["nothing"], "erckit: error: argument COMMAND: invalid choice: 'nothing'"),
])
def test_a_usage_error_is_one_line_naming_the_command(args, line, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith(line), err


def test_optional_key_values_are_not_called_required(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    described = re.search(r"\n  key=value +(.*?)\n\n", help_text, re.DOTALL)[1]  # the positional's paragraph
    assert "the recipe as written" in described and "(required)" not in described
