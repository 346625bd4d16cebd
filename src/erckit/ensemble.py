"""Ensembling and calibrated re-labelling of predictions.jsonl files (the shared contract)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erckit.data import DataError
from erckit.formats.encoding import read_json
from erckit.labels import LABELS
from erckit.predictions import Prediction, from_probabilities


def probability_matrix(predictions: dict[str, Prediction], ids: list[str], path: str | Path) -> np.ndarray:
    """[len(ids), 7] probabilities in `ids` order; every prediction must carry probs."""
    rows = []
    for utt_id in ids:
        prediction = predictions.get(utt_id)
        if prediction is None:
            raise DataError(path, f"id {utt_id}", "missing from this predictions file")
        if prediction.probs is None:
            raise DataError(path, f"id {utt_id}", 'has no "probs" (label probabilities: averaging and calibrating '
                                                  'need them; erckit predict writes them)')
        rows.append([prediction.probs[label] for label in LABELS])
    return np.array(rows, dtype=float)


def mix(weights: Sequence[float], probs: Sequence[np.ndarray]) -> np.ndarray:
    """The weighted sum of same-shaped probability arrays (one weight per array)."""
    return sum(w * p for w, p in zip(weights, probs, strict=True))


def average(runs: list[tuple[str | Path, dict[str, Prediction]]], weights: list[float] | None = None) -> list[Prediction]:
    """The weighted mean of the runs' probabilities; all runs must predict exactly the same ids."""
    first_path, first = runs[0]
    ids = list(first)
    for path, predictions in runs[1:]:
        if set(predictions) != set(ids):
            raise DataError(path, None, f"predicts other ids than {first_path}")
    shares = weight_shares(weights, len(runs))
    return from_probabilities(ids, mix(shares, [probability_matrix(p, ids, path) for path, p in runs]))


def weights_problem(weights: list[float], members: int) -> str | None:
    """Why `weights` cannot weigh `members` fused models (one finite positive number each), or None."""
    if len(weights) != members:
        return f"{len(weights)} weights for {members} members"
    if not all(math.isfinite(w) and w > 0 for w in weights):
        return f"weights must be finite positive numbers, not {' '.join(map(str, weights))}"
    return None


def weight_shares(weights: list[float] | None, runs: int) -> list[float]:
    """The weights scaled to sum to 1 (equal when None); each must be finite and positive."""
    weights = weights or [1.0] * runs
    if problem := weights_problem(weights, runs):
        raise DataError("--weights", None, problem)
    largest = max(weights)
    shares = [w / largest for w in weights]  # scaled to at most 1 first: no overflow for 1e308
    return [s / math.fsum(shares) for s in shares]


def read_offsets(path: str | Path) -> np.ndarray:
    """The 7 label offsets (LABELS order) of a calibration JSON written by `erckit calibrate --out`."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "no such file")
    data = read_json(path, "settings")
    offsets = data.get("offsets") if isinstance(data, dict) else None
    if not isinstance(offsets, dict):
        raise DataError(path, None, 'expected an object with "offsets" (erckit calibrate --out writes one)')
    unknown = sorted(set(offsets) - set(LABELS))
    if unknown:
        raise DataError(path, "offsets", f"unknown label(s) {', '.join(unknown)}")
    missing = [name for name in LABELS if name not in offsets]
    if missing:
        raise DataError(path, "offsets", f"lacks {', '.join(missing)} (expected a number for each of the 7 labels)")
    for name in LABELS:
        value = offsets[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DataError(path, "offsets", f"{name} is {json.dumps(value)}, not a number")
    return np.array([float(offsets[name]) for name in LABELS])


def calibrated_labels(predictions: dict[str, Prediction]) -> int:
    """How many labels are not the argmax of their own probabilities (a calibrated model wrote them)."""
    return sum(
        1 for p in predictions.values()
        if p.probs is not None and p.label != max(LABELS, key=lambda label: p.probs[label])
    )


def weight_grid(members: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every way to share 1 between `members` in multiples of `step`, each member at least one step (more
    members than steps in 1: equal shares, the one way left)."""
    units = max(round(1 / step), members)

    def shares(left: int, slots: int) -> list[tuple[int, ...]]:
        if slots == 1:
            return [(left,)]
        return [(first, *rest) for first in range(1, left - slots + 2) for rest in shares(left - first, slots - 1)]

    return [tuple(u / units for u in combo) for combo in shares(units, members)]


def choose_weights(probs: list[np.ndarray], gold: list[str], *, step: float = 0.1) -> tuple[list[float], float]:
    """The weights (on `weight_grid`) whose averaged probabilities give the highest macro-F1 against `gold`
    (validation only), and that macro-F1; ties go to the most even weights."""
    from erckit.metrics import macro_f1_of_indices

    gold_indices = np.array([LABELS.index(label) for label in gold])
    best: tuple[float, float, tuple[float, ...]] | None = None
    for weights in weight_grid(len(probs), step):
        macro = macro_f1_of_indices(gold_indices, mix(weights, probs).argmax(1))
        key = (round(macro, 12), -float(np.ptp(weights)), weights)
        if best is None or key[:2] > best[:2]:
            best = key
    return list(best[2]), best[0]


@dataclass(frozen=True)
class FusionWeights:
    """A fusion's weights as shares summing to 1, and where they came from."""

    shares: list[float]
    origin: str  # "given", or "validation macro-F1" (chosen by `choose_weights`)
    validation_macro_f1: float | None = None  # of the chosen weights; None when given
    validation_weighted_f1: float | None = None
    member_macro_f1: list[float] | None = None  # each member's own validation macro-F1, beside the fusion's


def better_member(member_macro_f1: list[float] | None, fusion_macro_f1: float | None) -> int | None:
    """The member that alone scores above the fusion on validation (every member keeps a share of the grid, so
    a fusion can lose to one of them), or None: the fusion helps there, or its weights were given."""
    if not member_macro_f1 or fusion_macro_f1 is None or max(member_macro_f1) <= fusion_macro_f1:
        return None
    return max(range(len(member_macro_f1)), key=member_macro_f1.__getitem__)


def fusion_weights(given: list[float] | None, members: int,
                   validation: Callable[[], tuple[list[np.ndarray], list[str]]]) -> FusionWeights:
    """The given weights, else those chosen on validation: `validation()` (called only then) returns each
    member's validation probabilities and the gold labels in the same order."""
    if given is not None:
        return FusionWeights(weight_shares(given, members), "given")
    from erckit.metrics import scores

    probs, gold = validation()
    weights, macro = choose_weights(probs, gold)
    weighted = scores(gold, [LABELS[i] for i in mix(weights, probs).argmax(1)])["weighted_f1"]
    alone = [scores(gold, [LABELS[i] for i in p.argmax(1)])["macro_f1"] for p in probs]
    return FusionWeights(weight_shares(weights, members), "validation macro-F1", macro, weighted, alone)
