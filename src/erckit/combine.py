"""`erckit combine`: write predicted labels back into the raw test file, aligned by utterance id."""

from __future__ import annotations

import codecs
from pathlib import Path

from erckit.atomic import write_text_atomic
from erckit.data import DataError, iter_utterances
from erckit.formats import read_dialogues, resolve_format, write_labels
from erckit.formats.encoding import open_file
from erckit.predictions import Prediction


def check_ids(predicted: set[str], expected: list[str], predictions_path: str | Path, raw_path: str | Path) -> None:
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
    predictions: dict[str, Prediction],
    raw: str | Path,
    out: str | Path,
    *,
    predictions_path: str | Path = "predictions",
    format: str | None = None,
    text_column: str | None = None,
    encoding: str | None = None,
) -> int:
    """Write `out`: the raw file's structure with every predicted label written in. Returns the count."""
    fmt = resolve_format(raw, format, encoding)
    dialogues = read_dialogues(raw, fmt, text_column=text_column, encoding=encoding)
    check_ids(set(predictions), [u.id for u in iter_utterances(dialogues)], predictions_path, raw)
    text, used_encoding = write_labels(raw, {i: p.label for i, p in predictions.items()}, fmt, encoding=encoding)
    if used_encoding == "utf-8-sig":
        with open_file(raw) as handle:  # keep a byte-order mark if the raw file has one
            used_encoding = "utf-8-sig" if handle.read(3) == codecs.BOM_UTF8 else "utf-8"
    write_text_atomic(out, text, encoding=used_encoding, newline="")  # line endings as in the raw file
    return len(predictions)
