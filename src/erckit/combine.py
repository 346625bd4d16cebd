"""`erckit combine`: write predicted labels back into the raw test file, aligned by utterance id."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from erckit.data import DataError, iter_utterances
from erckit.formats import read_dialogue_file, write_labels
from erckit.predictions import check_ids
from erckit.progress import steps


def combine(
    labels: Mapping[str, str],
    raw: str | Path,
    out: str | Path,
    *,
    predictions_path: str | Path = "predictions",
    format: str | None = None,
    text_column: str | None = None,
    encoding: str | None = None,
    confidence: Mapping[str, float] | None = None,
    progress: bool = False,
) -> tuple[int, int]:
    """Write `out`: the raw file's structure with every predicted label (utterance id -> label) written in.
    The raw file is read (and checked) before it is written out again, one after the other (a file changed in
    between is refused), and the output is written in pieces: memory holds the labels and one copy of the raw
    file. `confidence`: each label's probability, written beside it (`formats.write_labels`). Returns the count of
    labels written, and how many of them replaced a label the raw file had."""
    with steps(2, "combine", show=progress) as begin:
        begin(f"checking {Path(raw).name}")
        dialogues, digest = read_dialogue_file(raw, format, text_column=text_column, encoding=encoding)
        ids = [u.id for u in iter_utterances(dialogues)]
        check_ids(labels.keys(), ids, predictions_path, raw)
        replaced = sum(u.label is not None for u in iter_utterances(dialogues))
        del dialogues, ids  # before the raw file is read again
        begin(f"writing {Path(out).name}")
        write_labels(raw, labels, out, format, encoding=encoding, sha256=digest, confidence=confidence)
    return len(labels), replaced


def check_suffix(raw: str | Path, out: str | Path) -> None:
    """Refuse an output named as CSV for a JSON raw file, or as JSON for a CSV one: it keeps the raw file's format."""
    known = (".csv", ".json", ".jsonl")
    given, kept = Path(out).suffix.lower(), Path(raw).suffix.lower()
    if given in known and kept in known and (given == ".csv") != (kept == ".csv"):
        raise DataError(out, None, f"is named {given}, but the labelled file keeps the format of {raw}: name it {kept}")
