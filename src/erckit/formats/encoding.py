"""Reading a text file whose encoding may be UTF-8 or GBK (BMELD's CSVs are GBK); JSON and JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from erckit.data import DataError

AUTO_ENCODINGS = ("utf-8-sig", "gbk")


def read_text(path: str | Path, encoding: str | None = None) -> tuple[str, str]:
    """The file's text and the encoding that decoded it (tried in order: UTF-8, GBK)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise DataError(path, None, f"cannot read: {err.strerror}") from None
    encodings = (encoding,) if encoding else AUTO_ENCODINGS
    first_error: UnicodeDecodeError | None = None
    for name in encodings:
        try:
            text = raw.decode(name)
        except UnicodeDecodeError as err:
            first_error = first_error or err
        except LookupError:
            raise DataError(path, None, f"unknown encoding {name!r}") from None
        else:
            if "\x00" in text:  # UTF-16/32 bytes decode "validly" as GBK
                line = text[: text.index("\x00")].count("\n") + 1
                raise DataError(path, f"line {line}", "holds NUL characters (UTF-16? wrong encoding)")
            return text, name
    assert first_error is not None
    line = raw[: first_error.start].count(b"\n") + 1
    tried = " or ".join(encodings)
    raise DataError(path, f"line {line}, byte {first_error.start}", f"is not valid {tried} text (wrong encoding?)")


def read_json(path: str | Path) -> object:
    """A UTF-8 JSON file (a BOM is allowed); malformed JSON is refused with its line."""
    try:
        return json.loads(read_text(path, "utf-8-sig")[0])
    except json.JSONDecodeError as err:
        raise DataError(path, f"line {err.lineno}", f"malformed JSON: {err.msg}") from None


def json_lines(text: str, path: str | Path) -> list[tuple[int, object]]:
    """(line number, value) of JSON-lines text, blank lines skipped.

    Lines end at "\n" only: `str.splitlines` would also split at U+2028 and U+0085, which
    `json.dumps(ensure_ascii=False)` writes raw inside strings.
    """
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(path, f"line {number}", f"malformed JSON: {err.msg} (column {err.colno})") from None
    return rows
