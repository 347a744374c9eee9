"""The attendee CSV reader: real files in every shape real tools export, no database."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import write_csv

from engage.errors import ImportFileError
from engage.importer.fields import (
    fold,
    normalise_country,
    normalise_email,
    normalise_language,
    normalise_roles,
    parse_flag,
    parse_mapping,
)
from engage.importer.rows import AttendeeRow, RejectedRow
from engage.importer.source import AttendeeSource

FRENCH_HEADER = ["Prénom", "Nom", "Courriel", "Téléphone", "Langue", "Rôle"]
ENGLISH_HEADER = ["First Name", "Last Name", "Email", "Phone", "Language", "Role"]
DELIMITERS = [",", ";", "\t"]
ENCODINGS = ["utf-8", "utf-8-sig", "cp1252", "utf-16"]


def read_all(source: AttendeeSource) -> tuple[list[AttendeeRow], list[RejectedRow]]:
    good: list[AttendeeRow] = []
    bad: list[RejectedRow] = []
    for item in source.read():
        if isinstance(item, RejectedRow):
            bad.append(item)
        else:
            good.append(item)
    return good, bad


def one_row(tmp_path: Path, header: list[str], cells: list[str]) -> AttendeeRow | RejectedRow:
    [item] = AttendeeSource.from_path(write_csv(tmp_path, [header, cells])).read()
    return item


@pytest.mark.parametrize("delimiter", DELIMITERS, ids=["comma", "semicolon", "tab"])
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("header", [FRENCH_HEADER, ENGLISH_HEADER], ids=["french", "english"])
def test_reads_every_delimiter_encoding_and_header_language(
    tmp_path: Path, delimiter: str, encoding: str, header: list[str]
) -> None:
    path = write_csv(
        tmp_path,
        [
            header,
            ["Hélène", "Lefèvre", "helene.lefevre@example.org", "06 12 34 56 78", "Français", "Bénévole"],
            ["Zoë", "Œuvray", "zoe@example.net", "", "en-GB", "donor"],
        ],
        delimiter=delimiter,
        encoding=encoding,
    )
    source = AttendeeSource.from_path(path)
    assert source.delimiter == delimiter
    assert source.encoding == encoding
    good, bad = read_all(source)
    assert bad == []
    assert [(r.first_name, r.last_name, r.language, r.role) for r in good] == [
        ("Hélène", "Lefèvre", "fr", "volunteer"),
        ("Zoë", "Œuvray", "en", "donor"),
    ]
    assert good[0].phone == "06 12 34 56 78"
    assert good[1].phone is None


@pytest.mark.parametrize(
    ("header_text", "field"),
    [
        ("First Name", "first_name"),
        ("firstname", "first_name"),
        ("first_name", "first_name"),
        ("Given name", "first_name"),
        ("PRENOM", "first_name"),
        ("Prénom ", "first_name"),
        ("Last Name", "last_name"),
        ("Surname", "last_name"),
        ("Family-Name", "last_name"),
        ("NOM", "last_name"),
        ("E-mail", "email"),
        ("Mail", "email"),
        ("Email Address", "email"),
        ("Adresse e-mail", "email"),
        ("Courriel", "email"),
        ("Téléphone", "phone"),
        ("Mobile", "phone"),
        ("Portable", "phone"),
        ("Lang", "language"),
        ("Langue", "language"),
        ("Type", "role"),
        ("Communauté", "role"),
        ("Record Owner", "owner"),
        ("Propriétaire", "owner"),
        ("Owner Email", "owner"),
        ("HasOptedOutOfEmail", "email_opt_out"),
        ("opt_out", "email_opt_out"),
        ("Unsubscribed", "email_opt_out"),
        ("Désabonné", "email_opt_out"),
        ("DoNotCall", "do_not_call"),
        ("Ne pas appeler", "do_not_call"),
        ("Ville", "city"),
        ("Code postal", "postal_code"),
        ("ZIP", "postal_code"),
        ("Pays", "country"),
        ("Étiquettes", "tags"),
        ("Entreprise", "organisation"),
        ("Organization", "organisation"),
    ],
)
def test_header_aliases_ignore_case_accents_and_separators(tmp_path: Path, header_text: str, field: str) -> None:
    header = ["Email", header_text] if field != "email" else ["Notes", header_text]
    source = AttendeeSource.from_path(write_csv(tmp_path, [header, ["a@example.org", ""]]))
    assert source.columns[field] == (1,)


def test_unknown_columns_are_ignored(tmp_path: Path) -> None:
    row = one_row(tmp_path, ["Horodatage", "Email", "Allergies"], ["2026-11-20", "a@example.org", "arachides"])
    assert isinstance(row, AttendeeRow) and row.email == "a@example.org"


def test_salesforce_export(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            ["First Name", "Last Name", "Email", "HasOptedOutOfEmail", "DoNotCall", "Mailing City", "Mailing Country"],
            ["Ann", "Lee", "ann@example.com", "1", "0", "Lyon", "France"],
            ["Bob", "Ray", "bob@example.com", "0", "1", "Leeds", "GB"],
        ],
    )
    good, bad = read_all(AttendeeSource.from_path(path))
    assert bad == []
    assert [(r.email_opt_out, r.do_not_call, r.city, r.country) for r in good] == [
        (True, False, "Lyon", "FR"),
        (False, True, "Leeds", "GB"),
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jean.Dupont@Example.ORG", "Jean.Dupont@example.org"),
        ("  zoe@example.net ", "zoe@example.net"),
        ("mailto:ann@example.com", "ann@example.com"),
        ("Ann Lee <ann@Example.com>", "ann@example.com"),
    ],
)
def test_email_keeps_local_case_and_lowers_domain(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", ["jean.dupont@", "jean.dupont.example.org", "a b@example.org", "x@y"])
def test_bad_email_raises_with_the_reason(raw: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        normalise_email(raw)


def test_row_with_bad_email_is_rejected_naming_the_value(tmp_path: Path) -> None:
    row = one_row(tmp_path, ["Nom", "Courriel"], ["Dupont", "jean.dupont@"])
    assert isinstance(row, RejectedRow)
    assert row.line == 2
    assert row.reason.startswith('invalid email "jean.dupont@": ')


def test_email_key_is_the_whole_address_lower_cased(tmp_path: Path) -> None:
    row = one_row(tmp_path, ["Email"], ["Jean.Dupont@Example.ORG"])
    assert isinstance(row, AttendeeRow)
    assert (row.email, row.email_key) == ("Jean.Dupont@example.org", "jean.dupont@example.org")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("fr", "fr"),
        ("FR", "fr"),
        ("fr-FR", "fr"),
        ("fr_CA", "fr"),
        ("français", "fr"),
        ("Francais", "fr"),
        ("French", "fr"),
        ("en", "en"),
        ("en-GB", "en"),
        ("English", "en"),
        ("anglais", "en"),
        ("DE", "de"),
        ("Español", "es"),
        ("klingon", None),
        ("f", None),
        ("123", None),
    ],
)
def test_language_becomes_a_short_code(raw: str, code: str | None) -> None:
    assert normalise_language(raw) == code


def test_unrecognisable_language_rejects_the_row(tmp_path: Path) -> None:
    row = one_row(tmp_path, ["Email", "Langue"], ["a@example.org", "Elfique"])
    assert isinstance(row, RejectedRow) and 'unknown language "Elfique"' in row.reason


@pytest.mark.parametrize(
    ("raw", "roles"),
    [
        ("Bénévole", ["volunteer"]),
        ("volunteer", ["volunteer"]),
        ("Bénévoles", ["volunteer"]),
        ("donateur", ["donor"]),
        ("Donatrice", ["donor"]),
        ("DONOR", ["donor"]),
        ("adhérent", ["member"]),
        ("Membre", ["member"]),
        ("member", ["member"]),
        ("bénéficiaire", ["beneficiary"]),
        ("Beneficiary", ["beneficiary"]),
        ("Partenaire", ["partenaire"]),
        ("Bénévole, Donateur", ["volunteer", "donor"]),
        ("", []),
    ],
)
def test_role_becomes_a_canonical_community(raw: str, roles: list[str]) -> None:
    assert normalise_roles(raw) == roles


@pytest.mark.parametrize("raw", ["yes", "Oui", "TRUE", "vrai", "1", "x", "Y", "o"])
def test_truthy_flags(raw: str) -> None:
    assert parse_flag(raw) is True


@pytest.mark.parametrize("raw", ["no", "NON", "false", "Faux", "0", "", "  "])
def test_falsy_flags(raw: str) -> None:
    assert parse_flag(raw) is False


def test_unclear_flag_rejects_the_row_naming_column_and_value(tmp_path: Path) -> None:
    row = one_row(tmp_path, ["Email", "Désinscrit"], ["a@example.org", "peut-être"])
    assert isinstance(row, RejectedRow)
    assert 'Désinscrit "peut-être" is neither yes nor no' in row.reason


@pytest.mark.parametrize(
    ("raw", "code"),
    [("FR", "FR"), ("fr", "FR"), ("France", "FR"), ("Royaume-Uni", "GB"), ("UK", "GB"), ("Narnia", None)],
)
def test_country_becomes_a_two_letter_code(raw: str, code: str | None) -> None:
    assert normalise_country(raw) == code


def test_every_problem_of_a_row_is_reported_at_once(tmp_path: Path) -> None:
    row = one_row(tmp_path, ["Email", "Langue", "Pays"], ["nope", "zz-top-zz-top-zz-top!", "Narnia"])
    assert isinstance(row, RejectedRow)
    assert row.reason.count(";") == 2


def test_tags_split_on_commas_semicolons_and_bars(tmp_path: Path) -> None:
    row = one_row(tmp_path, ["Email", "Tags"], ["a@example.org", "atelier-lyon; newsletter|2026 , newsletter"])
    assert isinstance(row, AttendeeRow)
    assert row.tags == ("atelier-lyon", "newsletter", "2026")


def test_owner_is_lower_cased_and_must_look_like_an_email(tmp_path: Path) -> None:
    good = one_row(tmp_path, ["Email", "Owner"], ["a@example.org", "Camille@NMH.example.org"])
    assert isinstance(good, AttendeeRow) and good.owner_email == "camille@nmh.example.org"
    bad = one_row(tmp_path, ["Email", "Owner"], ["a@example.org", "Camille"])
    assert isinstance(bad, RejectedRow) and 'owner "Camille" is not an email address' in bad.reason


def test_over_long_value_is_the_rows_problem(tmp_path: Path) -> None:
    row = one_row(tmp_path, ["Email", "Code postal"], ["a@example.org", "7" * 21])
    assert isinstance(row, RejectedRow) and "longer than 20 characters" in row.reason


def test_excel_text_formula_is_unwrapped(tmp_path: Path) -> None:
    row = one_row(tmp_path, ["Email", "Téléphone"], ["a@example.org", '="0612345678"'])
    assert isinstance(row, AttendeeRow) and row.phone == "0612345678"


def test_line_numbers_count_records_not_physical_lines(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            ["Nom", "Courriel", "Notes"],
            ["Ann", "ann@example.org", "first line\nsecond line\nthird line"],
            [],
            ["", "", ""],
            ["Bob", "bob@", ""],
            ["Cid", "cid@example.org"],
        ],
    )
    source = AttendeeSource.from_path(path)
    items = list(source.read())
    assert [(type(item).__name__, item.line) for item in items] == [
        ("AttendeeRow", 2),
        ("RejectedRow", 5),
        ("AttendeeRow", 6),
    ]
    assert source.row_count == 5


def test_short_and_long_rows_are_read_by_position(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [["Email", "Prénom", "Nom"], ["a@example.org"], ["b@example.org", "Bea", "Bo", "extra", "cells"]],
    )
    good, bad = read_all(AttendeeSource.from_path(path))
    assert bad == []
    assert [(r.first_name, r.last_name) for r in good] == [(None, None), ("Bea", "Bo")]


def test_title_line_above_the_header_is_skipped(tmp_path: Path) -> None:
    path = write_csv(tmp_path, [["Export du 20/11/2026"], ["Prénom", "Email"], ["Ann", "ann@example.org"]])
    source = AttendeeSource.from_path(path)
    assert source.header_line == 2
    [row] = source.read()
    assert row.line == 3


def test_excel_sep_line_sets_the_delimiter_and_is_not_a_row(tmp_path: Path) -> None:
    path = tmp_path / "attendees.csv"
    path.write_text("sep=;\r\nNom;Email\r\nDupont, Jean;jean@example.org\r\n", encoding="utf-8")
    source = AttendeeSource.from_path(path)
    assert (source.delimiter, source.has_sep_line, source.header_line) == (";", True, 1)
    [row] = source.read()
    assert isinstance(row, AttendeeRow) and row.last_name == "Dupont, Jean" and row.line == 2


@pytest.mark.parametrize(
    ("late_bytes", "encoding"), [("Fin: Zoë".encode(), "utf-8"), ("Fin: Zoë".encode("cp1252"), "cp1252")]
)
def test_encoding_is_decided_on_the_whole_file(tmp_path: Path, late_bytes: bytes, encoding: str) -> None:
    rows = b"".join(b"Person %d;p%d@example.org\r\n" % (n, n) for n in range(5000))
    path = tmp_path / "big.csv"
    path.write_bytes(b"Nom;Email\r\n" + rows + late_bytes + b";late@example.org\r\n")
    assert len(rows) > 100_000
    source = AttendeeSource.from_path(path)
    assert source.encoding == encoding
    *_, last = source.read()
    assert isinstance(last, AttendeeRow) and last.last_name == "Fin: Zoë"


@pytest.mark.parametrize(
    ("mapping", "field", "expected"),
    [
        ({"Adresse perso": "email"}, "email", "perso@example.org"),
        ({"adresse PERSO": "email"}, "email", "perso@example.org"),
        ({"Email": "ignore", "Adresse perso": "email"}, "email", "perso@example.org"),
        ({"Qui": "owner"}, "owner_email", "camille@nmh.example.org"),
    ],
)
def test_mapping_names_columns_explicitly(tmp_path: Path, mapping: dict[str, str], field: str, expected: str) -> None:
    path = write_csv(
        tmp_path,
        [["Adresse perso", "Email", "Qui"], ["perso@example.org", "work@example.org", "camille@nmh.example.org"]],
    )
    [row] = AttendeeSource.from_path(path, mapping=mapping).read()
    assert isinstance(row, AttendeeRow)
    assert getattr(row, field) == expected


def test_mapped_email_column_wins_over_an_alias(tmp_path: Path) -> None:
    path = write_csv(tmp_path, [["Adresse perso", "Email"], ["perso@example.org", "work@example.org"]])
    [row] = AttendeeSource.from_path(path, mapping={"Adresse perso": "email"}).read()
    assert isinstance(row, AttendeeRow) and row.email == "perso@example.org"


def test_mapping_makes_a_file_without_a_known_email_header_readable(tmp_path: Path) -> None:
    path = write_csv(tmp_path, [["Qui", "Contact"], ["Ann", "ann@example.org"]])
    [row] = AttendeeSource.from_path(path, mapping={"Contact": "email"}).read()
    assert isinstance(row, AttendeeRow) and row.email == "ann@example.org"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["Adresse perso"], "expected COLUMN=FIELD"),
        (["Adresse perso="], "expected COLUMN=FIELD"),
        (["Adresse perso=courrier"], 'unknown field "courrier"'),
    ],
)
def test_bad_mapping_entry_is_one_clear_error(entries: list[str], message: str) -> None:
    with pytest.raises(ImportFileError, match=message):
        parse_mapping(entries)


def test_mapping_a_column_not_in_the_file_is_one_clear_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path, [["Email"], ["a@example.org"]])
    with pytest.raises(ImportFileError, match=r'attendees.csv: no column "Adresse perso" to map \(columns: "Email"\)'):
        AttendeeSource.from_path(path, mapping={"Adresse perso": "email"})


def test_no_email_column_is_one_clear_error_naming_the_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path, [["Prénom", "Nom"], ["Ann", "Lee"]])
    with pytest.raises(ImportFileError, match=r'attendees.csv has no email column \(columns: "Prénom", "Nom"\)'):
        AttendeeSource.from_path(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\xef\xbb\xbf\r\n\r\n", "is empty"),
        (b"PK\x03\x04\x14\x00\x06\x00", "spreadsheet workbook"),
        (b"Email\r\n\x00\x01\x02\x03", "not a text file"),
        (b"Email\r\n\x81\x8d\x8f\x90\x9d", "not a text file"),
    ],
    ids=["empty", "only-bom-and-blank-lines", "xlsx", "binary", "undefined-cp1252-bytes"],
)
def test_unreadable_file_is_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "attendees.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=message) as raised:
        AttendeeSource.from_path(path)
    assert "attendees.csv" in str(raised.value)


def test_missing_file_and_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="nowhere.csv: no such file"):
        AttendeeSource.from_path(tmp_path / "nowhere.csv")
    with pytest.raises(ImportFileError, match="is a folder"):
        AttendeeSource.from_path(tmp_path)


def test_unclosed_quote_that_swallows_the_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "attendees.csv"
    path.write_text('Email;Notes\r\na@example.org;"oops\r\n' + "b@example.org;x\r\n" * 20_000, encoding="utf-8")
    with pytest.raises(ImportFileError, match="cannot be read as CSV"):
        AttendeeSource.from_path(path)


def test_pasted_text_is_a_source_without_a_rejects_file() -> None:
    source = AttendeeSource.from_text("Prénom;Courriel\nZoë;zoe@example.net\nBad;bad@\n")
    assert (source.name, source.delimiter, source.rejects_path) == ("pasted text", ";", None)
    good, bad = read_all(source)
    assert [r.first_name for r in good] == ["Zoë"]
    assert [r.line for r in bad] == [3]


def test_pasted_text_without_email_column_is_an_error() -> None:
    with pytest.raises(ImportFileError, match="pasted text has no email column"):
        AttendeeSource.from_text("Nom\nDupont\n")


@pytest.mark.parametrize(
    ("name", "rejects"),
    [
        ("attendees.csv", "attendees.rejects.csv"),
        ("atelier.txt", "atelier.rejects.csv"),
        ("a.rejects.csv", "a.rejects.csv"),
    ],
)
def test_rejects_file_sits_beside_the_input(tmp_path: Path, name: str, rejects: str) -> None:
    source = AttendeeSource.from_path(write_csv(tmp_path, [["Email"]], name=name))
    assert source.rejects_path == tmp_path / rejects


def test_a_source_can_be_read_twice(tmp_path: Path) -> None:
    source = AttendeeSource.from_path(write_csv(tmp_path, [["Email"], ["a@example.org"], ["b@example.org"]]))
    assert [r.line for r in source.read()] == [r.line for r in source.read()] == [2, 3]


def test_merge_fills_and_overrides_but_never_erases() -> None:
    first = AttendeeRow(
        line=2, email="ann@example.org", email_key="ann@example.org", first_name="Ann", phone="0601",
        communities=("volunteer",), tags=("a",), email_opt_out=True,
    )  # fmt: skip
    later = AttendeeRow(
        line=9, email="Ann@Example.org", email_key="ann@example.org", last_name="Lee", phone="0602",
        communities=("donor",), tags=("a", "b"), email_opt_out=False,
    )  # fmt: skip
    merged = first.merge(later)
    assert merged.line == 2
    assert (merged.email, merged.first_name, merged.last_name, merged.phone) == (
        "Ann@Example.org",
        "Ann",
        "Lee",
        "0602",
    )
    assert merged.communities == ("volunteer", "donor") and merged.tags == ("a", "b")
    assert merged.email_opt_out is True


def test_fold() -> None:
    assert fold(" Adresse E-mail ") == "adresseemail"
    assert fold("Code_postal") == "codepostal"
