"""The `erckit` command line: argparse subcommands that call the library; no logic of their own."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import select
import shlex
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import NoReturn

from erckit import __version__
from erckit.atomic import check_folder, check_output, same_file
from erckit.data import DataError, Interrupted
from erckit.flags import check_recipe_values
from erckit.formats import FORMATS


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, help="input format (default: detected from the content)")
    parser.add_argument("--text-column", help="CSV text column (default: Target if present, else Utterance)")


def _prepare(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from erckit.config import ConfigError, PromptSettings
    from erckit.flags import given
    from erckit.formats import read_dialogues
    from erckit.prepare import OUTPUT_NAMES, prepare

    files = {"train": args.train, "validation": args.validation, "test": args.test}
    check_folder(args.out, files.values(), OUTPUT_NAMES)
    dialogues = {
        split: read_dialogues(path, args.format, text_column=args.text_column)
        for split, path in files.items()
        if path is not None
    }
    if not dialogues:
        raise DataError("prepare", None, "give at least one of --train, --validation, --test")
    config = _prompt_config(args, next(iter(dialogues.values())))
    try:  # the recipe's check: the same-speaker task exists in the window form only
        settings = PromptSettings(**(asdict(config) | given(args, PromptSettings)))
    except ConfigError as err:
        raise ConfigError(f"--same-speaker {args.same_speaker}: {err}") from None
    counts = prepare(dialogues, Path(args.out), config, same_speaker_per_dialogue=settings.same_speaker, seed=args.seed)
    for split, count in counts.items():
        print(f"{split}: {count} examples")
    print(f"wrote {Path(args.out) / 'data_info.json'} (LLaMA-Factory: --dataset_dir {args.out} --dataset erc_train)")
    return 0


def _combine(args: argparse.Namespace) -> int:
    from erckit.combine import check_suffix, combine
    from erckit.predictions import read_confidence, read_labels, read_llamafactory

    check_output(args.out, [args.raw, args.predictions, args.prepared])
    check_suffix(args.raw, args.out)
    if args.prepared and args.confidence:
        raise DataError("combine", None, "--confidence needs predictions.jsonl's probabilities; LLaMA-Factory's "
                                         "generated answers (--prepared) have none")
    confidence = None
    if args.prepared:
        labels = {i: p.label for i, p in read_llamafactory(args.predictions, args.prepared).items()}
    elif args.confidence:
        labels, confidence = read_confidence(args.predictions, progress=True)
    else:
        labels = read_labels(args.predictions, progress=True)
    count, replaced = combine(
        labels, args.raw, args.out, predictions_path=args.predictions, format=args.format,
        text_column=args.text_column, confidence=confidence, progress=True,
    )
    if replaced:
        print(f"note: {args.raw} was labelled already: {replaced} of the {count} labels written to {args.out} replace "
              "its own", file=sys.stderr)
    print(f"wrote {count} labels into {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from erckit.metrics import REPORT_NAMES, evaluate_files, format_scores

    check_folder(args.out, [args.predictions, args.gold], REPORT_NAMES)
    result = evaluate_files(args.predictions, args.gold, args.out, format=args.format, text_column=args.text_column,
                            skip_unlabelled=args.skip_unlabelled, progress=True)
    if skipped := result.get("unlabelled_skipped"):
        print(f"note: {skipped} unlabelled utterances are left out (--skip-unlabelled)", file=sys.stderr)
    print(format_scores(result))
    if args.out:
        print(f"wrote {args.out}/metrics.json and {args.out}/confusion.png")
    return 0


def _train(args: argparse.Namespace) -> int:
    from erckit.config import load_config
    from erckit.models import train

    if args.out and (given := next((o for o in args.overrides if o.startswith("out=")), None)):
        raise DataError("train", None, f"--out {args.out} and {given} both name the output folder: keep one")
    config = load_config(args.config, [*args.overrides, *([f"out={args.out}"] if args.out else [])])
    args.out = config.out  # the folder a write error names (main)
    info = train(config, args.config)
    if info.get("reused"):  # said so by train(); nothing was trained
        return 0
    summary = info.get("summary", {})
    if "val_macro_f1" in summary:
        print(f"validation macro-F1 {summary['val_macro_f1']:.4f}, weighted-F1 {summary['val_weighted_f1']:.4f}")
    if summary.get("best_macro_f1") is not None and "best_epoch" in summary:
        print(f"best epoch {summary['best_epoch']}: validation macro-F1 {summary['best_macro_f1']:.4f}")
    elif "best_epoch" in summary:
        print(f"no validation set: the last epoch ({summary['best_epoch']}) is kept")
    if summary.get("best_checkpoint"):
        print(f"best checkpoint {summary['best_checkpoint']}: validation macro-F1 {summary['best_macro_f1']:.4f}")
    print(f"model saved in {config.out}")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from erckit import recipes
    from erckit.config import ConfigError
    from erckit.formats.encoding import read_text

    if args.action == "ls":
        if args.name or args.dest:
            raise ConfigError("ls takes no further arguments")
        width = max(map(len, recipes.names()))
        for name in recipes.names():
            print(f"{name:<{width}}  {recipes.summary(name)}")
        return 0
    if args.action == "show":
        if not args.name or args.dest:
            raise ConfigError("show needs one recipe name: erckit recipes show bert_bigru")
        print(read_text(recipes.resolve(args.name), "utf-8", "settings")[0], end="")  # a shipped name or a file
        return 0
    if not (args.name and args.dest):
        raise ConfigError("cp needs a recipe name and a destination: erckit recipes cp tfidf my.yaml")
    written = recipes.copy(args.name, args.dest)
    print(f"wrote {written} (train with: erckit train --config {shlex.quote(str(written))} data.train=... "
          "data.validation=...)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from erckit.flags import apply, given
    from erckit.serve import ServeSettings, serve

    settings = apply(ServeSettings(), given(args, ServeSettings))
    serve(args.model, settings, best_so_far=args.best_so_far, trust_remote_code=args.trust_remote_code)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from erckit import kinds
    from erckit.formats import read_dialogues
    from erckit.models import check_best_so_far, load, model_files, model_info
    from erckit.predictions import moved_by_calibration, moved_note, write_predictions

    held = [*model_files(args.model), *model_files(args.adapter)]
    if args.llamafactory and same_file(args.llamafactory, args.out):
        raise DataError(args.out, None, "is also --llamafactory: give the two outputs different paths")
    check_output(args.out, [args.input, args.prepared, *held])
    check_output(args.llamafactory, [args.input, args.prepared, *held])
    dialogues = read_dialogues(args.input, args.format, text_column=args.text_column) if args.input else None
    info = model_info(args.model)
    kind = kinds.get(info["type"]) if info else None
    if args.best_so_far:
        check_best_so_far(args.model, info and info["type"])
    if kind is not None and not kind.ENGINES and (llm_flags := _given_llm_flags(args)):
        raise DataError(args.model, None, f"{llm_flags[0]} applies to LLMs, not to a {kind.NAME} model; remove it")
    if kind is None or kind.ENGINES:  # an LLM: an erckit run, a merged folder, any causal LM
        return _predict_llm(args, dialogues, info)
    if dialogues is None:
        raise DataError(args.model, None, f"a {kind.NAME} model labels dialogues: give --input, not --prepared")
    predictor = load(args.model, best_so_far=args.best_so_far, info=info, trust_remote_code=args.trust_remote_code)
    predictions = predictor.predict(dialogues, progress=True)
    write_predictions(args.out, predictions)
    if early := predictor.unfinished:
        score = "" if early["val_macro_f1"] is None else f", validation macro-F1 {early['val_macro_f1']:.4f}"
        print(f"unfinished run: predicted with its best epoch so far, epoch {early['epoch']}{score} "
              f"({early['epochs_run']} of {early['epochs']} epochs run)")
    print(f"wrote {len(predictions)} predictions to {args.out}{moved_note(moved_by_calibration(predictions))}")
    return 0


def _given_llm_flags(args: argparse.Namespace) -> list[str]:
    """The LLM flags of `erckit predict` given other values than their defaults."""
    return [f for dest, (f, default) in args.llm_flags.items() if getattr(args, dest) != default]


def _predict_llm(args: argparse.Namespace, dialogues, info: dict | None) -> int:
    """An erckit LLM run (with its calibration) or any causal LM given by path / hub id."""
    from erckit.flags import apply, flag, given
    from erckit.llm.engines import EngineOptions
    from erckit.llm.predict import UnparsedAnswers, predict_run, unparsed_path
    from erckit.llm.resume import partial_path
    from erckit.llm.settings import PredictSettings

    if (args.input is None) == (args.prepared is None):
        raise DataError("predict", None, "give exactly one of --input (raw dialogues) and --prepared (data_test.json)")
    for written in (partial_path(Path(args.out)), unparsed_path(Path(args.out))):  # its work files beside --out
        check_output(written, [args.input, args.prepared, args.llamafactory])
    flags = given(args, PredictSettings)
    settings = apply(PredictSettings(), flags)
    if unused := settings.not_applying(flags):
        raise DataError("predict", None, f"{flag(unused)} does not apply to --backend {settings.backend}; remove it")
    options = EngineOptions.of(settings, trust_remote_code=args.trust_remote_code)
    if args.adapter:
        run = _open_run(args.adapter, args, dialogues, base=args.model)
    else:
        run = _open_run(args.model, args, dialogues, info=info)
    try:
        summary = predict_run(run, args.out, prepared=args.prepared, dialogues=dialogues, backend=settings.backend,
                              options=options, batch_size=settings.batch_size, unparsed=settings.unparsed,
                              llamafactory=args.llamafactory)
    except UnparsedAnswers as err:
        print(f"erckit predict: error: {err}".replace("\n", " "), file=sys.stderr)
        return 2
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    print(summary.describe())
    return 0


def _open_run(weights: str, args: argparse.Namespace, dialogues, base: str | None = None, info: dict | None = None):
    """The LLM run behind `weights`, with the flags given (`erckit.llm.run.open_run`); notes on stderr."""
    from erckit.flags import given
    from erckit.llm.run import RunFlags, open_run
    from erckit.prompts import PromptConfig, detect_language

    flags = RunFlags(base, args.template, getattr(args, "max_length", None), given(args, PromptConfig))
    language = args.language or (detect_language(dialogues) if dialogues else "zh")
    run = open_run(weights, flags, language, info=info)
    _print_notes(run)
    return run


def _print_notes(run) -> None:
    """What the command line changed in the run's settings."""
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)


def _calibrate(args: argparse.Namespace) -> int:
    import json

    from erckit.atomic import write_text_atomic
    from erckit.cache import sha256
    from erckit.calibration import calibrate
    from erckit.data import gold_labels
    from erckit.ensemble import probability_matrix
    from erckit.formats import read_dialogues
    from erckit.models import load, model_files, read_model_info, store_calibration
    from erckit.predictions import read_predictions

    check_output(args.out, [args.predictions, args.validation, *model_files(args.model)])
    dialogues = read_dialogues(args.validation, args.format, text_column=args.text_column)
    ids = list(gold_labels(dialogues, args.validation))
    if len(dialogues) < 2:
        raise DataError(args.validation, None, "holds one dialogue: calibration is cross-fitted by dialogue and needs two or more")
    info = read_model_info(args.model) if args.model else None  # read once: scored, then offsets stored in it
    if args.model:
        predictor = load(args.model, info=info, trust_remote_code=args.trust_remote_code)
        probs = predictor.probabilities(dialogues, progress=True)
    else:
        probs = probability_matrix(read_predictions(args.predictions), ids, args.predictions)
    offsets, report = calibrate(probs, dialogues)
    report["fitted_on"] = {"file": str(args.validation), "sha256": sha256(Path(args.validation))}  # for compare
    print(f"validation macro-F1 {report['macro_f1_before']:.4f} -> {report['macro_f1_after']:.4f} (cross-fitted, "
          f"{report['folds']} folds); weighted-F1 {report['weighted_f1_before']:.4f} -> {report['weighted_f1_after']:.4f}")
    print(f"family {report['family']} (cross-fitted macro-F1 of each: "
          + ", ".join(f"{name} {value:.4f}" for name, value in report["candidates"].items()) + ")")
    print("offsets: " + ", ".join(f"{k} {v:+.2f}" for k, v in offsets.items()))
    if args.out:  # before the model folder is changed: a failed write leaves it as it was
        write_text_atomic(args.out, json.dumps({"offsets": offsets, "report": report}, indent=2) + "\n")
        print(f"wrote {args.out}")
    gain = report["macro_f1_after"] - report["macro_f1_before"]
    if args.model and ((gain > 0 and gain >= args.min_gain) or args.force):
        store_calibration(args.model, offsets, report, info)
        print(f"stored in {args.model}; erckit predict applies them")
    elif args.model:
        store_calibration(args.model, None, report, info)
        print(f"not stored (offsets stored before are removed): the cross-fitted validation gain {gain:+.4f} "
              f"is below --min-gain {args.min_gain}; --force stores anyway")
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from erckit.ensemble import average, calibrated_labels, probability_matrix, read_offsets, weight_shares
    from erckit.predictions import from_probabilities, read_predictions, write_predictions

    if args.models:
        return _fuse_models(args)
    if args.validation:
        raise DataError("ensemble", None, "--gold chooses the weights of --models; with --predictions give --weights")
    if args.trust_remote_code:
        raise DataError("ensemble", None, "--trust-remote-code applies to --models (predictions files run no code)")
    if len(args.predictions) < 2:
        raise DataError("ensemble", None, "give two or more --predictions files to average")
    check_output(args.out, [*args.predictions, args.offsets])
    weight_shares(args.weights, len(args.predictions))
    offsets = read_offsets(args.offsets) if args.offsets else None
    runs = [(path, read_predictions(path)) for path in args.predictions]
    for path, run in runs:
        if relabelled := calibrated_labels(run):
            print(f"note: {path}: {relabelled} labels differ from the argmax of their probabilities "
                  "(a calibrated model?); the ensemble averages the raw probabilities: calibrate it with --offsets",
                  file=sys.stderr)
    predictions = average(runs, args.weights)
    if offsets is not None:
        ids = [p.id for p in predictions]
        probs = probability_matrix({p.id: p for p in predictions}, ids, args.out)
        predictions = from_probabilities(ids, probs, offsets)
    write_predictions(args.out, predictions)
    print(f"wrote {len(predictions)} predictions averaged over {len(runs)} runs to {args.out}")
    return 0


def _fuse_models(args: argparse.Namespace) -> int:
    """erckit ensemble --models: a fusion model folder (`model: fusion`) that predict, serve and the API load."""
    from erckit.config import RunConfig, from_dict
    from erckit.ensemble import better_member
    from erckit.models import train

    if args.offsets:
        raise DataError("ensemble", None, "--offsets applies to --predictions; calibrate a fusion with erckit calibrate --model")
    if args.weights is None and args.validation is None:
        raise DataError("ensemble", None, "--models needs --weights (one per model) or --gold (a labelled file to choose "
                                          "them on)")
    recipe = {"model": "fusion", "out": args.out, "data": {"validation": args.validation},
              "fusion": {"members": args.models, "weights": args.weights, "trust_remote_code": args.trust_remote_code}}
    config = from_dict(RunConfig, recipe, "erckit ensemble")  # the fusion's check: members, their own code
    info = train(config)  # an output replacing an input (the validation file, a member's file) refused first
    summary = info["summary"]
    origin = (f"chosen on {args.validation}: macro-F1 {summary['val_macro_f1']:.4f}" if "val_macro_f1" in summary
              else "given")
    print(f"wrote the fusion {args.out} of {len(args.models)} models, weights "
          + ", ".join(f"{w:.2f}" for w in summary["weights"]) + f" ({origin}); label with erckit predict --model {args.out}")
    alone = summary.get("val_member_macro_f1")
    if (best := better_member(alone, summary.get("val_macro_f1"))) is not None:
        print(f"note: {args.models[best]} alone scores {alone[best]:.4f} on {args.validation}, above the fusion: "
              "it does not help there; use that model alone")
    return 0


def _count(text: str) -> int:
    """A command-line count: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, not {value}")
    return value


def _report(args: argparse.Namespace) -> int:
    from erckit.formats import read_dialogues
    from erckit.labels import display_names
    from erckit.predictions import read_predictions
    from erckit.report import OUTPUT_NAMES, write_error_report

    check_folder(args.out, [args.predictions, args.gold], OUTPUT_NAMES)
    dialogues = read_dialogues(args.gold, args.format, text_column=args.text_column)
    path = write_error_report(
        read_predictions(args.predictions), dialogues, args.gold, args.out,
        predictions_path=args.predictions, top_pairs=args.pairs, examples=args.examples,
        names=display_names(u.text for d in dialogues for u in d.utterances),
    )
    print(f"wrote {path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from erckit.compare import compare, load_compare_config, table

    config = load_compare_config(args.config, args.overrides, args.methods)
    results = compare(config, args.config, trust_remote_code=args.trust_remote_code)
    split = "test" if all("test" in r for r in results.values()) else "validation"
    print(f"{split}: {getattr(config, split)}")
    print(table(results, split))
    print(f"wrote {config.out}/comparison.md, comparison.json and PNGs")
    return 0


def _add_trust(parser) -> None:
    """--trust-remote-code: the only way a model folder's own Python code runs (erckit.remote_code)."""
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own Python code (auto_map), e.g. Baichuan2; refused without it")


def _add_prompt_options(parser: argparse.ArgumentParser, unset: str | None = None) -> None:
    """The prompt settings as flags (`erckit.prompts.PromptConfig`); `unset`: what an unset flag means
    (e.g. "the run's": the run record wins), else the declared default."""
    from erckit.flags import add_flags
    from erckit.prompts import PromptConfig

    add_flags(parser, PromptConfig, unset=unset)


def _prompt_config(args: argparse.Namespace, dialogues):
    from erckit.flags import given
    from erckit.llm.run import RunFlags, prompt_from_flags
    from erckit.prompts import PromptConfig, detect_language

    return prompt_from_flags(RunFlags(prompt=given(args, PromptConfig)), args.language or detect_language(dialogues))


def _select(args: argparse.Namespace) -> int:
    from erckit.data import gold_labels
    from erckit.formats import read_dialogue_file
    from erckit.llm.engines import EngineOptions
    from erckit.llm.resume import partial_path
    from erckit.llm.select import find_checkpoints, select_checkpoints
    from erckit.models import model_files

    inputs = [args.validation, *(f for run in args.run for f in model_files(run)), *model_files(args.base)]
    progress = partial_path(Path(args.out)) if args.out else None  # each checkpoint's scores, kept as they come
    check_output(args.out, inputs)
    check_output(progress, inputs)
    if missing := next((run for run in args.run if not Path(run).exists()), None):
        raise DataError(missing, None, "no such model folder")
    checkpoints = [c for run in args.run for c in find_checkpoints(Path(run))]
    if not checkpoints:
        raise DataError(args.run[0], None, "holds no checkpoint (checkpoint-N folders with an adapter or a model)")
    validation, digest = read_dialogue_file(args.validation, args.format, text_column=args.text_column)
    gold_labels(validation, args.validation)  # every utterance labelled: refused before a checkpoint is scored
    runs = [_open_run(str(c), args, validation, base=args.base) for c in checkpoints]
    settings = {"validation_sha256": digest, "text_column": args.text_column, "limit": args.limit}
    ranking = select_checkpoints(checkpoints, runs, validation, args.out, settings=settings,
                                 batch_size=args.batch_size, limit=args.limit,
                                 options=EngineOptions(trust_remote_code=args.trust_remote_code))
    for row in ranking:
        print(f"{row['macro_f1']:.4f} macro-F1  {row['weighted_f1']:.4f} weighted-F1  {row['checkpoint']}")
    print(f"best: {ranking[0]['checkpoint']}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from erckit.llm.loading import resolve_source
    from erckit.llm.merge import check_merge_out, merge_adapter
    from erckit.llm.run import RunFlags, open_run

    check_folder(args.out, [args.base, args.adapter], whole=True)
    check_merge_out(Path(args.out))
    resolved = open_run(args.adapter, RunFlags(base_model=args.base, template=args.template))
    _print_notes(resolved)
    if resolved.adapter is None:
        raise DataError(args.adapter, None, "is not a LoRA adapter folder (no adapter_config.json): nothing to merge")
    check_folder(args.out, [resolve_source(resolved.model), resolved.adapter], whole=True)  # a packaged base too
    out = merge_adapter(resolved.record, resolved.adapter, args.out,
                        trust_remote_code=args.trust_remote_code)
    print(f"merged {resolved.adapter} into {resolved.model}: {out} (loads with AutoModelForCausalLM)")
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's help with each option's default; a required option says so, and a help that names its
    own default ("default: ...", e.g. where an unset option means "the run's") is left as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required and action.nargs not in ("*", "?"):  # argparse marks a `*` positional required
            return f"{text} (required)"
        if "default:" in text or action.default is None:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse's parser (and each subcommand's) with a usage error on one line, pointing at --help;
    `commands`: the subcommands' parsers by name (an error found after parsing names its command)."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    """The `erckit` parser; subcommands in workflow order (recipes, prepare, train, predict, combine, evaluate, ...)."""
    parser = Parser(
        prog="erckit", description="Emotion recognition in conversation with fine-tuned language models.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"erckit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = commands.choices
    from erckit.config import PromptSettings
    from erckit.flags import add_flags
    from erckit.llm.run import RunFlags
    from erckit.llm.settings import PredictSettings
    from erckit.prompts import PromptConfig
    from erckit.serve.settings import ServeSettings

    def run_flags(parser, *names: str) -> None:
        """--template, --max-length: what they change in the run record (`erckit.llm.run.RunFlags`)."""
        add_flags(parser, RunFlags, unset="the run's", skip=tuple(f for f in ("base_model", "prompt", *RunFlags.FLAGS)
                                                                  if f not in names))

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    p = command("recipes", "list the shipped training recipes, show one's settings, or copy one out to edit")
    p.add_argument("action", nargs="?", choices=("ls", "show", "cp"), default="ls",
                   help="ls: list; show: print a recipe; cp: copy")
    p.add_argument("name", nargs="?", help="show, cp: the recipe (default: none, for ls)")
    p.add_argument("dest", nargs="?", help="cp: a file or folder to copy it to (default: none, for ls)")
    p.set_defaults(handler=_recipes)

    p = command("prepare", "raw dialogues -> instruction data for LLM fine-tuning")
    p.add_argument("--train", help="training dialogues (annotation_train.json, CSV or JSON lines) (default: none)")
    p.add_argument("--validation", help="validation dialogues (default: none)")
    p.add_argument("--test", help="test dialogues, labels optional (default: none; give at least one of the three)")
    p.add_argument("--out", required=True, help="output folder")
    _add_format(p)
    _add_prompt_options(p)
    add_flags(p, PromptSettings, skip=tuple(f.name for f in fields(PromptConfig)))  # --same-speaker
    p.add_argument("--seed", type=int, default=0, help="random seed of the same-speaker questions")
    p.set_defaults(handler=_prepare)

    p = command("train", "train a model from a YAML recipe (a shipped one by name, or a file)")
    p.add_argument("--config", required=True, help="a shipped recipe's name (erckit recipes), e.g. bert_bigru, or a file")
    p.add_argument("--out", help="output folder (the same as out=...; default: the recipe's)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override recipe values, e.g. data.train=annotation_train.json train.epochs=2 "
                        "(default: none, the recipe as written)")
    p.set_defaults(handler=_train)

    p = command("predict", "label every utterance of a dialogue file -> predictions.jsonl")
    p.add_argument("--model", required=True,
                   help="an erckit model folder (erckit train), or a causal LM: folder, hub id, packaged:gemma-3-270m")
    p.add_argument("--input", help="dialogue file to label, any format (default: none; LLMs: or give --prepared)")
    p.add_argument("--prepared", help="LLMs: a prepared data_test.json (erckit prepare) instead of --input "
                                      "(default: none)")
    p.add_argument("--out", required=True, help="predictions.jsonl to write (resumable: run again after a kill)")
    p.add_argument("--best-so-far", action="store_true",
                   help="an unfinished bert_bigru run: predict with its best epoch so far (the output names it)")
    _add_trust(p)
    _add_format(p)
    llm = p.add_argument_group("LLMs")
    llm.add_argument("--adapter", help="a LoRA adapter folder on top of --model (default: none, --model alone)")
    run_flags(llm, "template", "max_length")
    _add_prompt_options(llm, unset="the run's")
    add_flags(llm, PredictSettings)
    llm.add_argument("--llamafactory", help="also write LLaMA-Factory's generated_predictions.jsonl here (default: none)")
    llm_flags = {a.dest: (a.option_strings[0], a.default) for a in llm._group_actions}  # refused for other kinds
    p.set_defaults(handler=_predict, llm_flags=llm_flags)

    p = command("combine", "write predicted labels back into the raw test file")
    p.add_argument("--predictions", required=True, help="predictions.jsonl (or generated_predictions.jsonl with --prepared)")
    p.add_argument("--prepared", help="the prepared data_test.json that recovers ids for LLaMA-Factory's output "
                                      "(default: none, --predictions is erckit's)")
    p.add_argument("--raw", required=True, help="the raw test file")
    p.add_argument("--out", required=True, help="output file, e.g. test_label.json")
    p.add_argument("--confidence", action="store_true",
                   help="also write each label's probability (CSV: a Confidence column; JSON lines: confidence; M3ED: "
                        "EmoAnnotation.final_main_emo_confidence), to review the least sure labels first")
    _add_format(p)
    p.set_defaults(handler=_combine)

    p = command("evaluate", "score predictions (or a second annotator's labels) against gold labels (macro-F1 first)")
    p.add_argument("--predictions", required=True,
                   help="predictions.jsonl, or another labelled copy of the dialogue file (a second annotator's)")
    p.add_argument("--gold", required=True, help="the labelled copy of the dialogue file predicted")
    p.add_argument("--out", help="folder for metrics.json and confusion.png (default: none, scores printed only)")
    p.add_argument("--skip-unlabelled", action="store_true",
                   help="leave out the utterances either file leaves unlabelled (a sample labelled in part) instead of "
                        "refusing them")
    _add_format(p)
    p.set_defaults(handler=_evaluate)

    p = command("report", "error analysis: confusion, per-class F1, confused pairs in context")
    p.add_argument("--predictions", required=True, help="predictions.jsonl")
    p.add_argument("--gold", required=True, help="the labelled copy of the dialogue file predicted")
    p.add_argument("--out", required=True, help="folder for report.md and its PNGs")
    p.add_argument("--pairs", type=_count, default=5, help="the most frequent confused label pairs shown")
    p.add_argument("--examples", type=_count, default=3, help="utterances shown in context for each pair")
    _add_format(p)
    p.set_defaults(handler=_report)

    p = command("calibrate", "fit label offsets that maximise validation macro-F1 (stored only if they help)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a model folder: its validation probabilities are computed, offsets stored "
                                        "in it (default: none; give --model or --predictions)")
    source.add_argument("--predictions", help="validation predictions.jsonl with probs, any method "
                                              "(default: none; give --model or --predictions)")
    p.add_argument("--gold", "--validation", dest="validation", required=True, metavar="GOLD",
                   help="the labelled validation file (--validation: the old name)")
    p.add_argument("--out", help="also write the offsets and report to this JSON file (default: none)")
    p.add_argument("--min-gain", type=float, default=0.01,
                   help="store offsets in --model only when they raise cross-fitted macro-F1 by this much")
    p.add_argument("--force", action="store_true", help="store offsets in --model even without a cross-fitted gain")
    _add_trust(p)
    _add_format(p)
    p.set_defaults(handler=_calibrate)

    p = command("ensemble", "average the label probabilities of several predictions files, "
                            "or fuse model folders into one model")
    members = p.add_mutually_exclusive_group(required=True)
    members.add_argument("--predictions", nargs="+", help="two or more predictions.jsonl files with probs "
                                                          "(default: none; give --predictions or --models)")
    members.add_argument("--models", nargs="+",
                         help="two or more model folders: --out becomes a fusion model folder for erckit predict "
                              "(default: none; give --predictions or --models)")
    p.add_argument("--weights", nargs="+", type=float,
                   help="one weight per file or model (default: equal for files; chosen on --gold for models)")
    p.add_argument("--gold", "--validation", dest="validation", metavar="GOLD",
                   help="--models: the labelled file the weights are chosen on, by macro-F1 "
                        "(--validation: the old name; default: none, then give --weights)")
    p.add_argument("--offsets", help="calibration JSON (from erckit calibrate --out) applied to the average "
                                     "(default: none)")
    p.add_argument("--out", required=True, help="predictions.jsonl to write (--predictions) or the fusion folder (--models)")
    _add_trust(p)
    p.set_defaults(handler=_ensemble)

    p = command("compare", "train and score several methods on one split: table + chart")
    p.add_argument("--config", required=True, help="e.g. configs/compare.yaml")
    p.add_argument("--methods", nargs="+", metavar="NAME",
                   help="compare only these methods of the file (default: all; methods.NAME=null drops one)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override top-level values, e.g. out=runs/x (default: none, the file as written)")
    _add_trust(p)
    p.set_defaults(handler=_compare)

    p = command("select", "rank LLM checkpoints by validation macro-F1 (label scoring)")
    p.add_argument("--model", "--run", dest="run", nargs="+", required=True, metavar="MODEL",
                   help="run folders with checkpoint-N: erckit, LLaMA-Factory, ... (--run: the old name)")
    p.add_argument("--base", help="the base model of adapter checkpoints: folder, hub id, packaged:... "
                                  "(default: the run's)")
    p.add_argument("--gold", "--validation", dest="validation", required=True, metavar="GOLD",
                   help="the labelled validation file (--validation: the old name)")
    run_flags(p, "template", "max_length")
    _add_prompt_options(p, unset="the run's")
    p.add_argument("--limit", type=int, default=0, help="score only the first N validation utterances (0: all)")
    add_flags(p, PredictSettings, unset="the run's", skip=tuple(f.name for f in fields(PredictSettings)
                                                                if f.name != "batch_size"))
    _add_trust(p)
    p.add_argument("--out", help="write the ranking to this JSON file; a killed run then resumes, its checkpoints "
                                 "scored so far kept in <out>.partial (default: none, printed only)")
    _add_format(p)
    p.set_defaults(handler=_select)

    p = command("merge", "merge a LoRA adapter into its base and export a full model folder")
    p.add_argument("--model", "--adapter", dest="adapter", required=True, metavar="MODEL",
                   help="the LoRA run to merge: an erckit run, its best/, or a checkpoint (--adapter: the old name)")
    p.add_argument("--base", help="base model: folder, hub id or packaged:gemma-3-270m (default: the run's)")
    p.add_argument("--out", required=True, help="output folder")
    run_flags(p, "template")
    _add_trust(p)
    p.set_defaults(handler=_merge)

    p = command("serve", "label conversations over HTTP: a JSON API, live mode and a web page")
    p.add_argument("--model", required=True, help="an erckit model folder (erckit train)")
    add_flags(p, ServeSettings)
    p.add_argument("--best-so-far", action="store_true", help="an unfinished bert_bigru run: its best epoch so far")
    _add_trust(p)
    p.set_defaults(handler=_serve)
    return parser


WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)  # an OSError that arose writing outputs


def _is_override(word: str) -> bool:
    """A key=value word (`--flag=value` is a flag)."""
    return "=" in word and not word.startswith("-")


def _in_order(argv: list[str], words: list[str]) -> list[str]:
    """`words`, each one of argv's words, in the order they come in argv (a word given twice, twice)."""
    left = Counter(words)
    ordered = []
    for word in argv:
        if left[word] > 0:
            left[word] -= 1
            ordered.append(word)
    return ordered


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (`erckit recipes ls | head -1`)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's stand-in) or no poll here
        return False


@contextlib.contextmanager
def _sigterm_as_interrupt(terminated: list[int]) -> Iterator[None]:
    """SIGTERM (`kill`, a job scheduler, torchrun stopping its workers) raises KeyboardInterrupt as Ctrl-C does,
    so a terminated command also removes its lock and says what it kept; `terminated` records the signal. The
    earlier handler is restored afterwards (in the main thread only: signals are delivered there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    earlier = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, earlier)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input ends with a one-line error and exit code 2, Ctrl-C with one line saying what
    was kept (`Interrupted`, raised where that is known) and exit code 130, SIGTERM likewise with 143."""
    argv = sys.argv[1:] if argv is None else argv
    if not sys.stderr.isatty():  # a log or a pipe: the libraries' bars (loading weights) off, as erckit's are
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by huggingface_hub and transformers
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not (hasattr(args, "overrides") and all(_is_override(e) for e in extra)):
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if hasattr(args, "overrides"):
        # argparse keeps only the first run of key=value words as overrides: the later ones come back unrecognised,
        # and --methods (compare) takes those after it; all of them are overrides, applied in command-line order
        methods = getattr(args, "methods", None) or []
        args.overrides = _in_order(argv, [*args.overrides, *extra, *filter(_is_override, methods)])
        if methods:
            args.methods = [m for m in methods if not _is_override(m)]
            if not args.methods:
                parser.commands["compare"].error("--methods needs a method name of the file before any key=value")
    terminated: list[int] = []  # the signal, when a SIGTERM ended the command
    with _sigterm_as_interrupt(terminated):
        try:
            check_recipe_values(args)
            return args.handler(args)
        except BrokenPipeError as err:
            if not _stdout_reader_gone():  # another pipe (a worker's): an error as any other
                print(f"erckit {args.command}: error: {err}", file=sys.stderr)
                return 2
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # piped into e.g. `head`: stop quietly
            return 0
        except KeyboardInterrupt as err:  # Ctrl-C, or a SIGTERM (`kill`, a scheduler, a launcher) taken as one
            kept = str(err) if isinstance(err, Interrupted) else "nothing was kept half-written; run the same command again"
            print(f"erckit {args.command}: {'terminated' if terminated else 'interrupted'}: {kept}", file=sys.stderr)
            return 128 + (terminated[0] if terminated else signal.SIGINT)
        except (DataError, ValueError, OSError) as err:  # OSError: e.g. a model folder or hub id that is not there
            message = " ".join(str(err).splitlines()) or type(err).__name__
            model = getattr(args, "model", None) or getattr(args, "base", None)
            out = getattr(args, "out", None)
            if isinstance(err, OSError) and err.filename is None and err.errno in WRITE_ERRORS and out:
                message = f"{out}: cannot write: {message}"  # a full disk: the save functions name no file
            elif isinstance(err, OSError) and err.filename is None and model and model not in message:
                message = f"{model}: {message}"  # the transformers loaders often leave the model unnamed
            print(f"erckit {args.command}: error: {message}", file=sys.stderr)
            return 2
