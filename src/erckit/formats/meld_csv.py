"""MELD-style CSV (MELD, and BMELD with its Chinese `Target` column, GBK encoded)."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TextIO

from erckit.data import DataError, Dialogue, Utterance
from erckit.formats.encoding import LIMITS
from erckit.labels import MELD_NAMES, not_yet_labelled, read_gold_label

# A field may be as long as an input file may be (csv's default stops at 128 KiB). csv has no per-reader
# setting: its limit is process-wide, so it is raised once, here, for every reader.
csv.field_size_limit(max(csv.field_size_limit(), LIMITS["input"]))

DIALOGUE = "Dialogue_ID"
UTTERANCE = "Utterance_ID"
SPEAKER = "Speaker"
LABEL = "Emotion"
TEXT_COLUMNS = ("Target", "Utterance")  # the first present is the default text column
CONFIDENCE = "Confidence"  # written by `erckit combine --confidence`: the written label's probability
_CANONICAL = {name.lower(): name for name in (DIALOGUE, UTTERANCE, SPEAKER, LABEL, *TEXT_COLUMNS, CONFIDENCE)}
_SEPARATORS = {"\t": "tabs", ";": "semicolons"}


def _records(text: str, path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(file line where it starts, fields) of each record, a blank line as []; malformed CSV is refused
    naming the line where its record starts."""
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(path, f"line {line}", f"malformed CSV: {err}") from None
        yield line, row
        line = reader.line_num + 1


def file_line(line: int) -> str:
    """How an error names a row: by the file line where it starts."""
    return f"line {line}"


def _rows(text: str, path: str | Path, row_name: Callable[[int], str] = file_line,
          ) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header, and (file line, fields) of each non-blank row; a row with the wrong number of fields is
    refused, named by `row_name`."""
    records = _records(text, path)
    first = next(records, None)
    if first is None:
        raise DataError(path, None, "empty CSV file")
    header = [_CANONICAL.get(name.strip().lower(), name.strip()) for name in first[1]]  # dialogue_id: Dialogue_ID
    if missing := [column for column in (DIALOGUE, UTTERANCE, SPEAKER) if column not in header]:
        separated = next((f"; the fields look separated by {name}: a CSV file separates them by commas"
                          for mark, name in _SEPARATORS.items() if len(header) == 1 and mark in header[0]), "")
        raise DataError(path, "header", f"missing column {missing[0]!r} (a MELD-style CSV has {DIALOGUE}, {UTTERANCE}, "
                                        f"{SPEAKER} and a text column); its columns: {', '.join(header)}{separated}")
    rows = []
    for line, row in records:
        if any(field.strip() for field in row):
            if len(row) != len(header):
                raise DataError(path, row_name(line), f"has {len(row)} fields, the header has {len(header)}")
            rows.append((line, row))
    return header, rows


def _utterance_id(row: list[str], header: list[str], path: str | Path, where: str) -> tuple[int, int, str]:
    dialogue, utterance = (_whole_number(row[header.index(column)], column, path, where) for column in (DIALOGUE, UTTERANCE))
    return dialogue, utterance, utterance_id(dialogue, utterance)


def _whole_number(value: str, column: str, path: str | Path, where: str) -> int:
    """A numbering cell: a whole number, written as one or as a spreadsheet's float (3.0)."""
    if not value.strip():
        raise DataError(path, where, f"empty {column}")
    try:
        return int(value)
    except ValueError:
        with contextlib.suppress(ValueError):
            if (number := float(value)).is_integer():
                return int(number)
    raise DataError(path, where, f"{column} {value.strip()!r} is not a whole number (a MELD-style CSV numbers "
                                          "its dialogues and turns; for ids of your own, write JSON lines)")


def utterance_id(dialogue: int, utterance: int) -> str:
    """The erckit id of a MELD row: `dia<Dialogue_ID>_utt<Utterance_ID>`."""
    return f"dia{dialogue}_utt{utterance}"


def parse(text: str, path: str | Path, *, text_column: str | None = None,
          row_name: Callable[[int], str] = file_line) -> list[Dialogue]:
    """Dialogues in order of first appearance, utterances ordered by Utterance_ID; an error names its row by
    `row_name` of the file line where the row starts (a DataFrame's reader: by its index label)."""
    header, rows = _rows(text, path, row_name)
    text_column = text_column and _CANONICAL.get(text_column.lower(), text_column)  # as the header's names are read
    column = text_column or next((c for c in TEXT_COLUMNS if c in header), None)
    if column is None or column not in header:
        wanted = f"no column {text_column!r}" if text_column else (
            f"no text column ({' or '.join(TEXT_COLUMNS)}; name another with --text-column)")
        raise DataError(path, "header", f"{wanted}; its columns: {', '.join(header)}")
    text_at, speaker_at = header.index(column), header.index(SPEAKER)
    label_at = header.index(LABEL) if LABEL in header else None
    grouped: dict[int, list[tuple[int, Utterance]]] = {}
    lines: dict[str, int] = {}  # utterance id -> its line
    for line, row in rows:
        dialogue, position, utt_id = _utterance_id(row, header, path, row_name(line))
        where = f"{row_name(line)}, utterance {utt_id}"
        if utt_id in lines:
            raise DataError(path, where, f"duplicate utterance id ({row_name(lines[utt_id])} has it too)")
        lines[utt_id] = line
        label = read_gold_label(row[label_at], path, where) if label_at is not None else None
        if not row[speaker_at].strip():
            raise DataError(path, where, f"empty {SPEAKER}")
        if not row[text_at].strip():
            raise DataError(path, where, f"empty {column}")
        utt = Utterance(utt_id, row[speaker_at].strip(), row[text_at].strip(), label)
        grouped.setdefault(dialogue, []).append((position, utt))
    return [
        Dialogue(f"dia{d}", tuple(u for _, u in sorted(utts, key=lambda pair: pair[0])))
        for d, utts in grouped.items()
    ]


def write_labels(text: str, path: str | Path, labels: Mapping[str, str], out: TextIO,
                 confidence: Mapping[str, float] | None = None) -> None:
    """Write to `out` the CSV with the Emotion column set from `labels`, in MELD's words (joy, sadness, ...) where
    the file's own labels are all MELD's words (or it has none), else in erckit's names (Happy, Sad, ...); with
    `confidence`, a Confidence column too (added at the end where the file has none)."""
    header, rows = _rows(text, path)
    raw_header = next(csv.reader(io.StringIO(text, newline="")))
    for column in (LABEL, *([CONFIDENCE] if confidence is not None else [])):
        if column not in header:
            header.append(column)
            raw_header.append(column)
            rows = [(line, row + [""]) for line, row in rows]
    label_at = header.index(LABEL)
    meld_words = set(MELD_NAMES.values())
    present = {row[label_at].strip() for _, row in rows if not not_yet_labelled(row[label_at])}
    uses_meld_words = present <= meld_words  # an unlabelled MELD file gets MELD's words; happy, sad, neutral: not
    first_line = text[: text.find("\n")] if "\n" in text else text  # its ending: a quoted field may hold another
    writer = csv.writer(out, lineterminator="\r\n" if first_line.endswith("\r") else "\n")
    writer.writerow(raw_header)
    for line, row in rows:
        _, _, utt_id = _utterance_id(row, header, path, file_line(line))
        if utt_id in labels:
            label = labels[utt_id]
            row[label_at] = MELD_NAMES[label] if uses_meld_words else label
        if confidence is not None and utt_id in confidence:
            row[header.index(CONFIDENCE)] = str(confidence[utt_id])
        writer.writerow(row)
