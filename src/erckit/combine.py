"""`erckit combine`: write predicted labels back into the raw test file, aligned by utterance id."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path

from erckit.data import DataError, iter_utterances
from erckit.formats import read_dialogues, resolve_format, write_labels
from erckit.progress import steps


def check_ids(
    predicted: AbstractSet[str], expected: list[str], predictions_path: str | Path, raw_path: str | Path
) -> None:
    """Refuse predictions that miss an utterance of the raw file or name one it does not have."""
    missing = [i for i in expected if i not in predicted]
    if missing:
        shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
        raise DataError(predictions_path, None, f"{len(missing)} utterance id(s) of {raw_path} have no prediction: {shown}")
    extra = sorted(predicted - set(expected))
    if extra:
        shown = ", ".join(extra[:3]) + (" …" if len(extra) > 3 else "")
        raise DataError(predictions_path, None, f"{len(extra)} predicted id(s) are not in {raw_path}: {shown}")


def combine(
    labels: Mapping[str, str],
    raw: str | Path,
    out: str | Path,
    *,
    predictions_path: str | Path = "predictions",
    format: str | None = None,
    text_column: str | None = None,
    encoding: str | None = None,
    progress: bool = False,
) -> int:
    """Write `out`: the raw file's structure with every predicted label (utterance id -> label) written in.
    The raw file is read (and checked) before it is written out again, one after the other, and the output
    is written in pieces: memory holds the labels and one copy of the raw file. Returns the count."""
    with steps(2, "combine", show=progress) as begin:
        begin(f"checking {Path(raw).name}")
        fmt = resolve_format(raw, format, encoding)
        ids = [u.id for u in iter_utterances(read_dialogues(raw, fmt, text_column=text_column, encoding=encoding))]
        check_ids(labels.keys(), ids, predictions_path, raw)
        del ids  # before the raw file is read again
        begin(f"writing {Path(out).name}")
        write_labels(raw, labels, out, fmt, encoding=encoding)
    return len(labels)
