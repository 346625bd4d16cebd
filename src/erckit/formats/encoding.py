"""Reading a text file whose encoding may be UTF-8 or GBK (BMELD's CSVs are GBK); JSON and JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from erckit.data import DataError

AUTO_ENCODINGS = ("utf-8-sig", "gbk")


def read_text(path: str | Path, encoding: str | None = None) -> tuple[str, str]:
    """The file's text and the encoding that decoded it: one encoding for the whole file (tried in
    order: UTF-8, GBK); a file mixing them, or cut in the middle of a character, is refused."""
    return decode_text(read_bytes(path), path, encoding)


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes; an unreadable file is refused, naming it."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise DataError(path, None, f"cannot read: {err.strerror}") from None


def decode_text(raw: bytes, path: str | Path, encoding: str | None = None) -> tuple[str, str]:
    """`read_text` of bytes already read from `path`."""
    encodings = (encoding,) if encoding else AUTO_ENCODINGS
    first_error: UnicodeDecodeError | None = None
    for name in encodings:
        try:
            text = raw.decode(name)
        except UnicodeDecodeError as err:
            if _truncated(raw, err, name):
                line = raw[: err.start].count(b"\n") + 1
                raise DataError(path, f"line {line}", "ends in the middle of a character (a truncated file?)") from None
            first_error = first_error or err
        except LookupError:
            raise DataError(path, None, f"unknown encoding {name!r}") from None
        else:
            if "\x00" in text:  # UTF-16/32 bytes decode "validly" as GBK
                line = text[: text.index("\x00")].count("\n") + 1
                raise DataError(path, f"line {line}", "holds NUL characters (UTF-16? wrong encoding)")
            if encoding is None and name != encodings[0]:
                check_one_encoding(raw, path)
            return text, name
    assert first_error is not None
    if encoding is None:
        check_one_encoding(raw, path)
    line = raw[: first_error.start].count(b"\n") + 1
    tried = " or ".join(encodings)
    raise DataError(path, f"line {line}, byte {first_error.start}", f"is not valid {tried} text (wrong encoding?)")


def _truncated(raw: bytes, err: UnicodeDecodeError, encoding: str) -> bool:
    """Whether the only decoding error is a character cut off at the end of the file."""
    cut = err.end == len(raw) and ("end of data" in err.reason or "incomplete" in err.reason)
    return cut and _decodes(raw[: err.start], encoding)


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def check_one_encoding(raw: bytes, path: str | Path) -> None:
    """Refuse a file whose non-ASCII lines are partly UTF-8 and partly GBK, naming the first line of the
    rarer kind (e.g. UTF-8 rows appended to a GBK CSV, which would decode whole as GBK mojibake)."""
    kinds: dict[str, list[int]] = {"UTF-8": [], "GBK": []}
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if line.isascii():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            if _decodes(line, "gbk"):
                kinds["GBK"].append(number)
        else:  # a short GBK line may be valid 2-byte UTF-8 by chance (哦 = C5 B6); CJK in UTF-8 takes 3 bytes
            if any(ord(char) >= 0x800 for char in text):
                kinds["UTF-8"].append(number)
    if kinds["UTF-8"] and kinds["GBK"]:
        rare, common = sorted(kinds, key=lambda k: (len(kinds[k]), k))
        raise DataError(
            path, f"line {kinds[rare][0]}",
            f"is {rare} but line {kinds[common][0]} is {common}: the file mixes encodings (save it in one)",
        )


def read_json(path: str | Path) -> object:
    """A UTF-8 JSON file (a BOM is allowed); malformed JSON is refused with its line."""
    try:
        return json.loads(read_text(path, "utf-8-sig")[0])
    except json.JSONDecodeError as err:
        raise DataError(path, f"line {err.lineno}", f"malformed JSON: {err.msg}") from None


def json_lines(text: str, path: str | Path) -> list[tuple[int, object]]:
    """(line number, value) of JSON-lines text, blank lines skipped (`iter_json_lines`)."""
    return list(iter_json_lines(text, path))


def iter_json_lines(text: str, path: str | Path) -> Iterator[tuple[int, object]]:
    """(line number, value) of JSON-lines text one line at a time, blank lines skipped.

    Lines end at "\n" only: `str.splitlines` would also split at U+2028 and U+0085, which
    `json.dumps(ensure_ascii=False)` writes raw inside strings.
    """
    start, number = 0, 0
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        line, start, number = text[start:end], end + 1, number + 1
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(path, f"line {number}", f"malformed JSON: {err.msg} (column {err.colno})") from None
