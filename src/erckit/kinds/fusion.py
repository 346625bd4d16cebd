"""`model: fusion`: trained model folders whose label probabilities are averaged with fixed weights.

`erckit ensemble --models A B --gold dev.json --out fused` (or a recipe with `model: fusion`) "trains" a
fusion: it checks the members and keeps the weights, given or chosen on validation macro-F1 by the search
`erckit compare` uses for its fusion methods (`ensemble.choose_weights`). The folder names its members by
absolute path; `erckit predict`, `erckit serve` and `erckit.load` then label with every member, each loaded once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from erckit.config import ConfigError, RunConfig
from erckit.data import Dialogue, gold_labels
from erckit.ensemble import choose_weights, weight_shares
from erckit.predictor import Predictor, offsets_of
from erckit.remote_code import check_trusted

NAME = "fusion"
READS = {"data": ("validation", "format", "text_column"), "fusion": None}
ENGINES = False
BEST_SO_FAR = False


def check(config: RunConfig) -> None:
    members, weights = config.fusion.members, config.fusion.weights
    if len(members) < 2:
        raise ConfigError(f"fusion.members must be two or more model folders, not {members!r}")
    if weights is None and config.data.validation is None:
        raise ConfigError("fusion.weights is null: give one weight per member, or data.validation to choose them on")
    if weights is not None and (len(weights) != len(members) or not all(math.isfinite(w) and w > 0 for w in weights)):
        raise ConfigError(f"fusion.weights must be {len(members)} positive numbers (one per member), not {weights!r}")
    check_trusted(_member_folders(members), config.fusion.trust_remote_code)  # before anything is written


def _member_folders(members: list[str]) -> list[Path]:
    """The members (absolute paths); each must be a finished erckit model folder."""
    from erckit.models import MODEL_FILE, read_model_info

    folders = [Path(m) for m in members]
    for folder in folders:
        if not (folder / MODEL_FILE).exists():
            raise ConfigError(f"fusion.members: {folder} is not an erckit model folder (a fusion names its members "
                              "by path: were they moved? rebuild it with erckit ensemble --models ...)")
        info = read_model_info(folder)
        if not info.get("finished"):
            raise ConfigError(f"fusion.members: {folder} has not finished training")
        if info["type"] == NAME:  # no nesting, hence no cycles: list the inner fusion's members instead
            raise ConfigError(f"fusion.members: {folder} is itself a fusion; name its members instead")
    return folders


def train(config: RunConfig, train: list[Dialogue] | None, validation: list[Dialogue] | None, out: Path) -> dict:
    from erckit.models import load

    folders = [Path(m) for m in config.fusion.members]  # checked when the recipe loaded
    if config.fusion.weights is not None:
        return {"weights": weight_shares(config.fusion.weights, len(folders)), "weights_from": "given"}
    gold = list(gold_labels(validation, config.data.validation).values())
    trust = config.fusion.trust_remote_code  # the recipe's (the user's) word
    probs = [load(folder, trust_remote_code=trust).probabilities(validation, progress=True) for folder in folders]
    weights, macro = choose_weights(probs, gold)
    return {"weights": weight_shares(weights, len(folders)), "weights_from": "validation macro-F1",
            "val_macro_f1": macro}


def load(folder: Path, config: RunConfig, info: dict, trust_remote_code: bool) -> Predictor:
    """Every member loaded once; the weighted mean of their probabilities."""
    from erckit.models import load as load_member

    predictors = [load_member(m, trust_remote_code=trust_remote_code) for m in config.fusion.members]  # checked when the saved recipe was read
    weights = info["summary"]["weights"]

    def score(dialogues: list[Dialogue], progress: bool) -> np.ndarray:
        return sum(w * p.probabilities(dialogues, progress=progress) for w, p in zip(weights, predictors, strict=True))

    def score_last(dialogues: list[Dialogue]) -> np.ndarray:
        return sum(w * p.last_probabilities(dialogues) for w, p in zip(weights, predictors, strict=True))

    return Predictor(folder, NAME, score, offsets_of(info), score_last=score_last)
