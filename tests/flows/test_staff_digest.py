"""The staff-digest flow on a real Prefect server and a real SMTP server: the morning email, once, counts only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from call_plans import enroll, received, release_calls, staff_member
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlmodel import Session

from engage import db
from engage.mail.capture import SmtpCapture
from engage.plans import calls
from flows.staff_digest import staff_digest

SEVEN_IN_PARIS = datetime(2026, 12, 23, 6, 0, tzinfo=UTC)


def test_the_staff_digest_flow_emails_each_morning_once(
    prefect: str, session: Session, smtp_sink: SmtpCapture, cli
) -> None:  # type: ignore[no-untyped-def]
    staff_member(session)
    staff_member(session, "paul@nmh.example.org", name="Paul")
    release_calls(session, enroll(session, 3, first_name="Léa"))
    with db.session_scope() as work:
        calls.sync_calls(session=work, now=datetime(2026, 12, 7, 8, tzinfo=UTC))

    before = staff_digest(now=SEVEN_IN_PARIS - timedelta(hours=1))
    assert before["sent"] == 0 and before["not_their_morning"] == 2
    counts = staff_digest(now=SEVEN_IN_PARIS)
    assert counts == {
        "sent": 1,
        "nothing_to_do": 1,
        "not_their_morning": 0,
        "already_done": 0,
        "failed": 0,
        "unknown": 0,
    }
    assert staff_digest(now=SEVEN_IN_PARIS + timedelta(hours=1))["already_done"] == 2
    ((recipient, message),) = received(smtp_sink)
    assert recipient == "camille@nmh.example.org" and "3 appels" in str(message["Subject"])

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["staff-digest"])))
    assert artifacts
    shown = " ".join(str(artifact.data) for artifact in artifacts)
    assert "nothing_to_do" in shown and "Léa" not in shown and "@" not in shown  # counts, never people

    # The same from the terminal, for one person: already done today.
    result = cli("digest", "--to", "camille@nmh.example.org", "--now", "2026-12-23T10:00", "--json")
    assert result.exit_code == 0, result
    assert result.json()["already_done"] == 1
