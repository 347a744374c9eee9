from __future__ import annotations

import pytest
from factories import create_contact
from sqlmodel import Session

NOW = "2026-11-20T18:00"


@pytest.fixture
def ready(cli, session: Session):  # type: ignore[no-untyped-def]
    """A staff member and one contact in the ledger; ENGAGE_STAFF_EMAIL names the staff member."""
    assert cli("staff", "add", "camille@nmh.example.org", "--name", "Camille Martin").exit_code == 0
    assert cli("staff", "add", "yanis@nmh.example.org", "--name", "Yanis Benali").exit_code == 0
    create_contact(session, email="Lea.Moreau@example.org", first_name="Léa", last_name="Moreau")
    session.commit()
    return cli


def test_apply_show_and_list_a_plan(ready, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    cli = ready
    monkeypatch.setenv("ENGAGE_STAFF_EMAIL", "camille@nmh.example.org")
    applied = cli(
        "plans",
        "apply",
        "volunteer-followup",
        "lea.moreau@example.org",
        "--workshop",
        "Atelier Lyon",
        "--date",
        "2026-11-20",
        "--now",
        NOW,
        "--json",
    )
    assert applied.exit_code == 0, applied
    plan_id = applied.json()["id"]
    again = cli(
        "plans",
        "apply",
        "volunteer-followup",
        "LEA.MOREAU@example.org",
        "--workshop",
        "Atelier Lyon",
        "--date",
        "2026-11-20",
        "--now",
        NOW,
        "--json",
    )
    assert again.json() == applied.json() | {"created": False}

    shown = cli("plans", "show", str(plan_id), "--json").json()
    assert [s["status"] for s in shown["steps"]] == ["scheduled", "waiting", "waiting", "waiting"]
    assert shown["steps"][0]["due_at"] == "2026-11-23T08:00:00+00:00"
    listed = cli("plans", "list", "--workshop", "Atelier Lyon", "--json").json()
    assert [(p["id"], p["steps_done"], p["steps"]) for p in listed] == [(plan_id, 0, 4)]
    table = cli("plans", "list")
    assert "lea.moreau@example.org" in table.stdout.lower() and "0/4" in table.stdout


def test_tasks_are_worked_from_the_terminal(ready) -> None:  # type: ignore[no-untyped-def]
    cli = ready
    plan_id = cli(
        "plans",
        "apply",
        "volunteer-followup",
        "lea.moreau@example.org",
        "--as",
        "camille@nmh.example.org",
        "--date",
        "2026-11-20",
        "--now",
        NOW,
        "--json",
    ).json()["id"]
    steps = cli("plans", "show", str(plan_id), "--json").json()["steps"]
    survey, call = steps[0]["id"], steps[3]["id"]

    upcoming = cli("tasks", "list", "--upcoming", "7", "--now", NOW, "--json").json()
    assert [t["id"] for t in upcoming] == [survey]
    assert cli("tasks", "list", "--overdue", "--now", NOW, "--json").json() == []
    assert cli("tasks", "list", "--overdue", "--now", "2026-11-24T10:00", "--json").json()[0]["overdue"] is True
    assert cli("tasks", "list", "--assignee", "yanis@nmh.example.org", "--json").json() == []

    email_step = cli("tasks", "complete", str(survey), "--as", "camille@nmh.example.org")
    assert email_step.exit_code == 1 and "email step" in email_step.stderr
    waiting = cli("tasks", "reschedule", str(call), "2026-12-01")
    assert waiting.exit_code == 1 and "waiting" in waiting.stderr

    skipped = cli(
        "tasks",
        "skip",
        str(survey),
        "--reason",
        "already answered on paper",
        "--as",
        "camille@nmh.example.org",
        "--now",
        "2026-11-23T10:00",
    )
    assert skipped.exit_code == 0 and "Resource pack" in skipped.stdout
    moved = cli("tasks", "reassign", str(call), "yanis@nmh.example.org")
    assert moved.exit_code == 0 and "camille@nmh.example.org to yanis@nmh.example.org" in moved.stdout
    noted = cli("tasks", "comment", str(call), "prefers evenings", "--as", "yanis@nmh.example.org")
    assert noted.exit_code == 0
    follow = cli(
        "tasks",
        "follow-up",
        str(call),
        "--due",
        "2027-01-10",
        "--subject",
        "Send the charter",
        "--as",
        "yanis@nmh.example.org",
        "--json",
    )
    assert follow.exit_code == 0 and follow.json()["status"] == "open"
    mine = cli("tasks", "list", "--assignee", "yanis@nmh.example.org", "--json").json()
    assert [t["name"] for t in mine] == ["Send the charter"]

    cancelled = cli("plans", "cancel", str(plan_id), "--reason", "moved to Marseille")
    assert cancelled.exit_code == 0
    assert cli("plans", "list", "--status", "cancelled", "--json").json()[0]["cancel_reason"] == "moved to Marseille"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plans", "apply", "volunteer-followup", "nobody@example.org", "--as", "camille@nmh.example.org"), "import"),
        (
            ("plans", "apply", "no-such-template", "lea.moreau@example.org", "--as", "camille@nmh.example.org"),
            "no-such",
        ),
        (("plans", "apply", "volunteer-followup", "lea.moreau@example.org"), "ENGAGE_STAFF_EMAIL"),
        (("plans", "show", "999"), "no plan 999"),
        (("tasks", "complete", "999", "--as", "camille@nmh.example.org"), "no task 999"),
        (("tasks", "reschedule", "1", "tomorrow"), "expected a date"),
        (("tasks", "list", "--now", "soon"), "expected an ISO"),
    ],
)
def test_user_mistakes_are_one_line(ready, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    result = ready(*args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0


QUICK_CALL = """\
key: quick-call
name: Quick call
timezone: Europe/Paris
send_window: "09:00-17:00"
assignee: applier
steps:
  - {key: welcome-call, name: Welcome call, kind: call, days_after: 3}
"""


def test_a_change_that_tells_a_calendar_says_so_and_keeps_its_json_alone(  # type: ignore[no-untyped-def]
    ready, workspace, smtp_sink
) -> None:
    cli = ready
    (workspace / "plan_templates" / "quick-call.yaml").write_text(QUICK_CALL, "utf-8")
    args = ("plans", "apply", "quick-call", "lea.moreau@example.org", "--as", "camille@nmh.example.org", "--now", NOW)
    applied = cli(*args, "--json")
    assert applied.exit_code == 0, applied
    assert applied.json()["created"] is True  # stdout holds the JSON alone
    assert "calendar: 1 invites and 0 cancellations sent" in applied.stderr
    plan_id = applied.json()["id"]
    (call,) = cli("plans", "show", str(plan_id), "--json").json()["steps"]
    moved = cli("tasks", "reassign", str(call["id"]), "yanis@nmh.example.org", "--now", NOW)
    assert moved.exit_code == 0, moved
    assert "calendar: 1 invites and 1 cancellations sent" in moved.stdout
    again = cli(*args)
    assert again.exit_code == 0 and "already exists" in again.stdout and "calendar" not in again.stdout
    assert len(smtp_sink.messages) == 3
