"""The rejects file: bad rows beside the input, in its encoding and delimiter, with the reason."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from engage.importer.fields import fold
from engage.importer.source import AttendeeSource

if TYPE_CHECKING:
    import _csv


class RejectsWriter:
    """Write rejected rows beside the input, in its encoding and delimiter, with a ``reason`` column.

    The rows go to a ``.part`` file that replaces ``<stem>.rejects.csv`` only when the import finishes, so a crash
    never leaves half a rejects file, and importing the rejects file itself refreshes it in place. A text source
    has no rejects file: ``write`` does nothing and ``finish`` returns None.
    """

    def __init__(self, source: AttendeeSource) -> None:
        self._source = source
        self._target = source.rejects_path
        self._part = self._target.with_name(self._target.name + ".part") if self._target else None
        self._stream: TextIO | None = None
        self._writer: _csv.Writer | None = None
        header = list(source.header)
        # A rejects file imported again already ends with a reason column: refresh it, don't add another.
        self._width = len(header) - 1 if header and fold(header[-1]) == "reason" else len(header)
        self._header = [*header[: self._width], "reason"]

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is not None:
            self.discard()

    def write(self, cells: tuple[str, ...], reason: str) -> None:
        """Add one rejected record: its original cells (padded to the header) and the reason."""
        if self._part is None:
            return
        if self._writer is None:
            # cp1252 cannot hold every character of a reason: a replacement mark beats losing the row
            self._stream = self._part.open("w", encoding=self._source.encoding, errors="replace", newline="")
            if self._source.has_sep_line:
                self._stream.write(f"sep={self._source.delimiter}\r\n")
            self._writer = csv.writer(self._stream, delimiter=self._source.delimiter)
            self._writer.writerow(self._header)
        row = list(cells[: self._width]) + [""] * (self._width - len(cells))
        # cells past the header (an old reason column is dropped: a fresh reason replaces it)
        extra = list(cells[len(self._source.header) :])
        while extra and not extra[-1].strip():
            extra.pop()
        self._writer.writerow([*row, *extra, reason])

    def finish(self) -> Path | None:
        """Put the rejects file in place; return its path, or None when no row was rejected."""
        if self._stream is None or self._part is None or self._target is None:
            return None
        self._stream.close()
        self._stream = self._writer = None
        os.replace(self._part, self._target)
        return self._target

    def discard(self) -> None:
        """Drop what was written: the import failed."""
        if self._stream is not None:
            self._stream.close()
            self._stream = self._writer = None
        if self._part is not None:
            self._part.unlink(missing_ok=True)
