"""`model: fusion`: trained model folders whose label probabilities are averaged with fixed weights.

`erckit ensemble --models A B --gold dev.json --out fused` (or a recipe with `model: fusion`) "trains" a
fusion: it checks the members and keeps the weights, given or chosen on validation macro-F1 by the search
`erckit compare` uses for its fusion methods (`ensemble.fusion_weights`). The folder names its members by absolute
path and by their path from the fusion folder (`saved_members`: a runs folder moved or copied whole still finds
them); `erckit predict`, `erckit serve` and `erckit.load` then label with every member, each loaded once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from erckit.config import ConfigError, RunConfig
from erckit.data import Dialogue, gold_labels
from erckit.ensemble import fusion_weights, mix, weights_problem
from erckit.predictor import Predictor, offsets_of
from erckit.remote_code import check_trusted

NAME = "fusion"
READS = {"data": ("validation", "format", "text_column"), "fusion": None}
ENGINES = False
BEST_SO_FAR = False
REPORTERS: tuple[str, ...] = ()  # trains nothing


def outputs() -> tuple[str, ...]:
    """Nothing beside erckit_model.json: the fusion's weights are kept in it."""
    return ()


def resumable(folder: Path) -> bool:
    """Chosen in one step: nothing to resume."""
    return False


def check(config: RunConfig) -> None:
    members, weights = config.fusion.members, config.fusion.weights
    if len(members) < 2:
        raise ConfigError(f"fusion.members must be two or more model folders, not {members!r}")
    if weights is None and config.data.validation is None:
        raise ConfigError("fusion.weights is null: give one weight per member, or data.validation to choose them on")
    if weights is not None and (problem := weights_problem(weights, len(members))):
        raise ConfigError(f"fusion.weights: {problem}")
    check_trusted(_member_folders(members), config.fusion.trust_remote_code)  # before anything is written


def _member_folders(members: list[str]) -> list[Path]:
    """The members (absolute paths); each must be a finished erckit model folder."""
    from erckit.models import MODEL_FILE, read_model_info

    folders = [Path(m) for m in members]
    for folder in folders:
        if not (folder / MODEL_FILE).exists():
            raise ConfigError(f"fusion.members: {folder} is not an erckit model folder")
        info = read_model_info(folder)
        if not info.get("finished"):
            raise ConfigError(f"fusion.members: {folder} has not finished training")
        if info["type"] == NAME:  # no nesting, hence no cycles: list the inner fusion's members instead
            raise ConfigError(f"fusion.members: {folder} is itself a fusion; name its members instead")
    return folders


def train(config: RunConfig, train: list[Dialogue] | None, validation: list[Dialogue] | None, out: Path) -> dict:
    from erckit.models import load

    folders = [Path(m) for m in config.fusion.members]  # checked when the recipe loaded
    trust = config.fusion.trust_remote_code  # the recipe's (the user's) word

    def on_validation() -> tuple[list[np.ndarray], list[str]]:
        probs = [load(folder, trust_remote_code=trust).probabilities(validation, progress=True) for folder in folders]
        return probs, list(gold_labels(validation, config.data.validation).values())

    chosen = fusion_weights(config.fusion.weights, len(folders), on_validation)
    summary = {"weights": chosen.shares, "weights_from": chosen.origin}
    if chosen.validation_macro_f1 is not None:
        summary |= {"val_macro_f1": chosen.validation_macro_f1, "val_weighted_f1": chosen.validation_weighted_f1,
                    "val_member_macro_f1": chosen.member_macro_f1}
    return summary | {"member_paths": [os.path.relpath(m, out.resolve()) for m in folders]}  # see saved_members


def saved_members(folder: Path, info: dict) -> list[Path]:
    """Where a saved fusion's members are: at their path from the fusion folder when they are there (the folders
    moved together), else at their absolute path (the fusion alone moved). Tolerant of a malformed file: what
    it cannot read it leaves out (erckit.remote_code looks through folders before they are loaded)."""
    from erckit.models import MODEL_FILE

    def listed(section: object, key: str) -> list:
        value = section.get(key) if isinstance(section, dict) else None
        return value if isinstance(value, list) else []

    recipe = info.get("config")
    members = listed(recipe.get("fusion") if isinstance(recipe, dict) else None, "members")
    relative = listed(info.get("summary"), "member_paths")
    found = []
    for i, absolute in enumerate(members):
        beside = folder / relative[i] if i < len(relative) and isinstance(relative[i], str) else None
        if beside is not None and (beside / MODEL_FILE).exists():
            found.append(beside.resolve())
        elif isinstance(absolute, str):
            found.append(Path(absolute))
    return found


def saved_recipe(folder: Path, info: dict) -> dict:
    """The saved recipe with each member where `saved_members` finds it; refused when one is nowhere."""
    from erckit.models import MODEL_FILE

    members = saved_members(folder, info)
    if missing := next((m for m in members if not (m / MODEL_FILE).exists()), None):
        raise ConfigError(f"{folder}: its member {missing.name} is neither at {missing} nor at its path from the fusion "
                          "folder (moved apart?); rebuild it with erckit ensemble --models ...")
    recipe = info["config"]
    return recipe | {"fusion": recipe["fusion"] | {"members": [str(m) for m in members]}}


def load(folder: Path, config: RunConfig, info: dict, trust_remote_code: bool) -> Predictor:
    """Every member loaded once; the weighted mean of their probabilities."""
    from erckit.models import load as load_member

    predictors = [load_member(m, trust_remote_code=trust_remote_code) for m in config.fusion.members]  # where saved_recipe found them
    weights = info["summary"]["weights"]

    def score(dialogues: list[Dialogue], progress: bool) -> np.ndarray:
        return mix(weights, [p.probabilities(dialogues, progress=progress) for p in predictors])

    def score_last(dialogues: list[Dialogue]) -> np.ndarray:
        return mix(weights, [p.last_probabilities(dialogues) for p in predictors])

    return Predictor(folder, NAME, score, offsets_of(info), score_last=score_last)
