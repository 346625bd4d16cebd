"""Error analysis: a markdown report with the confusion matrix, per-class F1 and the most confused
label pairs, each shown with example utterances in their dialogue context."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from erckit.atomic import atomic_files, write_text_atomic
from erckit.data import Dialogue, gold_labels
from erckit.metrics import agreement, aligned, format_scores, scores
from erckit.plots import plot_confusion, plot_per_class_f1
from erckit.predictions import Prediction

OUTPUT_NAMES = ("report.md", "confusion.png", "per_class_f1.png")


def confused_pairs(gold: list[str], predicted: list[str], top: int | None = None) -> list[tuple[tuple[str, str], int]]:
    """(gold, predicted) pairs of the most frequent errors (all of them, most frequent first, without `top`)."""
    return Counter((g, p) for g, p in zip(gold, predicted, strict=True) if g != p).most_common(top)


def utterances(count: int) -> str:
    """'1 utterance', '2 utterances'."""
    return f"{count} utterance{'' if count == 1 else 's'}"


def _cell(text: str) -> str:
    """`text` safe inside one markdown table cell: its pipes escaped, its line breaks shown as ⏎."""
    return " ⏎ ".join(text.replace("|", "\\|").splitlines())


def _in_context(dialogue: Dialogue, index: int, before: int = 2) -> str:
    """The utterance at `index` in bold after up to `before` earlier turns, as one table cell."""
    lines = []
    for j in range(max(0, index - before), index + 1):
        utt = dialogue.utterances[j]
        line = f"{_cell(utt.speaker)}: {_cell(utt.text)}"
        lines.append(f"**{line}**" if j == index else line)
    return " ⏎ ".join(lines)


def write_error_report(
    predictions: dict[str, Prediction], dialogues: list[Dialogue], gold_path: str | Path, out: str | Path,
    *, top_pairs: int, examples: int, predictions_path: str | Path = "predictions", names: dict[str, str] | None = None,
) -> Path:
    """report.md, confusion.png and per_class_f1.png in `out`, all or none (`atomic_files`); returns the
    report's path."""
    with atomic_files(out, OUTPUT_NAMES) as stage:
        _write_error_report(predictions, dialogues, gold_path, stage, predictions_path, top_pairs, examples, names)
    return Path(out) / "report.md"


def _write_error_report(
    predictions: dict[str, Prediction], dialogues: list[Dialogue], gold_path: str | Path, out: Path,
    predictions_path: str | Path, top_pairs: int, examples: int, names: dict[str, str] | None,
) -> None:
    gold = gold_labels(dialogues, gold_path)
    gold_list, predicted_list = aligned(gold, {i: p.label for i, p in predictions.items()}, predictions_path, gold_path)
    result = scores(gold_list, predicted_list) | agreement(gold_list, predicted_list)
    plot_confusion(gold_list, predicted_list, out / "confusion.png", names=names)
    plot_per_class_f1(result, out / "per_class_f1.png", names)
    where = {u.id: (d, i) for d in dialogues for i, u in enumerate(d.utterances)}
    lines = [
        f"# Error analysis: {Path(predictions_path).name} vs {Path(gold_path).name}", "",
        "```", format_scores(result), "```", "",
        "![confusion matrix](confusion.png)", "", "![per-class F1](per_class_f1.png)", "",
    ]
    every_pair = confused_pairs(gold_list, predicted_list)
    pairs = every_pair[:top_pairs]
    more = f" (the {top_pairs} most frequent of {len(every_pair)}; --pairs N for more)" if len(every_pair) > top_pairs else ""
    lines += [f"## Most confused label pairs{more}", ""]
    if gold_list == predicted_list:
        lines += ["None: every utterance was predicted with its gold label.", ""]
    for (g, p), count in pairs:
        shown = f"; the first {examples} shown, --examples N for more" if count > examples else ""
        lines += [f"### gold {g} → predicted {p} ({utterances(count)}{shown})", "", "| id | context (target in bold) |",
                  "|---|---|"]
        wrong = [i for i in gold if gold[i] == g and predictions[i].label == p][:examples]
        lines += [f"| {_cell(i)} | {_in_context(*where[i])} |" for i in wrong]
        lines.append("")
    write_text_atomic(out / "report.md", "\n".join(lines))
