"""Figures: a headless matplotlib figure, saved atomically as PNG, and the shared training-curve plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from erckit.atomic import atomic_path


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
