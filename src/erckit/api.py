"""The Python API: load a trained model folder once, label dialogues from files, Python objects or a pandas
DataFrame with MELD's columns; train a model from a recipe.

    import erckit
    model = erckit.load("runs/my_model")
    predictions = model.label([[("A", "你好"), ("B", "好久不见！")]])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from erckit import models
from erckit.data import DataError, Dialogue, Utterance, check_dialogues, prefixes, turn_utterance
from erckit.formats import meld_csv, read_dialogues
from erckit.formats.meld_csv import utterance_id
from erckit.labels import LABELS
from erckit.predictions import Prediction

if TYPE_CHECKING:
    import pandas as pd

Turn = Mapping[str, Any] | tuple[str, str] | Utterance
"""One turn: {"speaker": ..., "text": ..., "id": ... (optional)}, a (speaker, text) pair, or an Utterance."""
DialogueInput = Dialogue | Sequence[Turn]
Dialogues = Union[str, Path, Sequence[DialogueInput], Mapping[str, Sequence[Turn]], "pd.DataFrame"]
"""A dialogue file's path, a list of dialogues (each a Dialogue or a list of turns), {dialogue id: turns}, or
a DataFrame with MELD's columns (see frame_to_dialogues)."""
WHERE = "<dialogues>"  # how errors name Python input
FRAME = "<DataFrame>"  # ... and a DataFrame


def _utterance(turn: Turn, dialogue_id: str, number: int) -> Utterance:
    """One turn as an Utterance, taken as the server takes it (`turn_utterance`: ends stripped, blank refused);
    without an id it is `<dialogue>_<turn>`."""
    where = f"dialogue {dialogue_id}, turn {number}"
    if isinstance(turn, Utterance):
        return turn
    if isinstance(turn, tuple) and len(turn) == 2:
        turn = {"speaker": turn[0], "text": turn[1]}
    elif not isinstance(turn, Mapping):
        raise DataError(WHERE, where, f"expected a mapping or a (speaker, text) pair, got {type(turn).__name__}")
    elif set(turn) - {"id", "speaker", "text"} or not {"speaker", "text"} <= set(turn):
        raise DataError(WHERE, where, f"expected keys speaker, text (and id), got {sorted(turn)}")
    return turn_utterance(turn, f"{dialogue_id}_{number}", WHERE, where)


def to_dialogues(data: Dialogues, *, format: str | None = None) -> list[Dialogue]:
    """Dialogues from a file path or from Python objects, validated (no empty text, unique utterance ids).
    Dialogues without ids are numbered from 1; their turns get ids `<dialogue>_<turn>`."""
    if isinstance(data, (str, Path)):
        return read_dialogues(data, format)
    pandas = type(data).__module__.startswith("pandas")
    if pandas and type(data).__name__ == "DataFrame":
        return frame_to_dialogues(data)
    if pandas or isinstance(data, bytes) or not isinstance(data, Iterable):  # a Series is a column, not dialogues
        raise DataError(WHERE, None, f"expected a file path, a list of dialogues, {{dialogue id: turns}} or a pandas "
                                     f"DataFrame, got {type(data).__name__}")
    items = data.items() if isinstance(data, Mapping) else ((str(i), d) for i, d in enumerate(data, start=1))
    dialogues = []
    for dialogue_id, dialogue in items:
        if isinstance(dialogue, Dialogue):
            dialogues.append(dialogue)
            continue
        if isinstance(dialogue, (str, bytes)) or not isinstance(dialogue, Sequence):
            raise DataError(WHERE, f"dialogue {dialogue_id}", "expected a list of turns")
        turns = tuple(_utterance(turn, str(dialogue_id), n) for n, turn in enumerate(dialogue, start=1))
        dialogues.append(Dialogue(str(dialogue_id), turns))
    return check_dialogues(dialogues, WHERE)


def frame_to_dialogues(frame: pd.DataFrame, *, text_column: str | None = None) -> list[Dialogue]:
    """Dialogues from a DataFrame with MELD's columns (Dialogue_ID, Utterance_ID, Speaker, and Utterance or
    Target; Emotion optional), read exactly as a MELD CSV file: utterance ids are `dia<D>_utt<U>`, and the ids
    may be whole-number floats (0.0). An error names the row by its index label (`<DataFrame>: index 3: ...`)."""
    return check_dialogues(meld_csv.parse(frame.to_csv(index=False), FRAME, text_column=text_column,
                                          row_name=_index_labels(frame)), FRAME)


def _index_labels(frame: pd.DataFrame) -> Callable[[int], str]:
    """The frame's row whose CSV text starts at a line (the header is line 1; a row spans one line more for
    each line break in its cells), named by its index label."""
    breaks = [sum(str(value).count("\n") for value in row) for row in frame.itertuples(index=False)]
    starts = 2 + np.cumsum([0, *(1 + n for n in breaks)])[:-1]
    labels = dict(zip(starts.tolist(), frame.index.tolist(), strict=True))  # tolist: plain ints, not numpy's
    return lambda line: f"index {labels[line]!r}" if line in labels else meld_csv.file_line(line)


class Model:
    """A trained model folder (erckit train) loaded once; label any number of dialogues with it."""

    def __init__(self, folder: str | Path, *, best_so_far: bool = False, trust_remote_code: bool = False) -> None:
        self.predictor = models.load(folder, best_so_far=best_so_far, trust_remote_code=trust_remote_code)

    @property
    def kind(self) -> str:
        """The model kind: tfidf, bert_bigru, llm or fusion (erckit ensemble --models)."""
        return self.predictor.kind

    def probabilities(self, data: Dialogues) -> np.ndarray:
        """[utterances, 7] label probabilities (columns in erckit.LABELS order), before calibration."""
        return self.predictor.probabilities(to_dialogues(data))

    def label(self, data: Dialogues) -> list[Prediction]:
        """One Prediction (id, label, probs) per utterance in input order; calibration applied if stored."""
        return self.predictor.predict(to_dialogues(data))

    def label_past_only(self, dialogue: DialogueInput) -> list[Prediction]:
        """Each turn labelled from the turns up to it only, as if the dialogue arrived one turn at a time."""
        whole = to_dialogues([dialogue])[0]
        return [replace(p, id=u.id) for p, u in zip(self.predictor.predict_last(prefixes(whole)), whole.utterances,
                                                       strict=True)]

    def label_frame(self, frame: pd.DataFrame, *, text_column: str | None = None) -> pd.DataFrame:
        """A copy of a MELD-columns DataFrame with a `label` column and one probability column per label; a blank
        row (every cell empty, as a spreadsheet export may end) is skipped as a CSV reader skips it: no label."""
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            raise DataError(FRAME, None, f"expected a pandas DataFrame, got {type(frame).__name__}")
        if taken := [c for c in ("label", *LABELS) if c in frame.columns]:
            raise DataError(FRAME, None, f"has a column {taken[0]!r} already: label_frame adds label and one "
                                         "column per label; rename or drop it")
        dialogues = frame_to_dialogues(frame, text_column=text_column)
        by_id = {p.id: p for p in self.predictor.predict(dialogues)}
        cells = frame.astype(object).where(frame.notna(), "")  # a blank row: every cell empty (NaN, or "" unparsed)
        blank = cells.map(lambda cell: str(cell).strip() == "").all(axis=1).tolist()  # others: refused when read
        ids = [None if empty else utterance_id(int(d), int(u))
               for empty, d, u in zip(blank, frame[meld_csv.DIALOGUE], frame[meld_csv.UTTERANCE], strict=True)]
        out = frame.copy()
        out["label"] = [by_id[i].label if i else None for i in ids]
        for label in LABELS:
            out[label] = [by_id[i].probs[label] if i else float("nan") for i in ids]
        return out


def load(folder: str | Path, *, best_so_far: bool = False, trust_remote_code: bool = False) -> Model:
    """Load a trained model folder once (see Model). `best_so_far`: an unfinished bert_bigru run's best epoch.
    `trust_remote_code`: run the folder's own Python code (a received folder's is refused without it)."""
    return Model(folder, best_so_far=best_so_far, trust_remote_code=trust_remote_code)


def train(recipe: str | Path, out: str | Path, overrides: Mapping[str, Any] | None = None) -> Path:
    """Train a recipe (a shipped recipe's name, or a YAML file) into `out`, with the CLI's overrides as a
    mapping of dotted keys to values, taken as given ({"data.train": "annotation_train.json", "train.epochs": 2,
    "classifier.dropout": None}). Returns `out`; a finished identical run there is reused."""
    from erckit.config import ConfigError, load_config

    if overrides and "out" in overrides:
        raise ConfigError(f"overrides name out={overrides['out']} beside out={out}: give the folder once, as out")
    given = [(key, os.fspath(value) if isinstance(value, os.PathLike) else value)  # a Path as the text a recipe holds
             for key, value in (overrides or {}).items()]
    config = load_config(recipe, [*given, ("out", str(out))])
    models.train(config, recipe)
    return Path(config.out)

