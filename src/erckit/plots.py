"""Every figure erckit draws: a headless matplotlib figure saved atomically as PNG; the training curves, the
confusion matrix and per-class F1 of a report, and a comparison's bars; labels named alike in all
(`label_names`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

from erckit.atomic import atomic_path
from erckit.labels import LABELS


def new_figure(figsize: tuple[float, float]):
    """(figure, axes) on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    """Lay out, write the PNG atomically, and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


TRAINING_PLOT = "training.png"  # the training curve a run folder keeps beside its weights


def plot_training(
    path: str | Path,
    x_label: str,
    loss: Sequence[tuple[float, float]],
    f1: dict[str, Sequence[tuple[float, float]]],
) -> None:
    """Training loss (left axis) and validation F1 curves (right axis) against epochs or steps:
    whole-number ticks, the legend above the plot, clear of the curves."""
    from matplotlib.ticker import MaxNLocator

    fig, left = new_figure((7, 4))
    if loss:
        left.plot(*zip(*loss), ".-", color="tab:gray", label="train loss")
    left.set_xlabel(x_label)
    left.set_ylabel("train loss")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes = [left]
    curves = {name: points for name, points in f1.items() if points}
    if curves:
        right = left.twinx()
        for (name, points), color in zip(curves.items(), ("tab:blue", "tab:green"), strict=False):
            right.plot(*zip(*points), "o-", color=color, label=name)
        right.set_ylabel("validation F1")
        right.set_ylim(0, 1)  # a fixed scale: 0.06 → 0.08 must not look like a leap
        axes.append(right)
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]
    left.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=3, fontsize=8, frameon=False)
    save_figure(fig, path)


def _cjk_font() -> str | None:
    """Register the packaged Noto Sans CJK font with matplotlib; its family name, or None."""
    try:
        from matplotlib import font_manager
        from noto_cjk_sans_otc import FONT_PATH
    except ImportError:
        return None
    font_manager.fontManager.addfont(str(FONT_PATH))
    return font_manager.FontProperties(fname=str(FONT_PATH)).get_name()


def label_names(names: dict[str, str] | None) -> tuple[dict, list[str]]:
    """(matplotlib rc settings, tick names) for the 7 labels: with `names` (from `labels.display_names`) and
    the CJK font installed, each label in the data's script beside its English name; else English alone.
    Every plot of labels uses this, so a report's figures name the labels alike."""
    font = _cjk_font() if names else None
    if not font or names is None:
        return {}, list(LABELS)
    return {"font.family": [font, "DejaVu Sans"]}, [f"{names[label]} {label}" for label in LABELS]


def plot_confusion(
    gold: Sequence[str], predicted: Sequence[str], path: str | Path, *, names: dict[str, str] | None = None
) -> None:
    """A row-normalised confusion matrix (counts written in), saved as PNG; label names as `label_names`."""
    from matplotlib import rc_context

    rc, names = label_names(names)
    counts = confusion_matrix(gold, predicted, labels=list(LABELS))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    with rc_context(rc):
        fig, ax = new_figure((7.5, 6.5))
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(LABELS)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(LABELS)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        for i in range(len(LABELS)):
            for j in range(len(LABELS)):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
        macro = f1_score(gold, predicted, labels=list(LABELS), average="macro", zero_division=0)
        ax.set_title(f"Confusion (row-normalised colour, counts) · macro-F1 {macro:.3f}")
        fig.colorbar(image, ax=ax, fraction=0.046)
        save_figure(fig, path, dpi=120)


def plot_per_class_f1(result: dict, path: Path, names: dict[str, str] | None = None) -> None:
    """A bar chart of per-class F1, each bar's value written above it (a zero F1 reads "0.00", not a
    missing bar), support in the tick labels, label names as in the confusion matrix (`label_names`)."""
    from matplotlib import rc_context

    rows = result["per_class"]
    rc, ticks = label_names(names)
    values = [rows[label]["f1"] for label in LABELS]
    with rc_context(rc):
        fig, ax = new_figure((8, 4))
        bars = ax.bar([f"{tick}\n(n={rows[label]['support']})" for tick, label in zip(ticks, LABELS, strict=True)],
                      values, color="tab:blue")
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=2, fontsize=8,  # on a white ground: the
                     bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})  # macro-F1 line runs behind
        ax.axhline(result["macro_f1"], color="tab:red", linestyle="--", label=f"macro-F1 {result['macro_f1']:.3f}",
                   zorder=0.5)
        ax.set_ylim(0, 1)
        ax.set_ylabel("F1")
        ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.01), frameon=False)  # above the bars
        save_figure(fig, path)


def plot_comparison(results: dict[str, dict], split: str, path: Path) -> None:
    """Grouped bars: macro-F1, weighted-F1 and each class's F1 per method."""
    metrics = ["macro-F1", "weighted-F1", *LABELS]
    names = list(results)
    width = 0.8 / len(names)
    fig, ax = new_figure((10, 4))
    for k, name in enumerate(names):
        s = results[name][split]
        values = [s["macro_f1"], s["weighted_f1"], *(s["per_class"][l]["f1"] for l in LABELS)]
        ax.bar(np.arange(len(metrics)) + k * width, values, width, label=name)
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics)
    ax.set_ylabel(f"{split} F1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # beside the bars
    save_figure(fig, path)
