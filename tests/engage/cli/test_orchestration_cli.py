from __future__ import annotations

from pathlib import Path

import pytest

from engage.settings import PROJECT_ROOT


@pytest.mark.usefixtures("prefect")
def test_simulate_prints_json_and_sends_nothing_twice(cli, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    attendees = tmp_path / "attendees.csv"
    attendees.write_bytes((PROJECT_ROOT / "samples" / "attendees.csv").read_bytes())
    args = (
        "simulate",
        "--template",
        "volunteer-followup",
        "--role",
        "donateur=donor-followup",
        "--attendees",
        str(attendees),
        "--date",
        "2026-11-20",
        "--days",
        "35",
        "--complete-calls",
        "--as",
        "camille@nmh.example.org",
        "--outbox",
        str(tmp_path / "outbox"),
        "--json",
    )
    first = cli(*args)
    assert first.exit_code == 0, first
    result = first.json()
    expected = {
        "plans": 11,
        "emails_sent": 30,
        "calls_created": 11,
        "calls_completed": 11,
        "steps_failed": 0,
        "steps_skipped": 3,
    }
    assert {key: result[key] for key in expected} == expected
    assert result["outbox"] == str(tmp_path / "outbox")
    assert result["enrollment"]["rejected"] == 1
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 30 + 11  # the emails, and the calls' invites to staff

    second = cli(*args).json()
    assert (second["emails_sent"], second["calls_created"], second["plans"]) == (0, 0, 11)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 30 + 11


@pytest.mark.usefixtures("prefect")
def test_enroll_from_the_terminal(cli, db_url: str, tmp_path: Path, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    assert cli("staff", "add", "camille@nmh.example.org", "--name", "Camille").exit_code == 0
    attendees = tmp_path / "inscrits.csv"
    attendees.write_text("Prénom,Courriel\nLéa,lea@example.org\nTom,tom@example.org\n", encoding="utf-8")
    args = (
        "enroll",
        "--template",
        "volunteer-followup",
        "--workshop",
        "Atelier Lyon",
        "--date",
        "2026-11-20",
        "--as",
        "camille@nmh.example.org",
        "--now",
        "2026-11-20T18:00",
        str(attendees),
        "--json",
    )
    first = cli(*args)
    assert first.exit_code == 0, first
    assert (first.json()["created"], first.json()["plans_created"]) == (2, 2)
    again = cli(*args).json()
    assert (again["created"], again["plans_created"], again["plans_existing"]) == (0, 0, 2)
    missing = cli(
        "enroll",
        "--template",
        "volunteer-followup",
        "--workshop",
        "W",
        "--date",
        "2026-11-20",
        "--as",
        "camille@nmh.example.org",
        str(tmp_path / "nope.csv"),
    )
    assert missing.exit_code == 1 and "no such file" in missing.stderr
