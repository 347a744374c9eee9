"""An attendee list opened once (encoding, delimiter and header decided up front) and read row by row."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from engage.errors import ImportFileError
from engage.importer.fields import (
    _LIST_SPLIT_RE,
    _MAX_LENGTH,
    _check_mapping_fields,
    _clean,
    fold,
    normalise_country,
    normalise_email,
    normalise_language,
    normalise_roles,
    parse_flag,
)
from engage.importer.reading import (
    _HEADER_SEARCH_RECORDS,
    _SAMPLE_LINES,
    _SEP_LINE_RE,
    _detect_delimiter,
    _detect_encoding,
    _records,
    _resolve_columns,
    _strip_bom,
)
from engage.importer.rows import AttendeeRow, RejectedRow


@dataclass(frozen=True)
class AttendeeSource:
    """An attendee list whose encoding, delimiter and header are known; build it with from_path or from_text."""

    #: How messages name it: the path as given, or "pasted text".
    name: str
    path: Path | None
    encoding: str
    delimiter: str
    #: The header cells as written in the file.
    header: tuple[str, ...]
    #: The header's row number (1 unless a title line comes first).
    header_line: int
    #: Which columns feed each field, in priority order: the first non-blank cell wins.
    columns: Mapping[str, tuple[int, ...]]
    #: Records after the header, blank ones included: the total for a progress bar.
    row_count: int
    has_sep_line: bool = False
    text: str | None = field(default=None, repr=False)

    @classmethod
    def from_path(cls, path: Path | str, *, mapping: Mapping[str, str] | None = None) -> AttendeeSource:
        """Open an attendee CSV file: UTF-8 (with or without BOM), UTF-16 with BOM, or Windows-1252."""
        path = Path(path)
        name = str(path)
        encoding = _detect_encoding(path, name)
        try:
            with path.open(encoding=encoding, newline="") as stream:
                return cls._scan(stream, name=name, path=path, encoding=encoding, text=None, mapping=mapping)
        except OSError as error:
            raise ImportFileError(f"{name}: cannot be read ({error.strerror or error})") from None

    @classmethod
    def from_text(
        cls, text: str, *, name: str = "pasted text", mapping: Mapping[str, str] | None = None
    ) -> AttendeeSource:
        """Take CSV pasted as text (e.g. in a Prefect form); its rejects are returned, never written to a file."""
        text = text.removeprefix("\ufeff")
        return cls._scan(
            io.StringIO(text, newline=""), name=name, path=None, encoding="utf-8", text=text, mapping=mapping
        )

    @property
    def label(self) -> str:
        """The short name recorded as the source of opt-outs: the file name, or the text's name."""
        return self.path.name if self.path is not None else self.name

    @property
    def rejects_path(self) -> Path | None:
        """``<stem>.rejects.csv`` beside the input (importing that file again refreshes it in place); None for text."""
        if self.path is None:
            return None
        stem = self.path.stem
        return self.path.with_name(f"{stem}.csv" if stem.endswith(".rejects") else f"{stem}.rejects.csv")

    def read(self) -> Iterator[AttendeeRow | RejectedRow]:
        """Yield one parsed or rejected row per non-blank record after the header, streaming."""
        with self._open() as stream:
            for line, cells in _records(stream, self.delimiter, self.has_sep_line):
                if line <= self.header_line or not any(cell.strip() for cell in cells):
                    continue
                yield self._parse(line, cells)

    @contextmanager
    def _open(self) -> Iterator[TextIO]:
        if self.text is not None:
            yield io.StringIO(self.text, newline="")
            return
        if self.path is None:
            raise ValueError("an AttendeeSource needs a path or a text")
        try:
            stream = self.path.open(encoding=self.encoding, newline="")
        except OSError as error:
            raise ImportFileError(f"{self.name}: cannot be read ({error.strerror or error})") from None
        with stream:
            yield stream

    @classmethod
    def _scan(
        cls,
        stream: TextIO,
        *,
        name: str,
        path: Path | None,
        encoding: str,
        text: str | None,
        mapping: Mapping[str, str] | None,
    ) -> AttendeeSource:
        """Decide delimiter and header, resolve the columns, and count records (a broken CSV fails here)."""
        checked_mapping = _check_mapping_fields(mapping or {})
        first = stream.readline()
        sep_match = _SEP_LINE_RE.match(first)
        sample = [] if sep_match else [first]
        sample.extend(itertools.islice(stream, _SAMPLE_LINES))
        lines = itertools.chain(sample, stream)
        hints = {fold(column) for column in checked_mapping}
        delimiter = sep_match.group(1) if sep_match else _detect_delimiter(sample, hints)
        reader = csv.reader(lines, delimiter=delimiter)
        found: tuple[int, list[str]] | None = None
        first_non_blank: tuple[int, list[str]] | None = None
        row_count = number = 0
        try:
            for number, cells in enumerate(reader, start=1):
                if found is not None:
                    row_count += 1
                elif any(cell.strip() for cell in cells) and number <= _HEADER_SEARCH_RECORDS:
                    first_non_blank = first_non_blank or (number, cells)
                    if "email" in _resolve_columns(cells, checked_mapping)[0]:
                        found = (number, cells)
        except csv.Error as error:
            raise ImportFileError(
                f"{name}: line {number + 1} cannot be read as CSV ({error}; an unclosed quote?)"
            ) from None
        if found is None:
            if first_non_blank is None:
                raise ImportFileError(f"{name} is empty")
            found = first_non_blank  # to name its columns in the error below
        header_line, header = found[0], _strip_bom(found[1])
        columns, missing = _resolve_columns(header, checked_mapping)
        shown = ", ".join(f'"{cell}"' for cell in header if cell.strip()) or "none"
        if missing:
            raise ImportFileError(f'{name}: no column "{missing[0]}" to map (columns: {shown})')
        if "email" not in columns:
            raise ImportFileError(
                f"{name} has no email column (columns: {shown}); "
                'expected a header such as Email or Courriel, or map one: --map "COLUMN=email"'
            )
        return cls(
            name=name,
            path=path,
            encoding=encoding,
            delimiter=delimiter,
            header=tuple(header),
            header_line=header_line,
            columns=columns,
            row_count=row_count,
            has_sep_line=bool(sep_match),
            text=text,
        )

    def _parse(self, line: int, cells: list[str]) -> AttendeeRow | RejectedRow:
        """Turn one record into a row, or a rejection listing every problem found."""
        problems: list[str] = []
        values: dict[str, str] = {}
        headers: dict[str, str] = {}
        for name, positions in self.columns.items():
            for position in positions:
                if position < len(cells):
                    value = _clean(cells[position])
                    if value:
                        values[name] = value
                        headers[name] = self.header[position].strip()
                        break

        def text(name: str) -> str | None:
            value = values.get(name)
            if value is not None and name in _MAX_LENGTH and len(value) > _MAX_LENGTH[name]:
                problems.append(f'{headers[name]} "{value[:40]}..." is longer than {_MAX_LENGTH[name]} characters')
                return None
            return value

        def flag(name: str) -> bool:
            raw = values.get(name, "")
            parsed = parse_flag(raw)
            if parsed is None:
                problems.append(f'{headers[name]} "{raw}" is neither yes nor no (use oui/non, yes/no or 1/0)')
                return False
            return parsed

        email = email_key = ""
        raw_email = text("email")  # None when too long: already reported
        if "email" not in values:
            problems.append("no email address")
        elif raw_email is not None:
            try:
                email = normalise_email(raw_email)
                email_key = email.lower()
            except ValueError as error:
                problems.append(f'invalid email "{raw_email}": {error}')

        language = None
        if "language" in values:
            language = normalise_language(values["language"])
            if language is None:
                problems.append(f'unknown language "{values["language"]}" (use a code such as fr or en)')

        communities: list[str] = []
        if "role" in values:
            communities = normalise_roles(values["role"])
            for community in communities:
                if len(community) > _MAX_LENGTH["role"]:
                    problems.append(
                        f'{headers["role"]} "{community[:40]}..." is longer than {_MAX_LENGTH["role"]} characters'
                    )

        tags: list[str] = []
        if "tags" in values:
            tags = list(dict.fromkeys(tag.strip() for tag in _LIST_SPLIT_RE.split(values["tags"]) if tag.strip()))
            for tag in tags:
                if len(tag) > _MAX_LENGTH["tags"]:
                    problems.append(f'tag "{tag[:40]}..." is longer than {_MAX_LENGTH["tags"]} characters')

        owner_email = None
        if "owner" in values:
            try:
                owner_email = normalise_email(values["owner"]).lower()
            except ValueError:
                problems.append(f'owner "{values["owner"]}" is not an email address')

        country = None
        if "country" in values:
            country = normalise_country(values["country"])
            if country is None:
                problems.append(f'unknown country "{values["country"]}" (use a 2-letter code such as FR)')

        row = AttendeeRow(
            line=line,
            email=email,
            email_key=email_key,
            first_name=text("first_name"),
            last_name=text("last_name"),
            phone=text("phone"),
            language=language,
            role=communities[0] if communities else None,
            communities=tuple(communities),
            tags=tuple(tags),
            owner_email=owner_email,
            email_opt_out=flag("email_opt_out"),
            do_not_call=flag("do_not_call"),
            city=text("city"),
            postal_code=text("postal_code"),
            country=country,
            organisation=text("organisation"),
            cells=tuple(cells),
        )
        if problems:
            return RejectedRow(line=line, cells=tuple(cells), reason="; ".join(problems))
        return row
