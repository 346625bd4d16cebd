"""Ensembling and calibrated re-labelling of predictions.jsonl files (the shared contract)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from erckit.data import DataError
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
            raise DataError(path, f"id {utt_id}", 'has no "probs" (ensembling needs label probabilities)')
        rows.append([prediction.probs[label] for label in LABELS])
    return np.array(rows, dtype=float)


def average(runs: list[tuple[str | Path, dict[str, Prediction]]], weights: list[float] | None = None) -> list[Prediction]:
    """The weighted mean of the runs' probabilities; all runs must predict exactly the same ids."""
    first_path, first = runs[0]
    ids = list(first)
    for path, predictions in runs[1:]:
        if set(predictions) != set(ids):
            raise DataError(path, None, f"predicts other ids than {first_path}")
    weights = weights or [1.0] * len(runs)
    if len(weights) != len(runs):
        raise DataError(first_path, None, f"{len(weights)} weights for {len(runs)} runs")
    stacked = sum(w * probability_matrix(p, ids, path) for w, (path, p) in zip(weights, runs, strict=True))
    return from_probabilities(ids, stacked / sum(weights))
