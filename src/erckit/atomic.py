"""Outputs: the one rule every erckit command's output path follows.

- An output that is, or resolves to, one of the command's inputs (the same file, also through a
  symbolic or hard link; for a folder output, the folder's file of a name the command writes, or the
  input folder itself) is refused before anything is read or written (`check_output`, `check_folder`).
- A symbolic link is written through: its target gets the new content, the link stays a link.
- An existing output that is not a regular file (a device, a FIFO, a folder where a file is written)
  is refused, and so is any path under /dev or /proc (/dev/stdout may link to a regular file: the
  shell's redirect, which a rename would replace).
- A file is written into a temporary sibling `.<name>.<pid>.erckit-tmp`, fsynced, and renamed over
  the output; a replaced file keeps its mode, a new one gets the usual permissions (umask). The
  leftovers of a killed run (their process gone) are removed by the next write to the same output.
- A folder output (`atomic_folder`) is written into a temporary sibling folder and renamed into
  place: it is visible complete or not at all; its files get the usual permissions.
- A report of several files in a folder that may hold other things (`atomic_files`: evaluate, report,
  prepare, compare's comparison.*) is written whole into a temporary sibling folder first; only when every
  file is written are they renamed into place, one rename each (and a report file this run does not write
  is removed): a run that fails while writing leaves the earlier report as it was, not a mix of two runs.
  The folder's other files stay.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

from erckit.data import DataError

TMP_SUFFIX = ".erckit-tmp"
OLD_SUFFIX = ".erckit-old"

PathLike = str | Path


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file: through links when both exist, else the same path once resolved
    (two outputs of one command that are not written yet)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        try:
            return Path(a).resolve() == Path(b).resolve()
        except (OSError, RuntimeError):  # a link loop
            return False


def _not_regular(path: Path) -> str | None:
    """Why an existing output path cannot be replaced by a file, or None."""
    parts = Path(os.path.abspath(path)).parts
    if len(parts) > 2 and parts[1] in ("dev", "proc") and parts[2] != "shm":
        return "is a device or process path (/dev/stdout is a link to an open file); write to a file"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"cannot be written: {err.strerror}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    return "is not a regular file (a device or a FIFO); write to a file"


def check_output(out: PathLike | None, inputs: Iterable[PathLike | None]) -> None:
    """Refuse a file output that is one of `inputs` (also through links) or not a regular file."""
    if out is None:
        return
    if problem := _not_regular(Path(out)):
        raise DataError(out, None, problem)
    for source in inputs:
        if source is not None and same_file(out, source):
            raise DataError(out, None, f"is the input {source}: choose another output (nothing was written)")


def check_folder(
    out: PathLike | None, inputs: Iterable[PathLike | None], names: Iterable[str] = (), *, whole: bool = False
) -> None:
    """Refuse a folder output that would replace an input: a file `out/<name>` (a name the command
    writes) that is an input, or, when the folder is replaced `whole`, the folder itself or one holding an input."""
    if out is None:
        return
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "is not a folder (the output is a folder)")
    sources = [Path(s) for s in inputs if s is not None]
    for source in sources if whole else ():
        if same_file(out, source) or (out.exists() and source.exists() and out.resolve() in source.resolve().parents):
            raise DataError(out, None, f"is or holds the input {source}: choose another output folder (nothing was written)")
    for name in names:
        check_output(out / name, sources)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(folder: Path, name: str) -> None:
    """Delete temporary files and folders of `name` left by killed erckit runs (their process gone)."""
    for suffix in (TMP_SUFFIX, OLD_SUFFIX):
        for leftover in glob.glob(os.path.join(glob.escape(str(folder)), f".{glob.escape(name)}.*{suffix}")):
            pid = leftover[: -len(suffix)].rsplit(".", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    if os.path.isdir(leftover) and not os.path.islink(leftover):
                        shutil.rmtree(leftover)
                    else:
                        os.unlink(leftover)


def _target(path: PathLike) -> Path:
    """Where the bytes go, as an absolute path (`.` has no name to put a temporary sibling beside): a symbolic
    link's final target (the link itself stays)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else Path(os.path.abspath(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and replaces `path` (through a link)."""
    out = Path(path)
    target = _target(out)
    if problem := _not_regular(out) or _not_regular(target):
        raise DataError(out, None, problem)
    tmp = target.with_name(f".{target.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(target.parent, target.name)
        mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o666 & ~_umask()
        tmp.unlink(missing_ok=True)
        tmp.touch()
        yield tmp
        os.chmod(tmp, mode)
        _fsync(tmp)
        os.replace(tmp, target)
        with contextlib.suppress(OSError):
            _fsync(target.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DataError(out, None, f"cannot write: {err.strerror or err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_safetensors(save_file: Callable[..., None], tensors: dict, path: PathLike,
                      metadata: dict[str, str] | None = None) -> None:
    """`save_file(tensors, tmp)` (safetensors' numpy or torch one) into `path` atomically; its I/O errors
    (a full disk) end as every write's: one line naming `path`. safetensors writes through a temporary file of
    its own beside the path it is given: it is given one in a staging folder of this process, which a killed
    run leaves to the next write's clean-up (`remove_leftovers`), never a stray file of the model's size."""
    from safetensors import SafetensorError

    target = _target(Path(path))
    staging = target.with_name(f".{target.name}.staging.{os.getpid()}{TMP_SUFFIX}")
    with atomic_path(path) as tmp:
        try:
            staging.mkdir(exist_ok=True)
            save_file(tensors, str(staging / target.name), metadata=metadata)
            os.replace(staging / target.name, tmp)
        except SafetensorError as err:  # not an OSError: "I/O error: No space left on device (os error 28)"
            raise OSError(str(err)) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8", newline: str | None = None) -> None:
    """Write `text` to `path` atomically (`newline=""` writes line endings as they are in `text`)."""
    with open_text_atomic(path, encoding, newline) as handle:
        handle.write(text)


def _empty_folder_beside(target: Path, folder: Path) -> None:
    """Make `folder` (a temporary sibling of `target`) new and empty; the leftovers of killed runs go."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target.parent, target.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()


@contextlib.contextmanager
def atomic_files(folder: PathLike, names: Iterable[str]) -> Iterator[Path]:
    """Yield a temporary folder to write files of `names` into; on success each replaces its namesake in
    `folder` (through a link), and a name not written is removed from `folder`; on failure `folder` is unchanged."""
    out = Path(folder)
    names = list(names)
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "is not a folder (the output is a folder)")
    for name in names:
        if problem := _not_regular(out / name):
            raise DataError(out / name, None, problem)
    base = _target(out)
    stage = base.with_name(f".{base.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        _empty_folder_beside(base, stage)
        yield stage
        base.mkdir(exist_ok=True)
        for name in names:  # every file is written (and fsynced by its writer): now put them in place
            if (stage / name).exists():
                os.replace(stage / name, _target(out / name))
            elif os.path.lexists(out / name):
                os.unlink(out / name)
        with contextlib.suppress(OSError):
            _fsync(base)
    except OSError as err:
        raise DataError(out, None, f"cannot write: {err.strerror or err}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def open_text_atomic(path: PathLike, encoding: str = "utf-8", newline: str | None = None) -> Iterator[TextIO]:
    """A text handle to write `path` piece by piece; what was written replaces `path` atomically when the
    block ends without an error (`write_text_atomic` in pieces: a large output is never held whole)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding=encoding, newline=newline) as handle:
        yield handle


@contextlib.contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces the folder `path` in one rename."""
    out = Path(path)
    target = _target(out)
    if target.exists() and not target.is_dir():
        raise DataError(out, None, "is not a folder (the output is a folder)")
    tmp = target.with_name(f".{target.name}.{os.getpid()}{TMP_SUFFIX}")
    old = target.with_name(f".{target.name}.{os.getpid()}{OLD_SUFFIX}")
    try:
        _empty_folder_beside(target, tmp)
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file() and not file.is_symlink():
                os.chmod(file, 0o666 & ~_umask())  # safetensors writes 0600; outputs get the usual permissions
                _fsync(file)
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            if old.exists():
                os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(out, None, f"cannot write: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
