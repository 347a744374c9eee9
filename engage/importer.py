"""Read attendee lists as real tools export them: CSV files or pasted CSV text, checked row by row.

Pure: no database, no Prefect. An :class:`AttendeeSource` is opened once (encoding, delimiter and header are
decided up front, so a file that cannot be read fails before anything is written) and can then be read as many
times as needed; :meth:`AttendeeSource.read` streams one :class:`AttendeeRow` or :class:`RejectedRow` per
non-blank record. Matching against the ledger (and owners against staff) is the job of ``engage.contacts``.

Example::

    source = AttendeeSource.from_path("atelier.csv", mapping={"Adresse perso": "email"})
    for item in source.read():
        print(item.line, item)
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from email_validator import EmailNotValidError, validate_email

from engage.errors import ImportFileError

if TYPE_CHECKING:
    import _csv

__all__ = [
    "FIELDS",
    "IGNORE",
    "AttendeeRow",
    "AttendeeSource",
    "RejectedRow",
    "RejectsWriter",
    "fold",
    "normalise_country",
    "normalise_email",
    "normalise_language",
    "normalise_roles",
    "parse_flag",
    "parse_mapping",
]

#: The fields an attendee column can feed; ``--map COLUMN=FIELD`` takes one of these.
FIELDS: tuple[str, ...] = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "language",
    "role",
    "owner",
    "email_opt_out",
    "do_not_call",
    "city",
    "postal_code",
    "country",
    "tags",
    "organisation",
)
#: Map a column to this to leave it out even though its header looks like a known one.
IGNORE = "ignore"

# Header texts as tools write them; compared after fold(): no case, no accents, letters and digits only.
_ALIASES: dict[str, tuple[str, ...]] = {
    "first_name": ("first name", "firstname", "given name", "forename", "prénom"),
    "last_name": ("last name", "lastname", "surname", "family name", "nom", "nom de famille"),
    "email": (
        "email",
        "e-mail",
        "mail",
        "email address",
        "e-mail address",
        "courriel",
        "adresse e-mail",
        "adresse mail",
        "adresse courriel",
        "adresse électronique",
    ),  # fmt: skip
    "phone": (
        "phone",
        "phone number",
        "telephone",
        "téléphone",
        "tél",
        "mobile",
        "mobile phone",
        "portable",
        "numéro de téléphone",
    ),  # fmt: skip
    "language": ("language", "lang", "langue", "preferred language", "langue préférée"),
    "role": ("role", "rôle", "type", "community", "communauté"),
    "owner": ("owner", "propriétaire", "record owner", "owner email", "référent"),
    "email_opt_out": (
        "HasOptedOutOfEmail",
        "email opt out",
        "opt_out",
        "optout",
        "opted out",
        "unsubscribed",
        "désinscrit",
        "désinscrite",
        "désabonné",
        "désabonnée",
        "désinscription",
    ),  # fmt: skip
    "do_not_call": ("do not call", "DoNotCall", "ne pas appeler"),
    "city": ("city", "town", "ville", "mailing city"),
    "postal_code": ("postal code", "postcode", "zip", "zip code", "code postal", "cp", "mailing zip/postal code"),
    "country": ("country", "pays", "mailing country"),
    "tags": ("tags", "tag", "étiquettes", "étiquette", "labels"),
    "organisation": ("organisation", "organization", "entreprise", "company", "société", "structure", "account name"),
}

# Mirrors the column sizes of models.Contact (a test keeps them equal): an over-long value is the row's
# problem to report, not a database error that would abort a whole chunk on PostgreSQL.
_MAX_LENGTH = {
    "email": 320,
    "first_name": 200,
    "last_name": 200,
    "phone": 50,
    "city": 200,
    "postal_code": 20,
    "organisation": 200,
    "role": 40,
    "tags": 80,
}

_TRUE = frozenset({"yes", "oui", "true", "vrai", "1", "x", "y", "o"})
_FALSE = frozenset({"no", "non", "false", "faux", "0", "n", ""})

_LANGUAGE_WORDS = {
    "fr": ("français", "french", "fra", "fre"),
    "en": ("anglais", "english", "eng"),
    "es": ("espagnol", "spanish", "español"),
    "de": ("allemand", "german", "deutsch"),
    "it": ("italien", "italian", "italiano"),
    "pt": ("portugais", "portuguese", "português"),
    "ar": ("arabe", "arabic"),
    "nl": ("néerlandais", "dutch", "nederlands"),
}
_LANGUAGE_TAG_RE = re.compile(r"^([a-z]{2})(?:[-_][a-z0-9]{2,8})*$")

_ROLE_WORDS = {
    "volunteer": ("volunteer", "bénévole", "volontaire"),
    "donor": ("donor", "donateur", "donatrice"),
    "member": ("member", "membre", "adhérent", "adhérente"),
    "beneficiary": ("beneficiary", "beneficiaries", "bénéficiaire"),
}

_COUNTRY_WORDS = {
    "FR": ("France",),
    "BE": ("Belgique", "Belgium"),
    "CH": ("Suisse", "Switzerland"),
    "LU": ("Luxembourg",),
    "MC": ("Monaco",),
    "CA": ("Canada",),
    "DE": ("Allemagne", "Germany"),
    "ES": ("Espagne", "Spain"),
    "IT": ("Italie", "Italy"),
    "PT": ("Portugal",),
    "GB": ("Royaume-Uni", "United Kingdom", "UK", "Angleterre", "England"),
    "IE": ("Irlande", "Ireland"),
    "NL": ("Pays-Bas", "Netherlands"),
    "US": ("États-Unis", "United States", "USA"),
    "MA": ("Maroc", "Morocco"),
    "DZ": ("Algérie", "Algeria"),
    "TN": ("Tunisie", "Tunisia"),
    "SN": ("Sénégal", "Senegal"),
}

_LIST_SPLIT_RE = re.compile(r"[,;|]")
_SEP_LINE_RE = re.compile(r'^\ufeff?"?sep=(.)"?[,;\t]*\r?\n?$', re.IGNORECASE)
_DELIMITERS = (",", ";", "\t")
_BLOCK = 1 << 16
# Tools put a title or an export date above the header now and then; look that far for it.
_HEADER_SEARCH_RECORDS = 10
_SAMPLE_LINES = 200
_SAMPLE_CHARS = 1 << 16


def fold(text: str) -> str:
    """Reduce a header or word to lower-case letters and digits, no accents: ``Adresse e-mail`` -> ``adresseemail``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if char.isalnum()).casefold()


def _by_word(table: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    return {fold(word): value for value, words in table.items() for word in words}


_FIELD_BY_ALIAS = _by_word(_ALIASES)
_LANGUAGES = _by_word(_LANGUAGE_WORDS)
# plurals too: a "Rôle" column often says "Bénévoles"
_ROLES = _by_word(_ROLE_WORDS) | {fold(word) + "s": role for role, words in _ROLE_WORDS.items() for word in words}
_COUNTRIES = _by_word(_COUNTRY_WORDS)


def _clean(value: str) -> str:
    """Trim, collapse inner white space and unwrap Excel's ``="0612"`` text-forcing formula."""
    value = value.strip()
    if value.startswith('="') and value.endswith('"') and len(value) >= 3:
        value = value[2:-1]
    return " ".join(value.split())


def normalise_email(raw: str) -> str:
    """Return the address trimmed, its domain lower-cased; raise ``ValueError`` with the reason if it is not one."""
    value = raw.strip()
    if value[:7].lower() == "mailto:":
        value = value[7:]
    # "Jean Dupont <jean@example.org>", as mail clients copy addresses
    if value.endswith(">") and "<" in value:
        value = value[value.rindex("<") + 1 : -1]
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValueError(str(error)) from None


def normalise_language(raw: str) -> str | None:
    """Return a short language code (``"fr"`` for ``Français``, ``fr-FR``, ``FR``); ``None`` if unrecognisable."""
    value = raw.strip().lower()
    match = _LANGUAGE_TAG_RE.match(value)
    if match:
        return match.group(1)
    return _LANGUAGES.get(fold(value))


def normalise_roles(raw: str) -> list[str]:
    """Return the communities of a role cell in canonical English (``bénévole`` -> ``volunteer``), in order."""
    roles: list[str] = []
    for part in _LIST_SPLIT_RE.split(raw):
        part = " ".join(part.split())
        if not part:
            continue
        role = _ROLES.get(fold(part), part.lower())
        if role not in roles:
            roles.append(role)
    return roles


def normalise_country(raw: str) -> str | None:
    """Return an ISO 3166 alpha-2 code for ``FR``, ``fr`` or a common country name; ``None`` if unknown."""
    value = fold(raw)
    if value in _COUNTRIES:  # before the 2-letter rule: "UK" is GB
        return _COUNTRIES[value]
    if len(value) == 2 and value.isalpha() and value.isascii():
        return value.upper()
    return None


def parse_flag(raw: str) -> bool | None:
    """Return True for yes/oui/true/vrai/1/x/y/o, False for no/non/false/faux/0/blank, None for anything else."""
    value = fold(raw)
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def parse_mapping(entries: Iterable[str]) -> dict[str, str]:
    """Parse ``COLUMN=FIELD`` entries (as given to ``--map``) into ``{column: field}``; raise ImportFileError."""
    mapping: dict[str, str] = {}
    for entry in entries:
        column, equals, field_name = entry.rpartition("=")
        if not equals or not column.strip() or not field_name.strip():
            raise ImportFileError(f'column mapping {entry!r}: expected COLUMN=FIELD, e.g. "Adresse perso=email"')
        mapping[column.strip()] = field_name.strip()
    _check_mapping_fields(mapping)
    return mapping


def _check_mapping_fields(mapping: Mapping[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for column, field_name in mapping.items():
        name = field_name.strip().lower().replace("-", "_")
        if name not in FIELDS and name != IGNORE:
            raise ImportFileError(
                f'column mapping "{column}={field_name}": unknown field "{field_name}" '
                f"(fields: {', '.join(FIELDS)}, or {IGNORE})"
            )
        checked[column] = name
    return checked


@dataclass(frozen=True, slots=True)
class AttendeeRow:
    """One good attendee record, normalised; ``line`` is its row number as a spreadsheet shows it (header = 1)."""

    line: int
    email: str
    email_key: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    language: str | None = None
    #: The first community of the row's role cell, canonical (``volunteer``, ``donor``...): a flow maps it to a plan.
    role: str | None = None
    communities: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    #: The owner's email, lower-cased; the ledger checks it against staff.
    owner_email: str | None = None
    #: True only when the file says so: blank or "no" never re-subscribes anyone.
    email_opt_out: bool = False
    do_not_call: bool = False
    city: str | None = None
    postal_code: str | None = None
    country: str | None = None
    organisation: str | None = None
    #: The record's cells as read, for the rejects file should the ledger refuse the row (e.g. unknown owner).
    cells: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def merge(self, later: AttendeeRow) -> AttendeeRow:
        """Merge a later row for the same person: its non-blank values win, blanks never erase, flags only add."""
        values = {
            name: getattr(later, name)
            for name in (
                "email",
                "first_name",
                "last_name",
                "phone",
                "language",
                "role",
                "owner_email",
                "city",
                "postal_code",
                "country",
                "organisation",
            )
            if getattr(later, name) is not None
        }
        return replace(
            self,
            **values,
            communities=tuple(dict.fromkeys(self.communities + later.communities)),
            tags=tuple(dict.fromkeys(self.tags + later.tags)),
            email_opt_out=self.email_opt_out or later.email_opt_out,
            do_not_call=self.do_not_call or later.do_not_call,
        )


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A record that cannot be imported, with every reason found, so it can be fixed in one go."""

    line: int
    cells: tuple[str, ...]
    reason: str


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
