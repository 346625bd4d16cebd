"""A fusion model: trained model folders whose label probabilities are averaged with fixed weights.

`erckit ensemble --models A B --validation dev.json --out fused` writes a small model folder (its
`erckit_model.json` names the members by absolute path and holds the weights, chosen on validation macro-F1
unless given); `erckit predict --model fused` and `erckit.models.load` then label with all members, loaded once.
The weights are found by the same search `erckit compare` uses for its fusion methods (`ensemble.choose_weights`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from erckit import __version__
from erckit.atomic import write_text_atomic
from erckit.cache import sha256
from erckit.config import ConfigError
from erckit.data import DataError, gold_labels
from erckit.ensemble import choose_weights, weight_shares
from erckit.formats import read_dialogues
from erckit.labels import LABELS

KIND = "fusion"


def build_fusion(members: list[str | Path], out: str | Path, *, weights: list[float] | None = None,
                 validation: str | Path | None = None, format: str | None = None,
                 text_column: str | None = None) -> dict:
    """Write the fusion folder `out` and return its info; weights given, or chosen on `validation`."""
    from erckit.models import MODEL_FILE, load

    if len(members) < 2:
        raise DataError("ensemble", None, "give two or more --models to fuse")
    folders = [Path(m).resolve() for m in members]
    for folder in folders:
        if not (folder / MODEL_FILE).is_file():
            raise DataError(folder, None, f"not an erckit model folder (no {MODEL_FILE})")
    summary: dict = {"weights_from": "given"}
    if weights is None:
        if validation is None:
            raise DataError("ensemble", None, "give --weights, or --validation to choose them on a labelled file")
        dialogues = read_dialogues(validation, format, text_column=text_column)
        gold = gold_labels(dialogues, validation)
        probs = [load(folder).probabilities(dialogues, progress=True) for folder in folders]
        weights, macro = choose_weights(probs, list(gold.values()))
        summary = {"weights_from": "validation macro-F1", "validation": str(validation),
                   "validation_sha256": sha256(Path(validation)), "val_macro_f1": macro}
    shares = weight_shares(weights, len(folders))
    info = {"type": KIND, "labels": list(LABELS), "erckit_version": __version__, "finished": True,
            "config": {"members": [str(f) for f in folders], "weights": shares}, "summary": summary}
    write_text_atomic(Path(out) / MODEL_FILE, json.dumps(info, indent=2) + "\n")
    return info


def member_folders(folder: Path, config: dict) -> tuple[list[Path], list[float]]:
    """The members and weights a fusion folder records, checked."""
    members, weights = config.get("members"), config.get("weights")
    if not isinstance(members, list) or not isinstance(weights, list) or len(members) != len(weights) or len(members) < 2:
        raise ConfigError(f"{folder}: a fusion records 'members' and as many 'weights'")
    for member in members:
        if not Path(member).is_dir():
            raise ConfigError(f"{folder}: member {member} is gone (a fusion names its members by path: "
                              "rebuild it with erckit ensemble --models ...)")
    return [Path(m) for m in members], weight_shares([float(w) for w in weights], len(weights))


def fused_scorer(folder: Path, config: dict):
    """(dialogues, progress) -> the weighted mean of the members' probabilities, each member loaded once."""
    from erckit.models import load

    members, shares = member_folders(folder, config)
    predictors = [load(member) for member in members]

    def score(dialogues, progress: bool) -> np.ndarray:
        return sum(w * p.probabilities(dialogues, progress=progress) for w, p in zip(shares, predictors, strict=True))

    return score
