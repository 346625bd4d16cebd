"""The shipped training recipes (YAML files in this package): found by name, listed, copied out to edit.

A recipe is given to `erckit train --config` as a file path or as the name of a shipped one (`tfidf`,
`bert_bigru`, ...). Shipped recipes name no data: pass `data.train=...` (and validation) on the command line.
DeepSpeed configs ship beside them (`llm.deepspeed: zero2` or `zero3`).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from erckit.atomic import write_text_atomic
from erckit.config import ConfigError
from erckit.formats.encoding import read_text

SUFFIX = ".yaml"


def _folder() -> Path:
    return Path(str(resources.files(__name__)))


def names() -> list[str]:
    """The shipped recipes' names, sorted."""
    return sorted(p.stem for p in _folder().glob(f"*{SUFFIX}"))


def summary(name: str) -> str:
    """A recipe's one-line description: the first comment line that is not its command."""
    for line in read_text(path(name), "utf-8", "settings")[0].splitlines():
        text = line.lstrip("# ").strip()
        if not line.startswith("#"):
            break
        if text and "erckit train" not in text and not text.startswith(("or:", "make ")):
            return text.rstrip(":")
    return ""


def path(name: str) -> Path:
    """The file of a shipped recipe; a one-line error listing the names if there is none."""
    stem = name.removesuffix(SUFFIX)
    if stem not in names():
        raise ConfigError(f"{name}: no such recipe file, and not a shipped recipe ({', '.join(names())}; "
                          "`erckit recipes` lists them)")
    return _folder() / f"{stem}{SUFFIX}"


def resolve(recipe: str | Path) -> Path:
    """A recipe argument as a file: a file or a path as given, else a shipped recipe by name (a folder of the
    same name here, e.g. a model trained with `--out tfidf`, does not hide it)."""
    given = Path(recipe)
    shipped = given.parent == Path(".") and str(recipe).removesuffix(SUFFIX) in names()
    if given.is_file() or given.parent != Path(".") or (given.exists() and not shipped):
        return given  # a path (read_yaml names it if it cannot be read)
    return path(str(recipe))


def deepspeed_config(value: str) -> str:
    """`llm.deepspeed` as a file: a shipped DeepSpeed config by name (`zero2`, `zero3`) or a JSON file's path;
    a one-line error for anything else."""
    shipped = _folder() / "deepspeed" / f"{value}.json"
    if "/" not in value and shipped.is_file():
        return str(shipped)
    if not Path(value).is_file():
        found = ", ".join(sorted(p.stem for p in (_folder() / "deepspeed").glob("*.json")))
        raise ConfigError(f"llm.deepspeed: {value} is not a file, nor a shipped DeepSpeed config ({found})")
    return value


def zero_stage(config_file: str) -> object:
    """The ZeRO stage a DeepSpeed config file names (`zero_optimization.stage`), or None."""
    from erckit.formats.encoding import read_json

    data = read_json(config_file, "settings")
    zero = data.get("zero_optimization") if isinstance(data, dict) else None
    return zero.get("stage") if isinstance(zero, dict) else None


def copy(name: str, dest: str | Path) -> Path:
    """Copy a shipped recipe out to edit: into `dest` if it is a folder, else to the file `dest` (never over
    an existing file)."""
    source = path(name)
    target = Path(dest)
    if target.is_dir():
        target = target / source.name
    if os.path.lexists(target):
        raise ConfigError(f"{target}: already exists; choose another destination or remove it")
    if not target.parent.is_dir():
        raise ConfigError(f"{target.parent}: no such folder")
    write_text_atomic(target, read_text(source, "utf-8", "settings")[0], newline="")
    return target
