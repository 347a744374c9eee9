"""`engage templates`: list, validate and show, run in-process as the console script runs."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
VOLUNTEER = "plan_templates/volunteer-followup.yaml"
DONOR = "plan_templates/donor-followup.yaml"


def _edit(path: Path, old: str, new: str) -> None:
    content = path.read_text(encoding="utf-8")
    assert old in content
    path.write_text(content.replace(old, new, 1), encoding="utf-8")


# --- validate -----------------------------------------------------------------------------------------------


def test_validate_says_ok_for_each_good_file(cli, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("templates", "validate")
    assert result.exit_code == 0, result
    assert result.stdout.splitlines() == [f"ok {DONOR}", f"ok {VOLUNTEER}"]
    assert result.stderr == ""
    assert not (workspace / "engage.db").exists(), "validate must not touch the ledger"


def test_validate_one_file(cli, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("templates", "validate", VOLUNTEER)
    assert result.exit_code == 0, result
    assert result.stdout.splitlines() == [f"ok {VOLUNTEER}"]


def test_validate_prints_each_problem_on_stderr_and_fails(cli, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    _edit(workspace / VOLUNTEER, "depends_on: survey", "depends_on: surveyy")
    _edit(workspace / VOLUNTEER, "timezone: Europe/Paris", "timezone: Europe/Pariss")
    result = cli("templates", "validate")
    assert result.exit_code == 1, result
    assert result.stdout.splitlines() == [f"ok {DONOR}"]
    assert result.stderr.splitlines() == [
        f"{VOLUNTEER}: timezone: unknown time zone 'Europe/Pariss'; use an IANA name such as Europe/Paris",
        f'{VOLUNTEER}: step "resource-pack": depends_on: no step named "surveyy" (did you mean "survey"?)',
        "error: 1 of 2 plan template files do not validate",
    ]


def test_validate_a_file_with_broken_yaml(cli, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    _edit(workspace / VOLUNTEER, "  - key: survey", "  - key: survey\n   name: [oops")
    result = cli("templates", "validate", VOLUNTEER)
    assert result.exit_code == 1, result
    assert result.stderr.startswith(f"{VOLUNTEER}: line ")
    assert "invalid YAML" in result.stderr


def test_validate_a_missing_folder(cli, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("templates", "validate", "nowhere")
    assert result.exit_code == 1, result
    assert "nowhere: no such folder of plan templates" in result.stderr


def test_validate_an_empty_folder(cli, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    (workspace / "empty").mkdir()
    result = cli("templates", "validate", "empty")
    assert result.exit_code == 1, result
    assert "no plan template files in empty" in result.stderr


# --- list ---------------------------------------------------------------------------------------------------


def test_list_syncs_and_shows_versions(cli, workspace: Path, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("templates", "list", "--json")
    assert result.exit_code == 0, result
    listed = result.json()
    assert isinstance(listed, list)
    assert [(t["key"], t["version"], t["steps"], t["skip_weekends"]) for t in listed] == [
        ("donor-followup", 1, 4, True),
        ("volunteer-followup", 1, 4, True),
    ]
    _edit(workspace / VOLUNTEER, "days_after: 16", "days_after: 15")
    again = cli("templates", "list", "--json").json()
    assert isinstance(again, list)
    assert [(t["key"], t["version"]) for t in again] == [("donor-followup", 1), ("volunteer-followup", 2)]

    table = cli("templates", "list")
    assert table.exit_code == 0, table
    row = next(line for line in table.stdout.splitlines() if "volunteer-followup" in line)
    assert "Volunteer follow-up" in row and " 2 " in row and "yes" in row


def test_list_refuses_a_broken_file(cli, workspace: Path, db_url: str) -> None:  # type: ignore[no-untyped-def]
    _edit(workspace / DONOR, "days_after: 6", "days_after: -6")
    result = cli("templates", "list")
    assert result.exit_code == 1, result
    assert f'{DONOR}: step "call-to-give": days_after: must be 0 or more' in result.stderr


# --- show ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["volunteer-followup", "donor-followup"])
def test_show_counts_days_as_staff_say_them(cli, workspace: Path, db_url: str, key: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("templates", "show", key, "--json")
    assert result.exit_code == 0, result
    shown = result.json()
    assert isinstance(shown, dict)
    assert shown["version"] == 1
    assert [(s["day"], s["days_after"]) for s in shown["steps"]] == [(1, 1), (7, 6), (14, 7), (30, 16)]


def test_show_prints_the_steps_as_a_table(cli, workspace: Path, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("templates", "show", "volunteer-followup")
    assert result.exit_code == 0, result
    assert "Volunteer follow-up (volunteer-followup, version 1)" in result.stdout
    rows = {line.split()[1]: line.split() for line in result.stdout.splitlines() if line.strip()[:2].strip().isdigit()}
    assert {key: row[0] for key, row in rows.items()} == {
        "survey": "1",
        "resource-pack": "7",
        "motivation": "14",
        "follow-up-call": "30",
    }
    assert "volunteer/resource-pack" in " ".join(rows["resource-pack"])
    assert "applier" in rows["follow-up-call"]


def test_show_an_older_version(cli, workspace: Path, db_url: str) -> None:  # type: ignore[no-untyped-def]
    assert cli("templates", "list").exit_code == 0
    _edit(workspace / DONOR, "name: Call by the owner", "name: Thank-you call")
    current = cli("templates", "show", "donor-followup", "--json").json()
    old = cli("templates", "show", "donor-followup", "--version", "1", "--json").json()
    assert isinstance(current, dict) and isinstance(old, dict)
    assert (current["version"], current["steps"][-1]["name"]) == (2, "Thank-you call")
    assert (old["version"], old["steps"][-1]["name"]) == (1, "Call by the owner")
    missing = cli("templates", "show", "donor-followup", "--version", "9")
    assert missing.exit_code == 1
    assert 'no version 9 of plan template "donor-followup"' in missing.stderr


def test_show_an_unknown_template(cli, workspace: Path, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("templates", "show", "nope")
    assert result.exit_code == 1, result
    assert 'no plan template "nope"' in result.stderr
    assert "known: donor-followup, volunteer-followup" in result.stderr
