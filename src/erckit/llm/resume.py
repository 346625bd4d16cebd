"""The progress file that makes `erckit predict` (and `erckit select`) resumable.

`<out>.partial`: a header line naming the run's settings, then one JSON line per finished unit — for
predict an id (`{"id", "label", "probs"?, "raw"?}`; label null for an unparsed generated answer), appended
batch by batch; for select a scored checkpoint — each write flushed and fsynced. A run killed mid-write
leaves at most one torn last line, which the next run cuts off; a file from a run with other settings is
refused, never mixed in. A run holds an exclusive lock on `<out>.partial.lock` (filelock: flock on POSIX,
msvcrt on Windows): a second run into the same output is refused while it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from erckit.data import DataError
from erckit.formats.encoding import decode_text, json_problem, read_bytes
from erckit.predictions import prediction_from_record
from erckit.runfolder import exclusive

PARTIAL_FORMAT = 1


@dataclass(frozen=True)
class Outcome:
    """A backend's answer for one prompt; `label` is None only for an unparsed generated answer."""

    label: str | None
    probs: dict[str, float] | None = None
    raw: str | None = None


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def lock_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".lock")


@contextlib.contextmanager
def lock_partial(path: Path, command: str = "predict") -> Iterator[None]:
    """Hold an exclusive lock beside the partial file for a whole run: a second run into the same output
    is refused instead of mixing its lines in. An empty partial file and the lock file are removed at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(lock_path(path), path, f"is in use by another erckit {command} writing the same --out",
                   "wait for it to finish or choose another --out"):
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                info = path.lstat()
                if stat.S_ISREG(info.st_mode) and info.st_size == 0:  # never a FIFO or a link given in its place
                    path.unlink()


def outcome_line(utt_id: str, outcome: Outcome) -> str:
    record = {"id": utt_id, "label": outcome.label}
    record |= {k: v for k, v in (("probs", outcome.probs), ("raw", outcome.raw)) if v is not None}
    return json.dumps(record, ensure_ascii=False) + "\n"


def read_progress(path: Path, settings: dict, what: str = "partial predictions") -> list[tuple[int, object]]:
    """(line number, record) of each line an earlier run with the same settings wrote after its header; a torn
    last line is cut off the file. `what`: the file's kind, for errors."""
    if not path.exists():
        return []
    data = read_bytes(path)
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):  # killed mid-write: drop the torn line so appends start clean
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    lines = [line for line in decode_text(complete, path, "utf-8")[0].split("\n") if line]  # U+2028 may be in an answer
    if not lines:
        return []
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("erckit_partial") != PARTIAL_FORMAT:
        raise DataError(path, "line 1", f"is not an erckit {what} file; delete it to start over")
    if header.get("settings") != settings:
        changed = sorted(k for k in settings.keys() | header.get("settings", {}).keys()
                         if settings.get(k) != header.get("settings", {}).get(k))
        raise DataError(
            path, None,
            f"was written by a run with other settings ({', '.join(changed)} differ); rerun that command "
            "to finish it, or delete the file to start over",
        )
    records = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(path, f"line {number}", f"malformed JSON ({json_problem(err)}); delete the file to start over")
    return records


def read_partial(path: Path, settings: dict, ids: set[str]) -> dict[str, Outcome]:
    """Outcomes saved by an earlier run with the same settings (`read_progress`)."""
    done: dict[str, Outcome] = {}
    for number, record in read_progress(path, settings):
        utt_id, outcome = resumed_outcome(record, path, f"line {number}")
        if utt_id not in ids:
            raise DataError(path, f"line {number}", f"id {utt_id!r} is not among the inputs")
        if utt_id in done:
            raise DataError(path, f"line {number}", f"duplicate id {utt_id!r}")
        done[utt_id] = outcome
    return done


def resumed_outcome(record: object, path: Path, where: str) -> tuple[str, Outcome]:
    """(id, outcome) of a resumed line, checked as a predictions.jsonl line is (`prediction_from_record`);
    only an unparsed generated answer has label null, and then its raw answer and nothing else."""
    if isinstance(record, dict) and "label" in record and record["label"] is None:
        if set(record) != {"id", "label", "raw"} or not isinstance(record["id"], str) or not isinstance(record["raw"], str):
            raise DataError(path, where, 'a null label (an unparsed answer) comes with "id" and "raw" strings only; '
                            "delete the file to start over")
        return record["id"], Outcome(None, raw=record["raw"])
    prediction = prediction_from_record(record, path, where)
    return prediction.id, Outcome(prediction.label, prediction.probs, prediction.raw)


@contextlib.contextmanager
def progress_writer(path: Path, settings: dict) -> Iterator[Callable[[str], None]]:
    """Yields `write(text)`: appended, flushed and fsynced per call; a new file gets the settings' header with
    its first text (a run that fails before any leaves an empty file, which `lock_partial` removes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [] if path.exists() and path.stat().st_size else [
        json.dumps({"erckit_partial": PARTIAL_FORMAT, "settings": settings}) + "\n"]
    with open(path, "a", encoding="utf-8") as handle:

        def write(text: str) -> None:
            handle.write("".join(header) + text)
            handle.flush()
            os.fsync(handle.fileno())
            header.clear()

        yield write


@contextlib.contextmanager
def partial_writer(path: Path, settings: dict) -> Iterator[Callable[[Sequence[str], Sequence[Outcome]], None]]:
    """Yields `append(ids, outcomes)`: one JSON line per id, flushed and fsynced per call (per batch)."""
    with progress_writer(path, settings) as write:
        yield lambda ids, outcomes: write("".join(outcome_line(i, o) for i, o in zip(ids, outcomes, strict=True)))
