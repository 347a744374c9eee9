"""`engage contacts import` and `engage contacts list`, run in-process on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from factories import write_csv
from sqlmodel import Session, select

from engage.db import get_engine
from models import Contact, Staff

SAMPLE = Path(__file__).resolve().parents[3] / "samples" / "attendees.csv"
JSON_KEYS = {"source", "rows", "created", "updated", "unchanged", "merged", "rejected", "rejects_file", "rejects"}


def contact_keys(db_url: str) -> set[str]:
    with Session(get_engine(db_url)) as session:
        return set(session.exec(select(Contact.email_key)))


def test_import_json_has_the_summary_and_nothing_else(cli: Any, db_url: str, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            ["First Name", "Last Name", "Email", "HasOptedOutOfEmail"],
            ["Ann", "Lee", "ann@example.com", "0"],
            ["Bob", "Ray", "bob@example.com", "1"],
            ["Cid", "Roe", "cid@", "0"],
        ],
    )
    result = cli("contacts", "import", str(path), "--json")
    assert result.exit_code == 0, result
    payload = result.json()
    assert set(payload) >= JSON_KEYS
    assert {key: payload[key] for key in ("created", "updated", "merged", "rejected")} == {
        "created": 2,
        "updated": 0,
        "merged": 0,
        "rejected": 1,
    }
    assert all(isinstance(payload[key], int) for key in ("created", "updated", "merged", "rejected"))
    assert payload["rejects_file"] == str(tmp_path / "attendees.rejects.csv")
    assert payload["rejects"] == [
        {"line": 4, "reason": 'invalid email "cid@": There must be something after the @-sign.'}
    ]
    assert result.stdout.count("\n") == 1
    again = cli("contacts", "import", str(path), "--json").json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 2)


def test_import_prints_a_summary_with_each_bad_row(cli: Any, db_url: str, tmp_path: Path) -> None:
    shutil.copy(SAMPLE, tmp_path / "attendees.csv")
    result = cli("contacts", "import", "attendees.csv")
    assert result.exit_code == 0, result
    assert "12 rows read" in result.stdout
    assert "created" in result.stdout and "11" in result.stdout
    assert 'line 11: invalid email "noel.chevalier.example.org"' in result.stdout
    assert "attendees.rejects.csv" in result.stdout
    rejects = (tmp_path / "attendees.rejects.csv").read_bytes().decode("utf-8")
    assert rejects.startswith("Prénom;Nom;Courriel;Téléphone;Langue;Rôle;Désinscrit;reason\r\nNoël;Chevalier;")


def test_the_sample_attendee_list_imports_as_the_demo_expects(cli: Any, db_url: str, tmp_path: Path) -> None:
    shutil.copy(SAMPLE, tmp_path / "attendees.csv")
    summary = cli("contacts", "import", "attendees.csv", "--json").json()
    assert (summary["created"], summary["rejected"]) == (11, 1)
    contacts = cli("contacts", "list", "--json").json()
    assert len(contacts) == 11
    assert {c["language"] for c in contacts} == {"fr", "en"}
    assert {tuple(c["communities"]) for c in contacts} == {("volunteer",), ("donor",)}
    assert [c["email"] for c in contacts if c["email_opt_out"]] == ["chloe.rousseau@example.net"]


def test_map_names_a_column_explicitly(cli: Any, db_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path, [["Nom", "Adresse perso"], ["Dupont", "jean@example.org"]], delimiter=";")
    result = cli("contacts", "import", str(path), "--map", "Adresse perso=email", "--json")
    assert result.exit_code == 0, result
    assert result.json()["created"] == 1
    assert contact_keys(db_url) == {"jean@example.org"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--map", "Adresse perso=courrier"], 'unknown field "courrier"'),
        (["--map", "Adresse pro=email"], 'no column "Adresse pro" to map'),
        (["--map", "Adresse perso"], "expected COLUMN=FIELD"),
        ([], "has no email column"),
    ],
)
def test_mapping_and_header_mistakes_are_one_line_and_write_nothing(
    cli: Any, db_url: str, tmp_path: Path, arguments: list[str], message: str
) -> None:
    path = write_csv(tmp_path, [["Nom", "Adresse perso"], ["Dupont", "jean@example.org"]], delimiter=";")
    result = cli("contacts", "import", str(path), *arguments)
    assert result.exit_code == 1, result
    assert message in result.stderr
    assert result.stderr.startswith("error:") and result.stderr.strip().count("\n") == 0
    assert result.stdout == ""
    assert contact_keys(db_url) == set()
    assert [p.name for p in tmp_path.iterdir()] == ["attendees.csv"]


def test_missing_file_is_one_clear_error(cli: Any, db_url: str) -> None:
    result = cli("contacts", "import", "nowhere.csv", "--json")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: nowhere.csv: no such file"
    assert result.stdout == ""


def test_owner_not_on_staff_is_rejected_with_the_fix(cli: Any, db_url: str, tmp_path: Path) -> None:
    with Session(get_engine(db_url)) as session:
        session.add(Staff(email="camille@nmh.example.org", name="Camille"))
        session.commit()
    path = write_csv(
        tmp_path, [["Email", "Owner"], ["ann@example.org", "Camille@nmh.example.org"], ["bob@example.org", "x@y.org"]]
    )
    payload = cli("contacts", "import", str(path), "--json").json()
    assert payload["rejects"] == [
        {"line": 3, "reason": "owner x@y.org is not a staff member (add them with: engage staff add)"}
    ]
    [ann] = cli("contacts", "list", "--json").json()
    assert ann["owner"] == "camille@nmh.example.org"


def test_large_import_keeps_json_stdout_clean(cli: Any, db_url: str, tmp_path: Path) -> None:
    rows = [["Email", "Prénom", "Langue"]] + [[f"person{n}@example.org", f"Personne {n}", "fr"] for n in range(2100)]
    result = cli("contacts", "import", str(write_csv(tmp_path, rows)), "--json")
    assert result.exit_code == 0, result
    assert json.loads(result.stdout)["created"] == 2100
    assert len(contact_keys(db_url)) == 2100


def test_list_shows_the_ledger(cli: Any, db_url: str, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            ["Prénom", "Nom", "Courriel", "Langue", "Rôle", "Désinscrit"],
            ["Zoë", "Lefèvre", "zoe@example.net", "en", "bénévole", "oui"],
        ],
        delimiter=";",
        encoding="cp1252",
    )
    assert cli("contacts", "import", str(path)).exit_code == 0
    result = cli("contacts", "list")
    assert result.exit_code == 0, result
    for text in ("zoe@example.net", "Zoë Lefèvre", "en", "volunteer", "yes"):
        assert text in result.stdout
    [zoe] = cli("contacts", "list", "--json").json()
    assert {key: zoe[key] for key in ("email", "first_name", "last_name", "communities", "owner", "email_opt_out")} == {
        "email": "zoe@example.net",
        "first_name": "Zoë",
        "last_name": "Lefèvre",
        "communities": ["volunteer"],
        "owner": None,
        "email_opt_out": True,
    }


def test_list_of_an_empty_ledger(cli: Any, db_url: str) -> None:
    assert cli("contacts", "list", "--json").json() == []
    assert "0 contacts" in cli("contacts", "list").stdout
