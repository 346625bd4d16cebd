"""Scores (macro-F1 first), the metrics report and the confusion-matrix plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from erckit.atomic import atomic_files, write_text_atomic
from erckit.data import Dialogue, dialogue_groups, gold_labels, iter_utterances
from erckit.intervals import bootstrap, describe_interval, f1_from_counts
from erckit.labels import LABELS, display_names
from erckit.plots import plot_confusion


def macro_f1_of_indices(gold: np.ndarray, predicted: np.ndarray) -> float:
    """Macro-F1 over the seven labels of label indices, equal to `scores`' (sklearn's, zero_division=0), from one
    confusion matrix: for searches that score thousands of candidates, where sklearn's checks cost 4 ms a call."""
    n = len(LABELS)
    confusion = np.bincount(np.asarray(gold) * n + np.asarray(predicted), minlength=n * n).reshape(n, n).astype(float)
    tp = np.diag(confusion)
    return float(f1_from_counts(np.stack([tp, confusion.sum(axis=0) - tp, confusion.sum(axis=1) - tp], axis=-1))[0])


def scores(gold: Sequence[str], predicted: Sequence[str]) -> dict:
    """Macro-F1 (the headline), weighted-F1, accuracy and per-class precision/recall/F1/support."""
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=list(LABELS), zero_division=0
    )
    return {
        "macro_f1": float(f1_score(gold, predicted, labels=list(LABELS), average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(gold, predicted, labels=list(LABELS), average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(gold, predicted)),
        "n": len(gold),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(LABELS, precision, recall, f1, support, strict=True)
        },
    }


def agreement(gold: Sequence[str], predicted: Sequence[str]) -> dict:
    """Cohen's kappa (agreement beyond chance: 1 for the same labels, 0 for chance's) and the confusion counts
    (rows: gold, columns: predicted, both in LABELS order): what `evaluate` and `report` add to `scores`.
    Kappa is None where one label is all there is."""
    counts = confusion_matrix(gold, predicted, labels=list(LABELS))
    one_label = len(set(gold) | set(predicted)) < 2  # chance agrees fully: kappa is 0/0
    kappa = None if one_label else float(cohen_kappa_score(gold, predicted, labels=list(LABELS)))
    return {"cohen_kappa": kappa, "confusion": {"labels": list(LABELS), "counts": counts.tolist()}}


def aligned(gold: dict[str, str], predicted: dict[str, str], predictions_path: str | Path,
            gold_path: str | Path) -> tuple[list, list]:
    """Gold and predicted labels in gold order; every gold id must be predicted, and nothing else."""
    from erckit.predictions import check_ids

    check_ids(predicted.keys(), list(gold), predictions_path, gold_path)
    return [gold[i] for i in gold], [predicted[i] for i in gold]


def _interval_line(intervals: dict) -> str:
    if intervals["dialogues"] < 2:
        return "no interval: one dialogue (the bootstrap resamples whole dialogues)"
    return (f"bootstrap over {intervals['dialogues']} dialogues: macro-F1 "
            f"{describe_interval(intervals['macro_f1'], intervals['level'])}, weighted-F1 "
            f"{describe_interval(intervals['weighted_f1'], intervals['level'])}")


def format_scores(result: dict) -> str:
    """A short human-readable report."""
    intervals = result.get("intervals")
    lines = [
        (
            f"macro-F1 {result['macro_f1']:.4f} · weighted-F1 {result['weighted_f1']:.4f} · "
            f"accuracy {result['accuracy']:.4f} · n={result['n']}"
        ),
        *([_interval_line(intervals)] if intervals else []),
        f"{'label':<10}{'prec':>7}{'rec':>7}{'F1':>7}{'n':>7}",
    ]
    for label, row in result["per_class"].items():
        lines.append(f"{label:<10}{row['precision']:>7.3f}{row['recall']:>7.3f}{row['f1']:>7.3f}{row['support']:>7d}")
    if "confusion" in result:
        labels, counts = result["confusion"]["labels"], result["confusion"]["counts"]
        kappa = "undefined (one label throughout)" if result["cohen_kappa"] is None else f"{result['cohen_kappa']:.4f}"
        lines += [f"Cohen's kappa {kappa}; confusion (rows gold, columns predicted):",
                  f"{'':<10}" + "".join(f"{label[:8]:>9}" for label in labels)]
        lines += [f"{label:<10}" + "".join(f"{count:>9d}" for count in row) for label, row in zip(labels, counts, strict=True)]
    return "\n".join(lines)


REPORT_NAMES = ("metrics.json", "confusion.png")


def write_report(
    result: dict, gold: Sequence[str], predicted: Sequence[str], out: str | Path, *, names: dict[str, str] | None
) -> None:
    """metrics.json and confusion.png in `out`, both or neither (`atomic_files`)."""
    with atomic_files(out, REPORT_NAMES) as stage:
        write_text_atomic(stage / "metrics.json", json.dumps(result, indent=2) + "\n")
        plot_confusion(gold, predicted, stage / "confusion.png", names=names)


def evaluate_files(
    predictions_path: str | Path,
    gold_path: str | Path,
    out: str | Path | None = None,
    *,
    format: str | None = None,
    text_column: str | None = None,
    skip_unlabelled: bool = False,
    progress: bool = False,
) -> dict:
    """Score predictions.jsonl, or the labels of another labelled copy of the dialogue file (a second
    annotator's, read with the same `format` and `text_column`), against the labelled dialogue file; write the
    report when `out` is given. `skip_unlabelled`: utterances either file leaves unlabelled are left out (else
    refused), and counted in the result. `progress`: a bar of its steps."""
    from erckit.formats import holds_dialogues, read_dialogues
    from erckit.predictions import read_labels
    from erckit.progress import steps

    hint = "" if skip_unlabelled else " (--skip-unlabelled leaves out the unlabelled utterances)"
    with steps(4 + (out is not None), "evaluate", show=progress) as begin:
        begin(f"reading {Path(gold_path).name}")
        dialogues = read_dialogues(gold_path, format, text_column=text_column)
        gold = gold_labels(dialogues, gold_path, skip_unlabelled=skip_unlabelled, hint=hint)
        begin(f"reading {Path(predictions_path).name}")
        if holds_dialogues(predictions_path):  # a second annotator's copy: unlabelled there, left out here too
            other = read_dialogues(predictions_path, format, text_column=text_column)
            predicted = gold_labels(other, predictions_path, skip_unlabelled=skip_unlabelled, hint=hint)
            unlabelled_there = _ids(other) - set(predicted)
            gold = {i: label for i, label in gold.items() if i not in unlabelled_there}
        else:
            predicted = read_labels(predictions_path)
        left_out = _ids(dialogues) - set(gold)
        begin("scoring")
        gold_list, predicted_list = aligned(gold, {i: label for i, label in predicted.items() if i not in left_out},
                                            predictions_path, gold_path)
        result = scores(gold_list, predicted_list) | agreement(gold_list, predicted_list)
        if skip_unlabelled:
            result["unlabelled_skipped"] = len(left_out)
        begin("bootstrap intervals")
        groups = [group for group, u in zip(dialogue_groups(dialogues), (u for d in dialogues for u in d.utterances),
                                            strict=True) if u.id in gold]
        result["intervals"] = bootstrap(gold_list, predicted_list, groups)
        if out is not None:
            begin(f"writing {out}")
            names = display_names(u.text for d in dialogues for u in d.utterances)
            write_report(result, gold_list, predicted_list, out, names=names)
    return result


def _ids(dialogues: list[Dialogue]) -> set[str]:
    """The utterance ids of a dialogue file."""
    return {u.id for u in iter_utterances(dialogues)}

