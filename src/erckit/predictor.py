"""A trained model loaded once: label probabilities and predictions for any number of dialogues."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erckit.data import Dialogue, iter_utterances
from erckit.labels import LABELS
from erckit.predictions import Prediction, from_probabilities


@dataclass
class Predictor:
    """A trained model folder loaded once: labels any number of dialogues without reloading its weights."""

    folder: Path
    kind: str
    score: Callable[[list[Dialogue], bool], np.ndarray]  # (dialogues, progress) -> [utterances, 7]
    offsets: np.ndarray | None  # calibration stored in the folder (erckit calibrate), in LABELS order
    unfinished: dict | None = None  # an unfinished run loaded with best_so_far: the epoch it predicts with
    score_last: Callable[[list[Dialogue]], np.ndarray] | None = None  # each dialogue's last turn only, when
    # the kind can score it for less than the whole dialogue (an LLM's window form: one prompt, not one a turn)

    def probabilities(self, dialogues: list[Dialogue], *, progress: bool = False) -> np.ndarray:
        """[utterances, 7] label probabilities in file order (before calibration)."""
        if not dialogues:
            return np.zeros((0, len(LABELS)))
        return self.score(dialogues, progress)

    def predict(self, dialogues: list[Dialogue], *, progress: bool = False) -> list[Prediction]:
        """One prediction per utterance, calibration offsets applied if the model has them."""
        probs = self.probabilities(dialogues, progress=progress)
        return from_probabilities([u.id for u in iter_utterances(dialogues)], probs, self.offsets)

    def last_probabilities(self, dialogues: list[Dialogue]) -> np.ndarray:
        """[dialogues, 7]: each dialogue's last utterance, as `probabilities` gives it (live labelling)."""
        if not dialogues:
            return np.zeros((0, len(LABELS)))
        if self.score_last is not None:
            return self.score_last(dialogues)
        return self.score(dialogues, False)[np.cumsum([len(d) for d in dialogues]) - 1]

    def predict_last(self, dialogues: list[Dialogue]) -> list[Prediction]:
        """Each dialogue's last utterance's prediction, calibration applied (what `predict` gives it)."""
        return from_probabilities([d.utterances[-1].id for d in dialogues], self.last_probabilities(dialogues),
                                  self.offsets)


def offsets_of(info: dict) -> np.ndarray | None:
    """The calibration offsets stored in a model folder's info, in LABELS order (None when there are none)."""
    offsets = info.get("calibration")
    return np.array([offsets[label] for label in LABELS]) if offsets else None
