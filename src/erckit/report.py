"""Error analysis: a markdown report with the confusion matrix, per-class F1 and the most confused
label pairs, each shown with example utterances in their dialogue context."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from erckit.atomic import write_text_atomic
from erckit.data import Dialogue, gold_labels
from erckit.labels import LABELS
from erckit.metrics import aligned, format_scores, plot_confusion, scores
from erckit.plots import new_figure, save_figure
from erckit.predictions import Prediction

OUTPUT_NAMES = ("report.md", "confusion.png", "per_class_f1.png")


def confused_pairs(gold: list[str], predicted: list[str], top: int) -> list[tuple[tuple[str, str], int]]:
    """(gold, predicted) pairs of the most frequent errors."""
    return Counter((g, p) for g, p in zip(gold, predicted, strict=True) if g != p).most_common(top)


def plot_per_class_f1(result: dict, path: Path) -> None:
    """A bar chart of per-class F1 with support in the labels."""
    rows = result["per_class"]
    fig, ax = new_figure((7, 3.5))
    ax.bar([f"{l}\n(n={rows[l]['support']})" for l in LABELS], [rows[l]["f1"] for l in LABELS], color="tab:blue")
    ax.axhline(result["macro_f1"], color="tab:red", linestyle="--", label=f"macro-F1 {result['macro_f1']:.3f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.01), frameon=False)  # above the bars
    save_figure(fig, path)


def _in_context(dialogue: Dialogue, index: int, before: int = 2) -> str:
    lines = []
    for j in range(max(0, index - before), index + 1):
        utt = dialogue.utterances[j]
        text = utt.text.replace("|", "\\|")
        lines.append(f"**{utt.speaker}: {text}**" if j == index else f"{utt.speaker}: {text}")
    return " ⏎ ".join(lines)


def write_error_report(
    predictions: dict[str, Prediction], dialogues: list[Dialogue], gold_path: str | Path, out: str | Path,
    *, predictions_path: str | Path = "predictions", top_pairs: int = 5, examples: int = 3, names: dict[str, str] | None = None,
) -> Path:
    """report.md, confusion.png and per_class_f1.png in `out`; returns the report's path."""
    out = Path(out)
    gold = gold_labels(dialogues, gold_path)
    gold_list, predicted_list = aligned(gold, {i: p.label for i, p in predictions.items()}, predictions_path)
    result = scores(gold_list, predicted_list)
    plot_confusion(gold_list, predicted_list, out / "confusion.png", names=names)
    plot_per_class_f1(result, out / "per_class_f1.png")
    where = {u.id: (d, i) for d in dialogues for i, u in enumerate(d.utterances)}
    lines = [
        f"# Error analysis: {Path(predictions_path).name} vs {Path(gold_path).name}", "",
        "```", format_scores(result), "```", "",
        "![confusion matrix](confusion.png)", "", "![per-class F1](per_class_f1.png)", "",
        "## Most confused label pairs", "",
    ]
    for (g, p), count in confused_pairs(gold_list, predicted_list, top_pairs):
        lines += [f"### gold {g} → predicted {p} ({count} utterances)", "", "| id | context (target in bold) |", "|---|---|"]
        wrong = [i for i in gold if gold[i] == g and predictions[i].label == p][:examples]
        lines += [f"| {i} | {_in_context(*where[i])} |" for i in wrong]
        lines.append("")
    write_text_atomic(out / "report.md", "\n".join(lines))
    return out / "report.md"
