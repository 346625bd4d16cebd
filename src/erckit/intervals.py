"""How sure a score is: bootstrap intervals of macro-F1 and weighted-F1 over dialogues.

Utterances of one dialogue are not independent, so the unit resampled is the dialogue: each resample draws
as many dialogues as the file holds, with replacement, and recomputes the scores from their summed per-class
counts. `paired_difference` resamples the same dialogues for two methods, which is what "A beats B" needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from erckit.labels import LABELS

RESAMPLES = 2000
LEVEL = 0.95


def dialogue_counts(gold: Sequence[str], predicted: Sequence[str], groups: Sequence[str]) -> np.ndarray:
    """[dialogues, 7, 3]: per dialogue and label, true positives, false positives and false negatives."""
    index = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    label = {name: i for i, name in enumerate(LABELS)}
    counts = np.zeros((len(index), len(LABELS), 3))
    for g, p, group in zip(gold, predicted, groups, strict=True):
        row = counts[index[group]]
        if g == p:
            row[label[g], 0] += 1
        else:
            row[label[p], 1] += 1
            row[label[g], 2] += 1
    return counts


def f1_from_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Macro-F1 and support-weighted F1 from summed counts [..., 7, 3] (a class absent and never predicted
    scores 0, as scikit-learn's zero_division=0)."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    support = tp + fn
    weighted = (f1 * support).sum(-1) / np.maximum(support.sum(-1), 1)
    return f1.mean(-1), weighted


def _resample_weights(dialogues: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, dialogues]: how often each dialogue is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(dialogues, np.full(dialogues, 1 / dialogues), size=resamples).astype(float)


def _interval(values: np.ndarray, level: float) -> list[float]:
    tail = (1 - level) / 2
    return [float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))]


def bootstrap(
    gold: Sequence[str], predicted: Sequence[str], groups: Sequence[str], *,
    resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0,
) -> dict:
    """Percentile intervals of macro-F1 and weighted-F1 over dialogues (`groups`: each utterance's dialogue)."""
    counts = dialogue_counts(gold, predicted, groups)
    weights = _resample_weights(len(counts), resamples, seed)
    macro, weighted = f1_from_counts(np.einsum("rd,dkc->rkc", weights, counts))
    return {"macro_f1": _interval(macro, level), "weighted_f1": _interval(weighted, level), "level": level,
            "resamples": resamples, "dialogues": len(counts)}


def paired_difference(
    gold: Sequence[str], first: Sequence[str], second: Sequence[str], groups: Sequence[str], *,
    resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0,
) -> dict:
    """Macro-F1 of `first` minus that of `second` on the same resampled dialogues: the difference, its
    interval, and the share of resamples in which `first` scores higher."""
    a, b = dialogue_counts(gold, first, groups), dialogue_counts(gold, second, groups)
    weights = _resample_weights(len(a), resamples, seed)
    difference = f1_from_counts(np.einsum("rd,dkc->rkc", weights, a))[0] - f1_from_counts(
        np.einsum("rd,dkc->rkc", weights, b))[0]
    point = f1_from_counts(a.sum(0))[0] - f1_from_counts(b.sum(0))[0]
    return {"difference": float(point), "interval": _interval(difference, level),
            "share_first_higher": float((difference > 0).mean()), "level": level, "resamples": resamples}


def describe_interval(interval: Sequence[float], level: float = LEVEL) -> str:
    """'95% CI 0.401–0.452'."""
    return f"{level:.0%} CI {interval[0]:.3f}–{interval[1]:.3f}"
