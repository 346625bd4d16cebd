"""Readers and label writers for the dialogue file formats, detected from content."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from erckit.atomic import open_text_atomic
from erckit.data import DataError, Dialogue, check_dialogues
from erckit.formats import jsonl, m3ed, meld_csv
from erckit.formats.encoding import decode_text, read_bytes, read_text

FORMATS = ("m3ed", "csv", "jsonl")
_MODULES = {"m3ed": m3ed, "csv": meld_csv, "jsonl": jsonl}


def detect_format(text: str) -> str:
    """'m3ed' for one JSON object, 'jsonl' for one JSON object per line, else 'csv'. Dialogue objects written
    over several lines are 'jsonl' too, so that the JSON-lines reader names their fault."""
    stripped = text.lstrip()
    if not stripped.startswith("{"):
        return "csv"
    with contextlib.suppress(json.JSONDecodeError):
        return "jsonl" if _is_dialogue(json.loads(stripped)) else "m3ed"
    with contextlib.suppress(json.JSONDecodeError):  # an object per line, or one object (then read to name its fault)
        json.loads(stripped.split("\n", 1)[0])
        return "jsonl"
    with contextlib.suppress(json.JSONDecodeError):  # its first value: a pretty-printed dialogue?
        return "jsonl" if _is_dialogue(json.JSONDecoder().raw_decode(stripped)[0]) else "m3ed"
    return "m3ed"


def holds_dialogues(path: str | Path) -> bool:
    """Whether a labelled file is a dialogue file (CSV, an M3ED object, JSON lines of dialogues) rather than
    predictions.jsonl, whose objects name an "id" and no "utterances". Decided on the file's first JSON value;
    where that is malformed, a file whose first line is a bare "{" is an M3ED object written over several
    lines, anything else JSON lines. An empty file says no (the predictions reader names it)."""
    text = read_text(path)[0].lstrip()
    if not text.startswith("{"):
        return bool(text)  # CSV (or a JSON list, which the dialogue readers refuse saying so)
    try:
        first = json.JSONDecoder().raw_decode(text)[0]
    except json.JSONDecodeError:
        return text.split("\n", 1)[0].strip() == "{"
    return _is_dialogue(first) or "id" not in first


def _is_dialogue(data: object) -> bool:
    """Whether a JSON value is an erckit JSON-lines dialogue (an object with "utterances")."""
    return isinstance(data, dict) and "utterances" in data


def _check_not_json_list(text: str, path: str | Path) -> None:
    """A JSON list is no dialogue format; say so rather than reading it as a CSV."""
    if text.lstrip().startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError:
            return
        raise DataError(path, None, "is a JSON list: expected an annotation_*.json object, erckit JSON lines "
                        "or a MELD-style CSV (a prepared data_test.json goes to --prepared)")


def _known(format: str, path: str | Path) -> str:
    """`format`, refused unless it is one of FORMATS."""
    if format not in FORMATS:
        raise DataError(path, None, f"unknown format {format!r} (choose from {', '.join(FORMATS)})")
    return format


def _detected(text: str, path: str | Path) -> str:
    """The format of a dialogue file's text (`detect_format`); an empty file or a JSON list is refused."""
    if not text.strip():
        raise DataError(path, None, "is empty")
    _check_not_json_list(text, path)
    return detect_format(text)


def read_dialogues(
    path: str | Path,
    format: str | None = None,
    *,
    text_column: str | None = None,
    encoding: str | None = None,
) -> list[Dialogue]:
    """Read and validate a dialogue file of any supported format."""
    return read_dialogue_file(path, format, text_column=text_column, encoding=encoding)[0]


def read_dialogue_file(
    path: str | Path,
    format: str | None = None,
    *,
    text_column: str | None = None,
    encoding: str | None = None,
) -> tuple[list[Dialogue], str]:
    """`read_dialogues`, and the sha256 of the file's bytes (the file is read once)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "no such file")
    raw = read_bytes(path)
    text, _ = decode_text(raw, path, encoding)
    fmt = _known(format, path) if format is not None else _detected(text, path)
    if fmt == "csv":
        dialogues = meld_csv.parse(text, path, text_column=text_column)
    elif text_column is not None:
        raise DataError(path, None, f"is not CSV ({fmt}): a text column (--text-column, data.text_column) names a CSV "
                                    "column; remove it")
    else:
        dialogues = _MODULES[fmt].parse(text, path)
    return check_dialogues(dialogues, path), hashlib.sha256(raw).hexdigest()


def write_labels(
    raw_path: str | Path,
    labels: Mapping[str, str],
    out: str | Path,
    format: str | None = None,
    *,
    encoding: str | None = None,
    sha256: str | None = None,
    confidence: Mapping[str, float] | None = None,
) -> None:
    """Write `out` (atomically, in pieces): the raw file with `labels` (utterance id -> label) written in, and
    each label's probability where `confidence` is given (a Confidence column, or a key beside the label).

    Every other value of the raw file is preserved, and so are its encoding (a byte-order mark too) and
    line endings; the caller checks that the ids match, on the file whose digest it passes as `sha256`
    (a file changed since is refused).
    """
    raw = read_bytes(raw_path)
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise DataError(raw_path, None, "changed while it was being read: run the command again")
    text, used_encoding = decode_text(raw, raw_path, encoding)
    fmt = _known(format, raw_path) if format is not None else _detected(text, raw_path)
    if used_encoding == "utf-8-sig":  # it reads a file without a byte-order mark too: keep one if it has one
        used_encoding = "utf-8-sig" if raw.startswith(codecs.BOM_UTF8) else "utf-8"
    del raw  # the text is written out in pieces: memory holds one copy of the file
    first_break = text.find("\n")
    crlf = fmt != "csv" and first_break > 0 and text[first_break - 1] == "\r"  # CSV's writer keeps its own
    with open_text_atomic(out, used_encoding, newline="\r\n" if crlf else "") as handle:
        _MODULES[fmt].write_labels(text, raw_path, labels, handle, confidence)
