"""How an attendee file is decoded and its delimiter and header found, before anything is imported."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TextIO

from engage.errors import ImportFileError
from engage.importer.fields import _FIELD_BY_ALIAS, IGNORE, fold

_SEP_LINE_RE = re.compile(r'^\ufeff?"?sep=(.)"?[,;\t]*\r?\n?$', re.IGNORECASE)


_DELIMITERS = (",", ";", "\t")


_BLOCK = 1 << 16


# Tools put a title or an export date above the header now and then; look that far for it.
_HEADER_SEARCH_RECORDS = 10


_SAMPLE_LINES = 200


_SAMPLE_CHARS = 1 << 16


def _records(stream: TextIO, delimiter: str, has_sep_line: bool) -> Iterator[tuple[int, list[str]]]:
    """Number CSV records as a spreadsheet numbers rows: a quoted multi-line cell is one row; ``sep=`` is hidden."""
    if has_sep_line:
        stream.readline()
    yield from enumerate(csv.reader(stream, delimiter=delimiter), start=1)


def _strip_bom(header: list[str]) -> list[str]:
    """Drop a byte order mark left on the first header cell (a BOM file with a stray non-UTF-8 byte, read as cp1252)."""
    if header:
        header = [header[0].removeprefix("\ufeff").removeprefix("ï»¿"), *header[1:]]
    return header


def _resolve_columns(header: list[str], mapping: Mapping[str, str]) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Which columns feed which field: explicit mappings first, then header aliases; also the mapped columns missing."""
    folded = [fold(cell) for cell in _strip_bom(header)]
    stripped = [cell.strip() for cell in _strip_bom(header)]
    explicit: dict[str, list[int]] = {}
    taken: set[int] = set()
    missing: list[str] = []
    for column, name in mapping.items():
        if column.strip() in stripped:
            position = stripped.index(column.strip())
        elif fold(column) in folded:
            position = folded.index(fold(column))
        else:
            missing.append(column)
            continue
        taken.add(position)
        if name != IGNORE:
            explicit.setdefault(name, []).append(position)
    columns: dict[str, list[int]] = {}
    for position, key in enumerate(folded):
        alias_of = _FIELD_BY_ALIAS.get(key)
        if alias_of is None or position in taken or alias_of in explicit:
            continue
        columns.setdefault(alias_of, []).append(position)
    columns.update(explicit)
    return {name: tuple(positions) for name, positions in columns.items()}, missing


def _detect_delimiter(sample: list[str], hints: set[str]) -> str:
    """Pick the delimiter under which the header names known fields and rows have a steady number of cells."""
    best, best_score = ",", (-1, -1.0, -1)
    text = "".join(sample)[:_SAMPLE_CHARS]
    for delimiter in _DELIMITERS:
        try:
            rows = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if any(row)]
        except csv.Error:
            continue
        if not rows:
            continue
        known = max(
            sum(1 for cell in row if fold(cell) in _FIELD_BY_ALIAS or fold(cell) in hints)
            for row in rows[:_HEADER_SEARCH_RECORDS]
        )
        widths = Counter(len(row) for row in rows)
        width, count = widths.most_common(1)[0]
        score = (known, count / len(rows) if width > 1 else 0.0, width)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _detect_encoding(path: Path, name: str) -> str:
    """Decide the encoding by decoding the whole byte stream, block by block: strict UTF-8 first, then cp1252."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise ImportFileError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImportFileError(f"{name} is a folder, not a CSV file") from None
    except OSError as error:
        raise ImportFileError(f"{name}: cannot be read ({error.strerror or error})") from None
    with handle:
        head = handle.read(_BLOCK)
        if not head.strip(b" \t\r\n" + codecs.BOM_UTF8):
            raise ImportFileError(f"{name} is empty")
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            candidates = ["utf-16"]
        elif head.startswith(codecs.BOM_UTF8):
            candidates = ["utf-8-sig", "cp1252"]
        elif head.startswith(b"PK\x03\x04") or head.startswith(b"\xd0\xcf\x11\xe0"):
            raise ImportFileError(
                f"{name} is a spreadsheet workbook, not CSV text: save it as CSV (UTF-8) and import that"
            )
        else:
            candidates = ["utf-8", "cp1252"]
        for encoding in candidates:
            handle.seek(0)
            if _decodes_as(handle, encoding):
                return encoding
    raise ImportFileError(f"{name} is not a text file (neither UTF-8 nor Windows-1252 text)")


def _decodes_as(handle: io.BufferedReader, encoding: str) -> bool:
    """Whether the whole stream decodes strictly and holds no NUL (a NUL means binary data, not text)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            if "\x00" in decoder.decode(block):
                return False
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True
