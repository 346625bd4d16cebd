"""Verified folders in erckit's cache: built once into a temp sibling, checked by sha256 manifest.

A packaged model (see `erckit.encoder.packaged`, `erckit.llm.packaged`) is converted into a plain
folder under the cache. The build runs in a hidden temp folder beside the target and is swapped in
by rename, so a killed build never leaves a half-written target; the manifest records the sha256 of
every file and the versions it was built from; a folder whose files fail the check, or that an older
converter wrote, is rebuilt, and one that passes is used whatever is installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

from erckit.formats.encoding import open_file, read_json


def default_cache_dir() -> Path:
    """Where converted models live: `$ERCKIT_CACHE`, else `$XDG_CACHE_HOME/erckit`, else `~/.cache/erckit`
    (read when called, so a variable set after import counts)."""
    if own := os.environ.get("ERCKIT_CACHE"):
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else Path("~/.cache").expanduser()
    return base / "erckit"


MANIFEST_NAME = "erckit-manifest.json"
STALE_BUILD_S = 3600.0

Builder = Callable[[Path], None]


class MissingPackage(ValueError):
    """An optional package a model needs is not installed; the message says how to install it."""


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open_file(path) as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def source_info(converter: int, dists: Iterable[str]) -> dict[str, str]:
    """The converter version and the versions of the installed distributions a folder is built from."""
    info = {"converter": str(converter)}
    for dist in dists:
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[dist] = metadata.version(dist)
    return info


def write_manifest(folder: Path, source: dict[str, str]) -> None:
    """Record `source` and the sha256 of every file in `folder` in its manifest."""
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST_NAME)
    manifest = {"source": source, "sha256": {name: sha256(folder / name) for name in files}}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest, or None when it is missing or unreadable."""
    try:
        manifest = read_json(Path(folder) / MANIFEST_NAME, "settings")
    except ValueError:  # DataError too
        return None
    return manifest if isinstance(manifest, dict) else None


def verify_folder(folder: Path, manifest: dict | None = None) -> bool:
    """True when the manifest exists and every file it lists has the recorded sha256 (`manifest`: already read)."""
    folder = Path(folder)
    manifest = manifest or read_manifest(folder)
    try:
        expected: dict[str, str] = manifest["sha256"]
        return bool(expected) and all(
            (folder / name).is_file() and sha256(folder / name) == digest for name, digest in expected.items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def is_current(folder: Path, source: dict[str, str]) -> bool:
    """True when the folder's files verify and it was written by the same converter version.

    The package versions in the manifest are a record of where the folder came from, not a condition:
    a folder that verifies is used whatever is installed now (the packages are needed only to build it).
    """
    manifest = read_manifest(folder)
    if manifest is None or not verify_folder(folder, manifest):
        return False
    recorded = manifest.get("source", {})
    return isinstance(recorded, dict) and recorded.get("converter") == source.get("converter")


def remove_stale_builds(parent: Path, name: str) -> None:
    """Delete leftovers of killed builds of `name` (hidden temp folders older than an hour)."""
    for old in parent.glob(f".{name}.*"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > STALE_BUILD_S:
                shutil.rmtree(old, ignore_errors=True)


def build_atomically(target: Path, build: Builder, source: dict[str, str], label: str) -> None:
    """Run `build` in a temp folder beside `target`, add the manifest, then swap it in with renames."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(target.parent, target.name)
    print(f"building {label} in {target} (once)", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.build-"))
    try:
        build(tmp)
        write_manifest(tmp, source)
        tmp.chmod(0o755)
        if target.exists():
            trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, target)
    except OSError:
        if not is_current(target, source):  # else a concurrent build won the race with a good folder
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_folder(
    name: str,
    build: Builder,
    source: dict[str, str],
    label: str,
    cache_dir: Path | None = None,
    *,
    rebuild: bool = False,
) -> Path:
    """`cache_dir / name` (default `default_cache_dir()`), built with `build` when missing, damaged or outdated."""
    target = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / name
    if rebuild or not is_current(target, source):
        build_atomically(target, build, source, label)
    return target


def local_or_hub(name_or_path: str) -> str:
    """A local folder -> its path (`~` expanded); anything else (a hub id) unchanged."""
    local = Path(name_or_path).expanduser()
    return str(local) if local.is_dir() else name_or_path


# The models erckit builds from registry packages (erckit.encoder.packaged, erckit.llm.packaged): the
# recipes' defaults. `packaged` alone names the one a setting expects.
PACKAGED_ENCODER_NAME = "packaged:multilingual-e5-small"
PACKAGED_LM_NAME = "packaged:gemma-3-270m"


def is_packaged(model: str) -> bool:
    """Whether `model` names a model erckit builds from a registry package (`packaged` or `packaged:<name>`)."""
    return model == "packaged" or model.startswith("packaged:")


def is_local_path(model: str) -> bool:
    """Whether `model` is plainly a local path rather than a hub id (`org/name`): it starts with ./, ../, /
    or ~, has more than one /, or its first part is a local folder (runs/x)."""
    if is_packaged(model):
        return False
    first, slash, _ = model.partition("/")
    return (model.startswith(("./", "../", "/", "~")) or model in (".", "..") or model.count("/") > 1
            or bool(slash and first and Path(first).is_dir()))


def check_source(name: str, key: str, packaged: Iterable[str]) -> None:
    """Refuse (ConfigError), naming the recipe `key` (or, in words, what the value is), a model source that
    cannot be found, before anything is written: a packaged name not in `packaged`, a path that is no model
    folder (config.json, or a LoRA adapter's adapter_config.json), or a hub id that is not in the Hugging Face
    cache while offline (HF_HUB_OFFLINE)."""
    from huggingface_hub.constants import HF_HUB_OFFLINE

    from erckit.config import ConfigError

    given = f"{key}={name}" if key.isidentifier() or "." in key else f"{key} {name}"  # a recipe key, or words
    local = Path(name).expanduser()
    if is_packaged(name):
        if name not in packaged:
            raise ConfigError(f"{given}: no such packaged model (packaged: {', '.join(packaged)})")
        return
    if local.is_dir():
        if not any((local / f).is_file() for f in ("config.json", "adapter_config.json")):
            raise ConfigError(f"{given}: the folder holds no model (no config.json)")
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if is_local_path(name) or local.exists():
            raise HFValidationError("a path")
        validate_repo_id(name)
    except HFValidationError:
        raise ConfigError(f"{given}: no such model folder, and not a hub id (owner/name)") from None
    if HF_HUB_OFFLINE:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise ConfigError(f"{given}: not a folder here, and not in the Hugging Face cache while offline "
                             "(HF_HUB_OFFLINE=1): download it on a connected machine, or give its folder")
