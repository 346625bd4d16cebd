"""The `erckit` command line: argparse subcommands that call the library; no logic of their own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from erckit import __version__
from erckit.data import DataError
from erckit.formats import FORMATS


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, help="input format (default: detected from content)")
    parser.add_argument("--text-column", help="CSV text column (default: Target if present, else Utterance)")


def _prepare(args: argparse.Namespace) -> int:
    from erckit.formats import read_dialogues
    from erckit.prepare import prepare
    from erckit.prompts import PromptConfig, detect_language

    files = {"train": args.train, "validation": args.validation, "test": args.test}
    dialogues = {
        split: read_dialogues(path, args.format, text_column=args.text_column)
        for split, path in files.items()
        if path is not None
    }
    if not dialogues:
        raise DataError("prepare", None, "give at least one of --train, --validation, --test")
    language = args.language or detect_language(next(iter(dialogues.values())))
    config = PromptConfig(language=language, window=args.window, placement=args.placement, variant=args.variant)
    counts = prepare(dialogues, Path(args.out), config, same_speaker_per_dialogue=args.same_speaker, seed=args.seed)
    for split, count in counts.items():
        print(f"{split}: {count} examples")
    print(f"wrote {args.out}/data_info.json (LLaMA-Factory: --dataset_dir {args.out} --dataset erc_train)")
    return 0


def _combine(args: argparse.Namespace) -> int:
    from erckit.combine import combine
    from erckit.predictions import read_llamafactory, read_predictions

    if args.prepared:
        predictions = read_llamafactory(args.predictions, args.prepared)
    else:
        predictions = read_predictions(args.predictions)
    count = combine(
        predictions, args.raw, args.out, predictions_path=args.predictions, format=args.format,
        text_column=args.text_column,
    )
    print(f"wrote {count} labels into {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from erckit.metrics import evaluate_files, format_scores

    result = evaluate_files(args.predictions, args.gold, args.out, format=args.format, text_column=args.text_column)
    print(format_scores(result))
    if args.out:
        print(f"wrote {args.out}/metrics.json and {args.out}/confusion.png")
    return 0


def _train(args: argparse.Namespace) -> int:
    from erckit.config import load_config
    from erckit.models import train

    config = load_config(args.config, args.overrides)
    info = train(config)
    summary = info.get("summary", {})
    if "best_macro_f1" in summary:
        print(f"best epoch {summary['best_epoch']}: validation macro-F1 {summary['best_macro_f1']:.4f}")
    print(f"model saved in {config.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from erckit.formats import read_dialogues
    from erckit.models import predict
    from erckit.predictions import write_predictions

    dialogues = read_dialogues(args.input, args.format, text_column=args.text_column)
    predictions = predict(args.model, dialogues)
    write_predictions(args.out, predictions)
    print(f"wrote {len(predictions)} predictions to {args.out}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    import json

    from erckit.atomic import write_text_atomic
    from erckit.calibration import calibrate
    from erckit.data import gold_labels
    from erckit.ensemble import probability_matrix
    from erckit.formats import read_dialogues
    from erckit.models import predict_probabilities, store_calibration
    from erckit.predictions import read_predictions

    dialogues = read_dialogues(args.validation, args.format, text_column=args.text_column)
    ids = list(gold_labels(dialogues, args.validation))
    if args.model:
        probs = predict_probabilities(args.model, dialogues)
    else:
        probs = probability_matrix(read_predictions(args.predictions), ids, args.predictions)
    offsets, report = calibrate(probs, dialogues)
    print(f"validation macro-F1 {report['macro_f1_before']:.4f} -> {report['macro_f1_after']:.4f} (cross-fitted, "
          f"{report['folds']} folds); weighted-F1 {report['weighted_f1_before']:.4f} -> {report['weighted_f1_after']:.4f}")
    print("offsets: " + ", ".join(f"{k} {v:+.1f}" for k, v in offsets.items()))
    if args.model:
        store_calibration(args.model, offsets, report)
        print(f"stored in {args.model}; erckit predict applies them")
    if args.out:
        write_text_atomic(args.out, json.dumps({"offsets": offsets, "report": report}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from erckit.ensemble import average, probability_matrix
    from erckit.labels import LABELS
    from erckit.predictions import from_probabilities, read_predictions, write_predictions

    runs = [(path, read_predictions(path)) for path in args.predictions]
    predictions = average(runs, args.weights)
    if args.offsets:
        offsets = json.loads(Path(args.offsets).read_text(encoding="utf-8"))["offsets"]
        ids = [p.id for p in predictions]
        probs = probability_matrix({p.id: p for p in predictions}, ids, args.out)
        predictions = from_probabilities(ids, probs, np.array([offsets[l] for l in LABELS]))
    write_predictions(args.out, predictions)
    print(f"wrote {len(predictions)} predictions averaged over {len(runs)} runs to {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from erckit.formats import read_dialogues
    from erckit.predictions import read_predictions
    from erckit.prompts import detect_language
    from erckit.report import write_error_report

    dialogues = read_dialogues(args.gold, args.format, text_column=args.text_column)
    path = write_error_report(
        read_predictions(args.predictions), dialogues, args.gold, args.out,
        predictions_path=args.predictions, chinese=detect_language(dialogues) == "zh",
    )
    print(f"wrote {path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from erckit.compare import compare, load_compare_config, table

    config = load_compare_config(args.config, args.overrides)
    results = compare(config)
    split = "test" if all("test" in r for r in results.values()) else "validation"
    print(table(results, split))
    print(f"wrote {config.out}/comparison.md, comparison.json and PNGs")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erckit", description="Emotion recognition in conversation with fine-tuned language models."
    )
    parser.add_argument("--version", action="version", version=f"erckit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("prepare", help="raw dialogues -> instruction data for LLM fine-tuning")
    p.add_argument("--train", help="training dialogues (annotation_train.json, CSV or JSON lines)")
    p.add_argument("--validation", help="validation dialogues")
    p.add_argument("--test", help="test dialogues (labels optional)")
    p.add_argument("--out", required=True, help="output folder")
    _add_format(p)
    p.add_argument("--window", type=int, default=10, help="utterances in the dialogue window (default 10)")
    p.add_argument("--placement", choices=("centered", "past"), default="centered",
                   help="centered: around the target, kept inside the dialogue (the design); past: target last")
    p.add_argument("--variant", choices=("emotion", "speaker"), default="emotion",
                   help="emotion (the design's prompt) or speaker (the question names the speaker)")
    p.add_argument("--language", choices=("zh", "en"), help="prompt template (default: detected from the text)")
    p.add_argument("--same-speaker", type=int, default=0, metavar="N",
                   help="add N same-speaker auxiliary questions per training dialogue (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_prepare)

    p = commands.add_parser("combine", help="write predicted labels back into the raw test file")
    p.add_argument("--predictions", required=True, help="predictions.jsonl (or generated_predictions.jsonl with --prepared)")
    p.add_argument("--prepared", help="the prepared data_test.json that recovers ids for LLaMA-Factory's output")
    p.add_argument("--raw", required=True, help="the raw test file")
    p.add_argument("--out", required=True, help="output file, e.g. test_label.json")
    _add_format(p)
    p.set_defaults(run=_combine)

    p = commands.add_parser("evaluate", help="score predictions against gold labels (macro-F1 first)")
    p.add_argument("--predictions", required=True, help="predictions.jsonl")
    p.add_argument("--gold", required=True, help="a labelled dialogue file")
    p.add_argument("--out", help="folder for metrics.json and confusion.png")
    _add_format(p)
    p.set_defaults(run=_evaluate)

    p = commands.add_parser("train", help="train a model from a YAML recipe (configs/*.yaml)")
    p.add_argument("--config", required=True, help="recipe, e.g. configs/bert_bigru.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe values, e.g. train.epochs=2")
    p.set_defaults(run=_train)

    p = commands.add_parser("predict", help="label every utterance of a dialogue file -> predictions.jsonl")
    p.add_argument("--model", required=True, help="a trained model folder")
    p.add_argument("--input", required=True, help="dialogue file to label")
    p.add_argument("--out", required=True, help="predictions.jsonl to write")
    _add_format(p)
    p.set_defaults(run=_predict)

    p = commands.add_parser("calibrate", help="fit per-class offsets that maximise validation macro-F1")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a model folder: its validation probabilities are computed, offsets stored in it")
    source.add_argument("--predictions", help="validation predictions.jsonl with probs (any method)")
    p.add_argument("--validation", required=True, help="the labelled validation file")
    p.add_argument("--out", help="also write the offsets and report to this JSON file")
    _add_format(p)
    p.set_defaults(run=_calibrate)

    p = commands.add_parser("ensemble", help="average the label probabilities of several predictions.jsonl files")
    p.add_argument("--predictions", nargs="+", required=True, help="two or more predictions.jsonl files with probs")
    p.add_argument("--weights", nargs="+", type=float, help="one weight per file (default: equal)")
    p.add_argument("--offsets", help="calibration JSON (from erckit calibrate --out) applied to the average")
    p.add_argument("--out", required=True, help="predictions.jsonl to write")
    p.set_defaults(run=_ensemble)

    p = commands.add_parser("report", help="error analysis: confusion, per-class F1, confused pairs in context")
    p.add_argument("--predictions", required=True, help="predictions.jsonl")
    p.add_argument("--gold", required=True, help="the labelled dialogue file")
    p.add_argument("--out", required=True, help="folder for report.md and its PNGs")
    _add_format(p)
    p.set_defaults(run=_report)

    p = commands.add_parser("compare", help="train and score several methods on one split: table + chart")
    p.add_argument("--config", required=True, help="e.g. configs/compare.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override top-level values, e.g. out=runs/x")
    p.set_defaults(run=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input ends with a one-line error and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (DataError, ValueError) as err:
        print(f"erckit {args.command}: error: {err}", file=sys.stderr)
        return 2
