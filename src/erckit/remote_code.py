"""A received model folder is data, not code: the Python code a folder carries runs only when the user asks.

A folder can name Python files of its own (`auto_map` in its config.json or tokenizer_config.json, which
transformers imports under `trust_remote_code` for a model or tokenizer class it does not have itself), and
its run record (erckit_llm.json) or saved recipe (erckit_model.json) can ask for that code to run. Neither is the user's word. Every load of a folder for
prediction goes through `check_trusted`, which refuses, before anything of the folder is imported, unless
the user passed --trust-remote-code (`trust_remote_code=True` in the Python API). A recipe given to
`erckit train` is the user's word: training follows its `trust_remote_code`. The same look at a folder
checks that its files are regular files: a FIFO or a device among them would hang the library that opens
it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from erckit.data import DataError
from erckit.formats.encoding import check_file, read_json

CONFIGS = ("config.json", "tokenizer_config.json")  # where transformers finds `auto_map`
RECORD = "erckit_llm.json"  # erckit.llm.record.RECORD_FILE: a run record's `trust_remote_code`
MODEL = "erckit_model.json"  # erckit.models.MODEL_FILE: a saved recipe's `<section>.trust_remote_code`
ADAPTER = "adapter_config.json"  # a LoRA adapter: its base model is loaded with it
FLAG = "--trust-remote-code (trust_remote_code=True in the Python API)"


def recipe_asks(recipe: Any) -> bool:
    """Whether a recipe mapping sets `trust_remote_code: true` in any section (llm, encoder)."""
    return isinstance(recipe, dict) and any(
        isinstance(section, dict) and section.get("trust_remote_code") is True for section in recipe.values())


def _read(path: Path) -> Any:
    """A JSON file's content (through erckit's one reader); None when absent or unreadable (its loader names a
    broken file)."""
    try:
        return read_json(path, "settings") if path.is_file() else None
    except DataError:
        return None


def _built_in(name: str, data: dict) -> bool:
    """Whether transformers has the class a config with `auto_map` describes (its model type, or its tokenizer
    class): without trust_remote_code it then loads its own class and runs none of the folder's code (Phi-3
    folders keep an auto_map from before transformers had them)."""
    import transformers

    if name == "config.json":
        return data.get("model_type") in transformers.CONFIG_MAPPING
    tokenizer = data.get("tokenizer_class")
    return isinstance(tokenizer, str) and hasattr(transformers, tokenizer.removesuffix("Fast"))


def _reason(folder: Path, records: bool) -> str | None:
    """Why `folder` itself (not its subfolders) would run code: the file that asks, or None; `records`: also
    its run record and saved recipe."""
    for name in CONFIGS:
        data = _read(folder / name)
        if isinstance(data, dict) and data.get("auto_map") and not _built_in(name, data):
            return f"its {name} names Python code of its own (auto_map)"
    if not records:
        return None
    record = _read(folder / RECORD)
    if isinstance(record, dict) and record.get("trust_remote_code") is True:
        return f"its {RECORD} asks to run the model's own code (trust_remote_code)"
    info = _read(folder / MODEL)
    if isinstance(info, dict) and recipe_asks(info.get("config")):
        return f"its {MODEL} asks to run the model's own code (trust_remote_code)"
    return None


def own_code(folder: str | Path, *, base: bool = True, records: bool = True, seen: set[Path] | None = None) -> str | None:
    """Why loading `folder` would run code it carries, or None: a config's auto_map, or (with `records`) a run
    record or saved recipe asking for trust_remote_code, in the folder or a subfolder (best/, encoder/,
    checkpoint-N/); with `base`, also in the local base model folder a LoRA adapter names. `seen`: folders
    already looked at (skipped; this call's are added)."""
    folder = Path(folder)
    seen = set() if seen is None else seen
    if not folder.is_dir() or folder.resolve() in seen:
        return None  # a hub id or packaged:<name>: transformers refuses unregistered code without the flag
    seen.add(folder.resolve())
    places = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]
    for place in places:
        for entry in place.iterdir():
            if not entry.is_dir():
                check_file(entry)  # erckit's own reads add their size limits
    for place in places:
        if reason := _reason(place, records):
            return reason if place == folder else f"{place.name}/: {reason}"
    if base:
        for place in places:
            adapter = _read(place / ADAPTER)
            name = adapter.get("base_model_name_or_path") if isinstance(adapter, dict) else None
            local = isinstance(name, str) and bool(name) and Path(name).is_dir()
            if local and (reason := own_code(name, base=False, seen=seen)):
                return f"its adapter's base model {name}: {reason}"
        from erckit import kinds

        for member in kinds.members(folder, _read(folder / MODEL)):  # a fusion's: loading it loads them
            if reason := own_code(member, seen=seen):
                return f"its member {member}: {reason}"
    return None


def first_own_code(folders: Iterable[str | Path | None], *, asked: bool | None = None) -> tuple[str, str] | None:
    """(folder, why) for the first of `folders` that would run its own code, or None. `asked`: None when no
    run record was read for them (their records and an adapter's base are looked at here); else what the
    run record the caller read says (a checkpoint's lives in its run folder), and `folders` hold the weights
    and the base under an adapter: neither is read again."""
    seen: set[Path] = set()  # a folder is looked at once, also when it is both a base and one of `folders`
    known = asked is not None
    for folder in folders:
        if folder is None or not Path(folder).is_dir():
            continue
        reason = own_code(folder, base=not known, records=not known, seen=seen) or (
            "its run record asks to run the model's own code (trust_remote_code)" if asked else None)
        if reason:
            return str(folder), reason
    return None


def refuse(found: tuple[str, str] | None, trusted: bool) -> None:
    """Refuse what `first_own_code` found unless the user trusts it."""
    if found is not None and not trusted:
        folder, reason = found
        raise DataError(folder, None, f"{reason}; a received folder's code runs only with {FLAG}")


def check_trusted(folders: Iterable[str | Path | None], trusted: bool, *, asked: bool | None = None) -> None:
    """Refuse to load `folders` when one would run its own code and the user did not ask for it. Call before
    anything of the folders is loaded."""
    refuse(first_own_code(folders, asked=asked), trusted)  # the files are checked also when the code is trusted
