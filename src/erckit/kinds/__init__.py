"""Model kinds: each owns the recipe keys it reads (and their checks), its training and its loading.

A kind is a module of this package (tfidf.py, encoder.py, llm.py, fusion.py) implementing `Kind`. `models` and the
CLI go through `get`; nothing else switches on the kind's name.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from erckit.config import RunConfig
    from erckit.data import Dialogue
    from erckit.predictor import Predictor


class Kind(Protocol):
    """What a kind module provides."""

    NAME: str  # the `model:` value of its recipes
    READS: dict[str, tuple[str, ...] | None]  # recipe section -> the fields it reads (None: all)
    ENGINES: bool  # its folders are scored by the LLM engines (`erckit predict`'s backends, prepared files)
    BEST_SO_FAR: bool  # an unfinished run predicts with its best epoch so far (`unfinished_epoch` says which)
    REPORTERS: tuple[str, ...]  # the trackers its training can report to (`report_to`: erckit.tracking)

    def check(self, config: RunConfig) -> None:
        """Refusals that span sections (run when a recipe loads)."""

    def check_sources(self, config: RunConfig) -> None:
        """Optional: the weights a training starts from can be found (a folder, a cached or reachable hub id,
        a packaged model with its extra installed); run before anything is written (`check_sources` below)."""

    def train(self, config: RunConfig, train: list[Dialogue], validation: list[Dialogue] | None, out: Path) -> dict:
        """Train into `out`; the summary kept in erckit_model.json."""

    def load(self, folder: Path, config: RunConfig, info: dict, trust_remote_code: bool) -> Predictor:
        """The folder's weights, loaded once; the folder's own code runs only with `trust_remote_code` (the
        user's word, checked by `erckit.models.load`; never the saved recipe's)."""

    def unfinished_epoch(self, folder: Path, info: dict) -> dict:
        """Kinds with BEST_SO_FAR only: the epoch an unfinished run's weights come from, epochs run, the cap."""

    def outputs(self) -> tuple[str, ...]:
        """The files its training writes at the top of a run folder, beside erckit_model.json (none of them may be
        an input: `erckit.models.train` checks)."""

    def resumable(self, folder: Path) -> bool:
        """Whether an unfinished run of this kind in `folder` left a checkpoint to resume from."""

    def saved_recipe(self, folder: Path, info: dict) -> dict:
        """Optional, for kinds whose recipe names other folders (fusion): the recipe kept in `folder`'s
        erckit_model.json (`info`) as it reads where the folder is now (see `saved_recipe` below)."""

    def saved_members(self, folder: Path, info: dict) -> list[Path]:
        """Optional, likewise: the model folders a saved model loads besides its own (see `members` below)."""

MODULES = {"bert_bigru": "erckit.kinds.encoder", "tfidf": "erckit.kinds.tfidf", "llm": "erckit.kinds.llm",
           "fusion": "erckit.kinds.fusion"}
NAMES = tuple(MODULES)
ALWAYS = ("model", "out", "report_to")  # the top-level keys every kind reads (report_to: checked by RunConfig)
DATA = ("train", "validation", "format", "text_column")  # what a training kind reads of `data` (never data.test)


def get(name: str) -> Kind:
    """The module of kind `name` (imported on first use: torch only when a kind needs it)."""
    if name not in MODULES:
        raise ValueError(f"model must be one of {', '.join(NAMES)}, not {name!r}")
    return cast(Kind, importlib.import_module(MODULES[name]))


def check_sources(config: RunConfig) -> None:
    """The recipe's starting weights can be found (its kind's `check_sources`, where it has one)."""
    if checker := getattr(get(config.model), "check_sources", None):
        checker(config)


def saved_recipe(folder: Path, info: dict) -> dict:
    """The recipe a model folder keeps, as its kind reads it where the folder is now (a fusion finds members that
    moved with it); the saved mapping itself for kinds that name no other folder."""
    kind = get(info["type"])
    return kind.saved_recipe(folder, info) if hasattr(kind, "saved_recipe") else info["config"]


def members(folder: Path, info: object) -> list[Path]:
    """The other model folders a saved model (`info`: its erckit_model.json, read tolerantly) loads with it:
    a fusion's members; none for other kinds, or for a record that names no kind erckit knows."""
    name = info.get("type") if isinstance(info, dict) else None
    kind = get(name) if isinstance(name, str) and name in MODULES else None
    return kind.saved_members(folder, info) if kind is not None and hasattr(kind, "saved_members") else []


def flat_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys set in a (nested) recipe mapping, in order: `llm.prompt.form`, `train.epochs`; a key set to
    null, or a section left empty, sets nothing."""
    keys = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        keys.extend(flat_keys(value, f"{name}.") if isinstance(value, dict) else [] if value is None else [name])
    return keys


def reads(name: str, key: str) -> bool:
    """Whether kind `name` reads the dotted recipe key `key`."""
    section, _, rest = key.partition(".")
    if section in ALWAYS:
        return True
    table = get(name).READS
    if section not in table:
        return False
    fields = table[section]
    return fields is None or rest.split(".")[0] in fields


def unread_key(name: str, data: dict[str, Any]) -> str | None:
    """The first key of a recipe mapping that kind `name` never reads, or None."""
    return next((key for key in flat_keys(data) if not reads(name, key)), None)


def described(name: str) -> str:
    """What kind `name` reads, for messages: `data, llm, train.seed`."""
    table = get(name).READS
    return ", ".join(s if f is None else ", ".join(f"{s}.{k}" for k in f) for s, f in table.items())


def kept(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A recipe mapping (`config.to_dict`) cut to what kind `name` reads: the config a run folder keeps."""
    table = get(name).READS
    result = {key: config[key] for key in ALWAYS if key in config}
    for section, fields in table.items():
        if section in config:
            value = config[section]
            result[section] = value if fields is None else {k: value[k] for k in fields if k in value}
    return result


def first_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str | None:
    """The first dotted key whose value differs between two recipe mappings, or None."""
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            if found := first_difference(a, b, f"{prefix}{key}."):
                return found
        elif a != b or (key in old) != (key in new):
            return f"{prefix}{key}"
    return None
