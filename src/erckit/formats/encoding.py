"""The one reader of every file erckit opens: checked, then decoded (UTF-8 or GBK: BMELD's CSVs are GBK);
JSON and JSON lines.

Every input erckit parses itself (data, predictions, a recipe, a model folder's settings files, a resume
file) is read by `read_bytes`: it must be a regular file (a FIFO, a device such as /dev/zero, also through
a link, or a folder is refused before anything is read; `open_file` never waits on a FIFO) no larger than
its kind's limit (LIMITS: 1 GiB for an input, 16 MiB for a recipe and a model folder's settings files);
then its text must be in one encoding. Files hashed are opened by `open_file`; weight files, read by
safetensors, and the other files of a model folder, read by transformers, are checked by `check_file`.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from erckit.data import DataError

AUTO_ENCODINGS = ("utf-8-sig", "gbk")
Kind = Literal["input", "settings"]
LIMITS: dict[str, int] = {
    "input": 1 << 30,  # a data file, predictions, a prepared file, a resume file, a model's vocabulary
    "settings": 16 << 20,  # a recipe, erckit_model.json, erckit_llm.json and the other settings files
}


def read_text(path: str | Path, encoding: str | None = None, kind: Kind = "input") -> tuple[str, str]:
    """The file's text and the encoding that decoded it: one encoding for the whole file (tried in
    order: UTF-8, GBK); a file mixing them, or cut in the middle of a character, is refused."""
    return decode_text(read_bytes(path, kind), path, encoding)


def _problem(mode: int, size: int, kind: Kind | None) -> str | None:
    """Why a file of this mode and size is not read, or None."""
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO or a device); give a file"
    if kind is not None and size > LIMITS[kind]:
        return f"is {size:,} bytes, over the {kind} file limit of {LIMITS[kind]:,} bytes"
    return None


def check_file(path: str | Path, kind: Kind | None = None) -> None:
    """Refuse a path that is not a regular file (also through links), or is over its `kind`'s limit."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise DataError(path, None, f"cannot read: {err.strerror}") from None
    if problem := _problem(info.st_mode, info.st_size, kind):
        raise DataError(path, None, problem)


def open_file(path: str | Path, kind: Kind | None = None) -> BinaryIO:
    """A regular file within its `kind`'s limit (`check_file`), opened for reading without blocking: a path
    swapped for a FIFO after the check is refused too, never waited on."""
    check_file(path, kind)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise DataError(path, None, f"cannot read: {err.strerror}") from None
    handle = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    if problem := _problem(info.st_mode, info.st_size, kind):
        handle.close()
        raise DataError(path, None, problem)
    return handle


def read_bytes(path: str | Path, kind: Kind = "input") -> bytes:
    """The bytes of a regular file within its `kind`'s limit (`open_file`)."""
    with open_file(path, kind) as handle:
        try:
            data = handle.read(LIMITS[kind] + 1)
        except OSError as err:
            raise DataError(path, None, f"cannot read: {err.strerror}") from None
    if problem := _problem(stat.S_IFREG, len(data), kind):  # grew while read
        raise DataError(path, None, problem)
    return data


def decode_text(raw: bytes, path: str | Path, encoding: str | None = None) -> tuple[str, str]:
    """`read_text` of bytes already read from `path`."""
    if raw.startswith(b"PK\x03\x04"):  # a zip archive: an .xlsx or .ods workbook, a .docx
        raise DataError(path, None, "is a zip archive (a spreadsheet workbook?), not text: save the sheet as CSV (UTF-8)")
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
                check_not_latin(text, path)
            return text, name
    assert first_error is not None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and encoding is None:
        raise DataError(path, None, "is UTF-16 text: save it as UTF-8 (or GBK)")
    if encoding is None:
        check_one_encoding(raw, path)
    line = raw[: first_error.start].count(b"\n") + 1
    tried = encoding or "UTF-8 or GBK"
    raise DataError(path, f"line {line}, byte {first_error.start}", f"is not {tried} text (wrong encoding? save it "
                    "as UTF-8)")


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


_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")
_LETTERS_END = re.compile(r"[A-Za-z]*\Z")
_LETTERS = re.compile(r".[A-Za-z]*", re.DOTALL)  # a character and the letters after it
# one ideograph (or private-use character: where GBK puts some byte pairs) alone right after a Latin letter
_GLUED = re.compile(r"(?<=[A-Za-z])[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ue000-\uf8ff](?![^\x00-\x7f])")


def check_not_latin(text: str, path: str | Path) -> None:
    """Refuse GBK-decoded text that is really Windows-1252 or Latin-1 (Excel's CSV on Western Windows).

    Read as GBK, each accented letter or curly quote of such a file swallows the next byte, an ASCII letter,
    into one Chinese character inside a Latin word (don’t -> don抰, cafés -> caf閟): an ideograph (or a
    private-use character) whose second GBK byte is ASCII, which Chinese text uses rarely (none is in GB2312)
    and then among others. The rule: when most runs of non-ASCII characters are one such character right
    after an ASCII letter, the file is refused, naming the first. Symbols (GBK's – in A–Z) never count.
    """
    glued = [m.start() for m in _GLUED.finditer(text) if m.group().encode("gbk", "replace")[-1] < 0x80]
    if glued and 2 * len(glued) > sum(1 for _ in _NON_ASCII_RUN.finditer(text)):
        at = glued[0]
        word = _LETTERS_END.search(text, max(0, at - 40), at)[0] + _LETTERS.match(text, at, at + 41)[0]
        raise DataError(path, f"line {text.count(chr(10), 0, at) + 1}",
                        f"is not UTF-8 or GBK text: read as GBK its words hold single Chinese characters "
                        f"({word!r}), the mark of Windows-1252 or Latin-1 text; save it as UTF-8")


def json_problem(err: json.JSONDecodeError) -> str:
    """The JSON parser's message without its dangling "... at" (the place is named beside it):
    "Unterminated string starting at" -> "Unterminated string"."""
    return err.msg.removesuffix(" at").removesuffix(" starting")


def read_json(path: str | Path, kind: Kind = "input") -> object:
    """A UTF-8 JSON file (a BOM is allowed); malformed JSON is refused with its line."""
    try:
        return json.loads(read_text(path, "utf-8-sig", kind)[0])
    except json.JSONDecodeError as err:
        raise DataError(path, f"line {err.lineno}", f"malformed JSON: {json_problem(err)}") from None


_NON_SPACE = re.compile(r"\S")


def iter_json_lines(text: str, path: str | Path, record: str = "object") -> Iterator[tuple[int, object]]:
    """(line number, value) of JSON-lines text one line at a time, blank lines skipped.

    Lines end at "\n" only: `str.splitlines` would also split at U+2028 and U+0085, which
    `json.dumps(ensure_ascii=False)` writes raw inside strings. A line whose JSON is cut off at its end, with
    more text below, gets a hint: one `record` per line (pretty-printed JSON is not JSON lines).
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
                problem = f"malformed JSON: {json_problem(err)} (column {err.colno})"
                if err.pos >= len(line.rstrip()) and _NON_SPACE.search(text, start):  # cut off, text below
                    problem += f"; JSON lines need one {record} per line, this one goes on below (pretty-printed?)"
                raise DataError(path, f"line {number}", problem) from None
