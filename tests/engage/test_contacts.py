"""Importing attendees into the ledger and listing contacts, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from factories import create_contact, create_staff, write_csv
from sqlmodel import Session, select

from engage.contacts.importing import ImportSummary, Reject, import_contacts
from engage.contacts.listing import list_contacts
from engage.importer.fields import _MAX_LENGTH
from engage.importer.rows import AttendeeRow
from engage.importer.source import AttendeeSource
from models import Contact, ContactCommunity, ContactTag

NOW = datetime(2026, 11, 20, 18, 30, tzinfo=UTC)
LATER = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HEADER = ["Prénom", "Nom", "Courriel", "Téléphone", "Langue", "Rôle", "Désinscrit"]


def run_import(session: Session, path: Path, *, now: datetime = NOW, **options: object) -> ImportSummary:
    return import_contacts(session=session, source=AttendeeSource.from_path(path), now=now, **options)  # type: ignore[arg-type]


def ledger_contacts(session: Session) -> dict[str, Contact]:
    return {contact.email_key: contact for contact in session.exec(select(Contact))}


def memberships(session: Session) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    communities = session.exec(
        select(Contact.email_key, ContactCommunity.community).join(
            ContactCommunity,
            ContactCommunity.contact_id == Contact.id,  # type: ignore[arg-type]
        )
    ).all()
    tags = session.exec(
        select(Contact.email_key, ContactTag.tag).join(ContactTag, ContactTag.contact_id == Contact.id)  # type: ignore[arg-type]
    ).all()
    return {(k, c) for k, c in communities}, {(k, t) for k, t in tags}


def read_rejects(path: Path, *, delimiter: str, encoding: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode(encoding), newline=""), delimiter=delimiter))


def test_import_creates_contacts_with_communities_tags_and_opt_out(session: Session, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            [*HEADER, "Étiquettes"],
            ["Hélène", "Lefèvre", "Helene.Lefevre@Example.ORG", "06 12 34 56 78", "Français", "Bénévole", "non", ""],
            ["Zoë", "Martin", "zoe@example.net", "", "en-GB", "Donatrice", "oui", "atelier-lyon, newsletter"],
        ],
        delimiter=";",
    )
    summary = run_import(session, path)
    assert (summary.created, summary.updated, summary.unchanged, summary.merged, summary.rejected) == (2, 0, 0, 0, 0)
    assert summary.rejects_file is None and not (tmp_path / "attendees.rejects.csv").exists()
    contacts = ledger_contacts(session)
    helene, zoe = contacts["helene.lefevre@example.org"], contacts["zoe@example.net"]
    assert (helene.email, helene.first_name, helene.language, helene.phone) == (
        "Helene.Lefevre@example.org",
        "Hélène",
        "fr",
        "06 12 34 56 78",
    )
    assert not helene.email_opt_out and helene.email_opt_out_at is None
    assert (zoe.email_opt_out, zoe.email_opt_out_at, zoe.email_opt_out_source) == (True, NOW, "import:attendees.csv")
    assert helene.created_at == NOW
    communities, tags = memberships(session)
    assert communities == {("helene.lefevre@example.org", "volunteer"), ("zoe@example.net", "donor")}
    assert tags == {("zoe@example.net", "atelier-lyon"), ("zoe@example.net", "newsletter")}


def test_reimporting_the_same_file_creates_and_changes_nothing(session: Session, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            [*HEADER, "Tags"],
            ["Ann", "Lee", "ann@example.org", "0601", "fr", "bénévole", "oui", "a|b"],
            ["Bob", "Ray", "bob@example.org", "", "en", "donor", "", ""],
        ],
        delimiter=";",
    )
    run_import(session, path)
    again = run_import(session, path, now=LATER)
    assert (again.created, again.updated, again.unchanged, again.merged) == (0, 0, 2, 0)
    contacts = ledger_contacts(session)
    assert len(contacts) == 2
    assert {contact.updated_at for contact in contacts.values()} == {NOW}
    assert contacts["ann@example.org"].email_opt_out_at == NOW


@pytest.mark.parametrize("chunk_size", [500, 1, 2], ids=["one-chunk", "chunks-of-1", "chunks-of-2"])
def test_duplicates_differing_only_in_case_are_merged(session: Session, tmp_path: Path, chunk_size: int) -> None:
    path = write_csv(
        tmp_path,
        [
            HEADER,
            ["Ann", "", "ann@example.org", "0601", "fr", "bénévole", "oui"],
            ["Bob", "Ray", "bob@example.org", "", "", "", ""],
            ["", "Lee", "ANN@example.org", "0699", "", "donateur", "non"],
            ["Anne", "", "Ann@Example.org", "", "", "", ""],
        ],
        delimiter=";",
    )
    summary = run_import(session, path, chunk_size=chunk_size)
    assert (summary.created, summary.merged, summary.rows) == (2, 2, 4)
    contacts = ledger_contacts(session)
    assert set(contacts) == {"ann@example.org", "bob@example.org"}
    ann = contacts["ann@example.org"]
    assert (ann.email, ann.first_name, ann.last_name, ann.phone, ann.language) == (
        "Ann@example.org",
        "Anne",
        "Lee",
        "0699",
        "fr",
    )
    assert ann.email_opt_out  # a later "non" never re-subscribes
    communities, _ = memberships(session)
    assert {c for k, c in communities if k == "ann@example.org"} == {"volunteer", "donor"}


def test_existing_contact_is_matched_without_regard_to_case(session: Session, tmp_path: Path) -> None:
    create_contact(session, email="ann@example.org", first_name="Ann")
    session.commit()
    summary = run_import(session, write_csv(tmp_path, [["Email", "Prénom"], ["ANN@Example.org", "Ann"]], delimiter=";"))
    assert (summary.created, summary.updated) == (0, 1)  # the shown address changed
    [ann] = ledger_contacts(session).values()
    assert ann.email == "ANN@example.org"


@pytest.mark.parametrize(
    ("row", "updated"),
    [
        (["", "", "ann@example.org", "", "", "", ""], False),
        (["Ann", "Lee", "ann@example.org", "0601", "fr", "", ""], False),
        (["", "", "ann@example.org", "", "en", "", ""], True),
        (["", "", "ann@example.org", "", "", "donor", ""], True),
        (["", "", "ann@example.org", "", "", "", "oui"], True),
    ],
    ids=["all-blank", "same-values", "new-language", "new-community", "new-opt-out"],
)
def test_blank_never_erases_and_only_real_changes_count_as_updated(
    session: Session, tmp_path: Path, row: list[str], updated: bool
) -> None:
    create_contact(session, email="ann@example.org", first_name="Ann", last_name="Lee", phone="0601", language="fr")
    session.commit()
    summary = run_import(session, write_csv(tmp_path, [HEADER, row], delimiter=";"))
    assert (summary.updated, summary.unchanged) == ((1, 0) if updated else (0, 1))
    ann = ledger_contacts(session)["ann@example.org"]
    assert (ann.first_name, ann.last_name, ann.phone) == ("Ann", "Lee", "0601")
    assert ann.updated_at == NOW if updated else ann.updated_at != NOW


@pytest.mark.parametrize("value", ["non", "0", "", "false", "no"])
def test_an_opt_in_in_the_file_never_re_subscribes(session: Session, tmp_path: Path, value: str) -> None:
    create_contact(
        session,
        email="ann@example.org",
        email_opt_out=True,
        email_opt_out_at=NOW,
        email_opt_out_source="unsubscribe link",
        do_not_call=True,
    )
    session.commit()
    path = write_csv(
        tmp_path, [["Email", "Désinscrit", "Ne pas appeler"], ["ann@example.org", value, value]], delimiter=";"
    )
    summary = run_import(session, path, now=LATER)
    assert summary.unchanged == 1
    ann = ledger_contacts(session)["ann@example.org"]
    assert (ann.email_opt_out, ann.email_opt_out_at, ann.email_opt_out_source, ann.do_not_call) == (
        True,
        NOW,
        "unsubscribe link",
        True,
    )


def test_an_opt_out_in_the_file_is_recorded_once(session: Session, tmp_path: Path) -> None:
    create_contact(session, email="ann@example.org")
    session.commit()
    path = write_csv(
        tmp_path, [["Email", "HasOptedOutOfEmail", "DoNotCall"], ["ann@example.org", "1", "1"]], delimiter=";"
    )
    assert run_import(session, path).updated == 1
    assert run_import(session, path, now=LATER).unchanged == 1
    ann = ledger_contacts(session)["ann@example.org"]
    assert (ann.email_opt_out, ann.email_opt_out_at, ann.email_opt_out_source) == (True, NOW, "import:attendees.csv")
    assert ann.do_not_call


def test_owner_is_a_staff_member_found_without_regard_to_case(session: Session, tmp_path: Path) -> None:
    camille = create_staff(session, email="Camille@NMH.example.org")
    create_staff(session, email="left@nmh.example.org", active=False)
    kept = create_staff(session, email="kept@nmh.example.org")
    create_contact(session, email="kept@example.org", owner_id=kept.id)
    session.commit()
    path = write_csv(
        tmp_path,
        [
            ["Email", "Propriétaire"],
            ["ann@example.org", "camille@nmh.example.org"],
            ["bob@example.org", "x@y.example.org"],
            ["cid@example.org", "left@nmh.example.org"],
            ["kept@example.org", ""],
        ],
        delimiter=";",
    )
    summary = run_import(session, path)
    assert summary.rejects == [
        Reject(3, "owner x@y.example.org is not a staff member (add them with: engage staff add)"),
        Reject(4, "owner left@nmh.example.org is no longer an active staff member; name another owner"),
    ]
    contacts = ledger_contacts(session)
    assert set(contacts) == {"ann@example.org", "kept@example.org"}
    assert contacts["ann@example.org"].owner_id == camille.id
    assert contacts["kept@example.org"].owner_id == kept.id


@pytest.mark.parametrize(
    ("delimiter", "encoding"),
    [(";", "cp1252"), (",", "utf-8-sig"), ("\t", "utf-8"), (";", "utf-16")],
)
def test_rejects_file_keeps_the_inputs_encoding_delimiter_and_header(
    session: Session, tmp_path: Path, delimiter: str, encoding: str
) -> None:
    header = ["Prénom", "Nom", "Courriel", "Notes"]
    path = write_csv(
        tmp_path,
        [
            header,
            ["Hélène", "Lefèvre", "helene@example.org", "a\nmulti-line\nnote"],
            ["Zoë", "Dupont", "jean.dupont@", "Cœur"],
            ["Éric"],
            ["Léa", "Bonnet", "lea@example.org"],
        ],
        delimiter=delimiter,
        encoding=encoding,
    )
    summary = run_import(session, path)
    assert [reject.line for reject in summary.rejects] == [3, 4]
    assert summary.rejects[0].reason.startswith('invalid email "jean.dupont@": ')
    assert summary.rejects[1].reason == "no email address"
    assert summary.rejects_file == tmp_path / "attendees.rejects.csv"
    raw = summary.rejects_file.read_bytes()
    assert raw.startswith({"utf-8-sig": b"\xef\xbb\xbf", "utf-16": b"\xff\xfe"}.get(encoding, b"Pr"))
    rows = read_rejects(summary.rejects_file, delimiter=delimiter, encoding=encoding)
    assert rows[0] == [*header, "reason"]
    assert rows[1][:4] == ["Zoë", "Dupont", "jean.dupont@", "Cœur"]
    assert rows[1][4] == summary.rejects[0].reason
    assert rows[2] == ["Éric", "", "", "", "no email address"]
    assert len(rows) == 3
    assert set(ledger_contacts(session)) == {"helene@example.org", "lea@example.org"}


def test_importing_the_fixed_rejects_file_refreshes_it_in_place(session: Session, tmp_path: Path) -> None:
    path = write_csv(tmp_path, [["Email", "Langue"], ["ann@", "fr"], ["bob@example.org", "klingon"]], delimiter=";")
    first = run_import(session, path)
    rejects_path = tmp_path / "attendees.rejects.csv"
    assert first.rejects_file == rejects_path
    rows = read_rejects(rejects_path, delimiter=";", encoding="utf-8")
    rows[1][0] = "ann@example.org"  # the admin fixes one row in Excel
    fixed = write_csv(tmp_path, rows, name="attendees.rejects.csv", delimiter=";")
    second = run_import(session, fixed)
    assert (second.created, second.rejected, second.rejects_file) == (1, 1, rejects_path)
    assert read_rejects(rejects_path, delimiter=";", encoding="utf-8") == [
        ["Email", "Langue", "reason"],
        ["bob@example.org", "klingon", 'unknown language "klingon" (use a code such as fr or en)'],
    ]
    assert not list(tmp_path.glob("*.part"))


def test_pasted_text_returns_rejects_without_a_file(session: Session, tmp_path: Path) -> None:
    source = AttendeeSource.from_text("Prénom;Courriel\nZoë;zoe@example.net\nBad;bad@\n")
    summary = import_contacts(session=session, source=source, now=NOW)
    assert (summary.created, summary.rejects_file) == (1, None)
    assert summary.as_dict()["rejects"] == [
        {"line": 3, "reason": 'invalid email "bad@": There must be something after the @-sign.'}
    ]
    assert list(tmp_path.iterdir()) == []


def test_on_chunk_gets_each_person_once_inside_the_transaction(session: Session, tmp_path: Path) -> None:
    rows = [["Email", "Rôle"]] + [[f"p{n}@example.org", "bénévole"] for n in range(5)] + [["P0@example.org", "donor"]]
    calls: list[list[tuple[int, AttendeeRow]]] = []

    def on_chunk(chunk_session: Session, pairs: list[tuple[int, AttendeeRow]]) -> None:
        assert chunk_session is session
        for contact_id, row in pairs:
            assert chunk_session.get(Contact, contact_id).email_key == row.email_key  # type: ignore[union-attr]
        calls.append(pairs)

    summary = run_import(session, write_csv(tmp_path, rows, delimiter=";"), chunk_size=2, on_chunk=on_chunk)
    assert [len(pairs) for pairs in calls] == [2, 2, 1]  # the last chunk holds p4 and the duplicate of p0
    assert sorted(row.email_key for pairs in calls for _, row in pairs) == [f"p{n}@example.org" for n in range(5)]
    assert (summary.created, summary.merged) == (5, 1)
    communities, _ = memberships(session)
    assert ("p0@example.org", "donor") in communities


def test_a_failing_chunk_is_rolled_back_and_no_rejects_file_is_left(session: Session, tmp_path: Path) -> None:
    rows = [["Email"], ["bad@"]] + [[f"p{n}@example.org"] for n in range(4)]

    def on_chunk(_: Session, pairs: list[tuple[int, AttendeeRow]]) -> None:
        if any(row.email_key == "p3@example.org" for _, row in pairs):
            raise RuntimeError("plan creation failed")

    with pytest.raises(RuntimeError, match="plan creation failed"):
        run_import(session, write_csv(tmp_path, rows, delimiter=";"), chunk_size=3, on_chunk=on_chunk)
    assert set(ledger_contacts(session)) == {"p0@example.org", "p1@example.org"}
    assert [p.name for p in tmp_path.iterdir()] == ["attendees.csv"]
    summary = run_import(session, write_csv(tmp_path, rows, delimiter=";"), chunk_size=3)
    assert (summary.created, summary.unchanged, summary.rejected) == (2, 2, 1)


def test_progress_reaches_the_row_count(session: Session, tmp_path: Path) -> None:
    path = write_csv(tmp_path, [["Email"]] + [[f"p{n}@example.org"] for n in range(7)] + [[""]], delimiter=";")
    seen: list[int] = []
    run_import(session, path, chunk_size=3, progress=seen.append)
    assert seen == [3, 6, 7, 8]


def test_an_erased_contact_is_not_brought_back(session: Session, tmp_path: Path) -> None:
    create_contact(session, email="gone@example.org", erased_at=NOW)
    session.commit()
    summary = run_import(session, write_csv(tmp_path, [["Email"], ["gone@example.org"]], delimiter=";"), now=LATER)
    assert summary.rejects == [Reject(2, "gone@example.org was erased at their request; not imported again")]


def test_a_naive_now_is_refused(session: Session, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="aware"):
        run_import(
            session, write_csv(tmp_path, [["Email"], ["a@example.org"]], delimiter=";"), now=datetime(2026, 1, 1)
        )


def test_every_good_row_is_counted_once(session: Session, tmp_path: Path) -> None:
    create_contact(session, email="old@example.org", first_name="Old")
    create_contact(session, email="same@example.org", first_name="Same")
    session.commit()
    rows = [
        ["Email", "Prénom"],
        ["new@example.org", "New"],
        ["old@example.org", "Changed"],
        ["same@example.org", "Same"],
        ["NEW@example.org", ""],
        ["bad", ""],
    ]
    summary = run_import(session, write_csv(tmp_path, rows, delimiter=";"))
    assert (summary.created, summary.updated, summary.unchanged, summary.merged, summary.rejected) == (1, 1, 1, 1, 1)
    assert summary.rows == 5


def test_list_contacts_shows_communities_tags_owner_and_opt_out(session: Session, tmp_path: Path) -> None:
    create_staff(session, email="camille@nmh.example.org")
    create_contact(session, email="erased@example.org", erased_at=NOW)
    session.commit()
    path = write_csv(
        tmp_path,
        [
            ["Email", "Prénom", "Rôle", "Tags", "Owner", "Unsubscribed"],
            ["zoe@example.net", "Zoë", "donor, bénévole", "b;a", "camille@nmh.example.org", "yes"],
            ["ann@example.org", "Ann", "", "", "", ""],
        ],
        delimiter=",",
    )
    run_import(session, path)
    views = list_contacts(session=session)
    assert [view.email for view in views] == ["ann@example.org", "zoe@example.net"]
    assert views[1].as_dict() | {"id": 0} == {
        "id": 0,
        "email": "zoe@example.net",
        "first_name": "Zoë",
        "last_name": None,
        "phone": None,
        "language": None,
        "communities": ["donor", "volunteer"],
        "tags": ["a", "b"],
        "owner": "camille@nmh.example.org",
        "email_opt_out": True,
        "do_not_call": False,
    }
    assert views[0].communities == () and views[0].owner is None


def test_importer_length_limits_match_the_contact_columns() -> None:
    columns = Contact.__table__.columns  # type: ignore[attr-defined]
    for name, limit in _MAX_LENGTH.items():
        if name == "role":
            assert limit == ContactCommunity.__table__.columns["community"].type.length  # type: ignore[attr-defined]
        elif name == "tags":
            assert limit == ContactTag.__table__.columns["tag"].type.length  # type: ignore[attr-defined]
        else:
            assert limit == columns[name].type.length, name
