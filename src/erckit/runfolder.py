"""A training run's `out` folder: what it may be, and the lock a run holds on it.

`out` is a new folder, an empty one, or an erckit run (it has `erckit_model.json`; whether that run is
reused, resumed or refused is `erckit.models`' decision). Any other folder (a home folder, `/`) is
refused before anything is written into it. A run holds an exclusive lock on `out/.erckit-train.lock`
(filelock) for its whole duration, the lock file naming its process: a second run into the same folder
is refused instead of mixing its files in. In a multi-process launch (torchrun) only the main process,
the one that writes, takes the lock; the launcher stops the others when it is refused.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from erckit.atomic import OLD_SUFFIX, TMP_SUFFIX
from erckit.data import DataError

LOCK_NAME = ".erckit-train.lock"
LEFT_BY_ERCKIT = (LOCK_NAME, TMP_SUFFIX, OLD_SUFFIX)  # name endings of a killed run's lock and temporary files


def check_out(out: Path, marker: str) -> None:
    """Refuse an `out` that is a file, or a folder holding anything but an erckit run (`marker` file)
    or what a killed run leaves (its lock, temporary files)."""
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "is not a folder (out= is the run's folder)")
    if not out.is_dir() or (out / marker).exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if not p.name.endswith(LEFT_BY_ERCKIT))
    if foreign:
        shown = ", ".join(foreign[:3]) + (" …" if len(foreign) > 3 else "")
        raise DataError(out, None, f"is a folder that is not an erckit run (no {marker}; it holds {shown}): "
                        "choose a new or empty output folder (nothing was written)")


def _holder(path: Path) -> str:
    """' (pid N)' of the process holding the lock file, when it says."""
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(path.read_text().strip())})"
    return ""


@contextlib.contextmanager
def exclusive(lock_file: Path, guarded: Path, busy: str, advice: str) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (filelock, never waiting) for the block, the file naming this
    process; a second holder is refused: `<guarded>: <busy> (pid N); <advice>`. A lock path that is a link or
    anything but a regular file is refused (the lock would write through it); the lock file is removed at
    the end."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(lock_file.lstat().st_mode):
            raise DataError(lock_file, None, "is not a regular file (a link?): remove it and run again")
    lock = FileLock(lock_file, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DataError(guarded, None, f"{busy}{_holder(lock_file)}; {advice}") from None
    try:
        lock_file.write_text(f"{os.getpid()}\n")
        yield
    finally:
        lock.release()
        with contextlib.suppress(OSError):  # a run waiting on the old file sees it unlinked and retries
            lock_file.unlink()


@contextlib.contextmanager
def hold(out: Path, marker: str, *, main: bool = True) -> Iterator[None]:
    """Check `out` (`check_out`) and hold its lock for the duration; `main`: this process writes (the
    others of a multi-process launch only check). A folder this run created is removed again if the run
    leaves it empty."""
    check_out(out, marker)
    if not main:
        yield
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive(out / LOCK_NAME, out, "is being written by another erckit run",
                       "wait for it to finish or choose another out="):
            yield
    finally:
        if created:
            with contextlib.suppress(OSError):  # only an empty folder
                out.rmdir()
