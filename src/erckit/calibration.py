"""Calibration for macro-F1: per-class logit offsets fitted on validation label probabilities.

Rare classes (Fear, Disgust) are under-predicted by models trained on skewed data; adding an offset
to each class's log-probability before the argmax trades a little accuracy on frequent classes for
recall on rare ones. Two families of offsets are fitted to maximise macro-F1:

- `offsets`: one free offset per class, by coordinate ascent;
- `prior`: -τ·log p̄, p̄ the model's mean predicted distribution, one parameter τ (logit adjustment;
  τ = 1 divides the predicted prior out). It overfits a small validation set less.

The gain reported on validation is cross-fitted (fit on the other folds, score the held-out one), and
`calibrate` keeps the family with the higher cross-fitted macro-F1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from erckit.data import Dialogue, dialogue_groups
from erckit.labels import LABELS
from erckit.metrics import macro_f1_of_indices, scores

GRID = np.round(np.arange(-3.0, 3.0001, 0.1), 2)
TAUS = np.round(np.arange(0.0, 3.0001, 0.1), 2)
REFERENCE = LABELS.index("Neutral")  # its offset is 0: offsets are defined up to a constant


def _macro_f1(gold: np.ndarray, log_probs: np.ndarray, offsets: np.ndarray) -> float:
    """Macro-F1 of argmax(log_probs + offsets) (called thousands of times by the fits)."""
    return macro_f1_of_indices(gold, np.argmax(log_probs + offsets, axis=1))


def fit_offsets(log_probs: np.ndarray, gold: np.ndarray, *, rounds: int = 3) -> np.ndarray:
    """Offsets [7] maximising macro-F1 of argmax(log_probs + offsets); Neutral's stays 0 (the reference).

    Ties prefer the offset closest to 0, so classes the data says nothing about are left alone.
    """
    offsets = np.zeros(len(LABELS))
    best = _macro_f1(gold, log_probs, offsets)
    for _ in range(rounds):
        improved = False
        for k in range(len(LABELS)):
            if k == REFERENCE:
                continue
            for value in sorted(GRID, key=abs):
                trial = offsets.copy()
                trial[k] = value
                score = _macro_f1(gold, log_probs, trial)
                if score > best + 1e-9:
                    best, offsets, improved = score, trial, True
        if not improved:
            break
    return offsets


def fit_prior_correction(log_probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Offsets -τ·log p̄ (Neutral's 0) with the τ in TAUS maximising macro-F1; ties prefer the smaller τ."""
    log_prior = np.log(np.clip(np.exp(log_probs).mean(axis=0), 1e-12, None))
    shape = -(log_prior - log_prior[REFERENCE])
    best_tau, best = 0.0, _macro_f1(gold, log_probs, np.zeros(len(LABELS)))
    for tau in TAUS[1:]:
        score = _macro_f1(gold, log_probs, tau * shape)
        if score > best + 1e-9:
            best_tau, best = tau, score
    return best_tau * shape


Fitter = Callable[[np.ndarray, np.ndarray], np.ndarray]
FAMILIES: dict[str, Fitter] = {"offsets": fit_offsets, "prior": fit_prior_correction}


def cross_fitted_gain(
    log_probs: np.ndarray, gold: np.ndarray, groups: np.ndarray, folds: int = 5, fitter: Fitter = fit_offsets
) -> dict:
    """Macro-F1 before and after calibration on validation, each fold scored with offsets fitted on the others.

    `groups` (e.g. dialogue ids) keep a dialogue's utterances in one fold, so there are at most as many
    folds as groups; the report's `folds` is the number used. Fewer than two groups is a ValueError.
    """
    unique = np.unique(groups)
    if len(unique) < 2:
        raise ValueError("cross-fitting needs two or more dialogues")
    folds = min(folds, len(unique))
    fold_of = {g: i % folds for i, g in enumerate(np.random.default_rng(0).permutation(unique))}
    fold = np.array([fold_of[g] for g in groups])
    calibrated = np.empty(len(gold), dtype=int)
    for f in range(folds):
        held = fold == f  # never empty: there are at most as many folds as groups
        offsets = fitter(log_probs[~held], gold[~held])
        calibrated[held] = np.argmax(log_probs[held] + offsets, axis=1)
    gold_labels = [LABELS[i] for i in gold]
    before = scores(gold_labels, [LABELS[i] for i in np.argmax(log_probs, axis=1)])
    after = scores(gold_labels, [LABELS[i] for i in calibrated])
    return {f"{metric}_{when}": result[metric] for metric in ("macro_f1", "weighted_f1")
            for when, result in (("before", before), ("after", after))} | {"folds": folds}


def as_dict(offsets: np.ndarray) -> dict[str, float]:
    """Offsets keyed by label (the form stored in erckit_model.json)."""
    return {label: round(float(v), 4) + 0.0 for label, v in zip(LABELS, offsets, strict=True)}  # no -0.0


def calibrate(probs: np.ndarray, dialogues: list[Dialogue]) -> tuple[dict[str, float], dict]:
    """Offsets fitted on all of a labelled validation set, and the cross-fitted before/after report.

    Each family is cross-fitted; the one with the higher cross-fitted macro-F1 is fitted on all of the
    validation set (`report["family"]`; `report["candidates"]` has every family's figure). Picking the
    better of two makes the reported gain slightly optimistic.
    """
    log_probs = np.log(np.clip(probs, 1e-12, 1.0))
    gold = np.array([LABELS.index(u.label) for d in dialogues for u in d.utterances])
    groups = np.array(dialogue_groups(dialogues))
    reports = {name: cross_fitted_gain(log_probs, gold, groups, fitter=fitter) for name, fitter in FAMILIES.items()}
    family = max(reports, key=lambda name: reports[name]["macro_f1_after"])  # first wins a tie: offsets
    candidates = {name: round(r["macro_f1_after"], 4) for name, r in reports.items()}
    report = reports[family] | {"family": family, "candidates": candidates}
    return as_dict(FAMILIES[family](log_probs, gold)), report
