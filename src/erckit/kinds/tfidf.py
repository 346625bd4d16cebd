"""`model: tfidf`: character n-gram TF-IDF + logistic regression (erckit.tfidf)."""

from __future__ import annotations

import time
from pathlib import Path

from erckit.config import RunConfig
from erckit.data import Dialogue, gold_labels
from erckit.kinds import DATA
from erckit.labels import LABELS
from erckit.metrics import scores
from erckit.predictor import Predictor, offsets_of

NAME = "tfidf"
READS = {"data": DATA, "tfidf": None, "train": ("seed",)}
ENGINES = False
BEST_SO_FAR = False
REPORTERS: tuple[str, ...] = ()  # trains in one step: nothing to track


def outputs() -> tuple[str, ...]:
    """The files its training writes at the top of a run folder."""
    from erckit.tfidf import VOCABULARY, WEIGHTS

    return VOCABULARY, WEIGHTS


def resumable(folder: Path) -> bool:
    """Trained in one step: nothing to resume."""
    return False


def check(config: RunConfig) -> None:
    """Nothing spans sections here: TfidfConfig checks itself."""


def train(config: RunConfig, train: list[Dialogue], validation: list[Dialogue] | None, out: Path) -> dict:
    from erckit.tfidf import TfidfClassifier

    started = time.perf_counter()
    model = TfidfClassifier.train(train, config.tfidf, config.train.seed)
    model.save(out)
    summary = {"train_seconds": time.perf_counter() - started}
    if validation:
        result = scores(list(gold_labels(validation, config.data.validation).values()),
                        [LABELS[i] for i in model.probabilities(validation).argmax(1)])
        summary |= {"val_macro_f1": result["macro_f1"], "val_weighted_f1": result["weighted_f1"]}
    return summary


def load(folder: Path, config: RunConfig, info: dict, trust_remote_code: bool) -> Predictor:
    from erckit.tfidf import TfidfClassifier

    model = TfidfClassifier.load(folder)
    return Predictor(folder, NAME, lambda dialogues, progress: model.probabilities(dialogues, progress=progress),
                     offsets_of(info))

