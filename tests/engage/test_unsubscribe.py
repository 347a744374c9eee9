"""Unsubscribe links: signed tokens, the secret check, and the web app served for real by uvicorn."""

from __future__ import annotations

import email
import email.policy
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from factories import create_contact
from sqlmodel import Session, col, select

from engage.errors import ConfigurationError
from engage.mail.capture import SmtpCapture
from engage.settings import Settings
from engage.unsubscribe.app import create_app
from engage.unsubscribe.tokens import (
    SOURCE_LINK,
    SOURCE_ONE_CLICK,
    BadTokenError,
    check_secret,
    make_token,
    read_token,
    record_opt_out,
    unsubscribe_url,
)
from models import Call, Contact, Plan, PlanStep, StepStatus

LONG_SECRET = "x9Lq2vT7pRm4sWn8bYc3kHd6fJg1aZe5"
ONE_CLICK = {"content": b"List-Unsubscribe=One-Click", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


# --- tokens ---------------------------------------------------------------------------------------------------


def test_a_token_names_its_contact_and_nobody_else() -> None:
    settings = Settings(unsubscribe_secret=LONG_SECRET)
    token = make_token(42, settings)
    assert read_token(token, settings) == 42
    signature = token.partition(".")[2]
    with pytest.raises(BadTokenError):
        read_token(f"43.{signature}", settings)
    with pytest.raises(BadTokenError):
        read_token(token, Settings(unsubscribe_secret=LONG_SECRET + "-rotated"))


@pytest.mark.parametrize(
    "token", ["", "42", "42.", ".abc", "x.abc", "-1.abc", "42.abc", "1" * 40 + ".abc", "42.abc.def", "４２.abc"]
)
def test_a_malformed_or_forged_token_is_refused(token: str) -> None:
    with pytest.raises(BadTokenError):
        read_token(token, Settings(unsubscribe_secret=LONG_SECRET))


def test_one_changed_character_is_refused() -> None:
    settings = Settings(unsubscribe_secret=LONG_SECRET)
    token = make_token(7, settings)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(BadTokenError):
        read_token(flipped, settings)


@pytest.mark.parametrize(
    ("base_url", "secret", "host", "refused"),
    [
        ("http://127.0.0.1:8025", None, None, None),
        ("http://localhost:8025", None, "127.0.0.1", None),
        ("http://[::1]:8025", None, None, None),
        ("https://nomorehomelessness.org/engage", None, None, "development placeholder"),
        ("https://nomorehomelessness.org/engage", "short-but-set", None, "shorter than 24"),
        ("https://nomorehomelessness.org/engage", "please-change-me-please-change-me", None, "placeholder"),
        ("https://nomorehomelessness.org/engage", LONG_SECRET, None, None),
        ("http://127.0.0.1:8025", None, "0.0.0.0", "served at 0.0.0.0"),
    ],
)
def test_a_placeholder_secret_is_refused_for_links_that_leave_the_machine(
    base_url: str, secret: str | None, host: str | None, refused: str | None
) -> None:
    values: dict[str, Any] = {"unsubscribe_base_url": base_url}
    if secret is not None:
        values["unsubscribe_secret"] = secret
    settings = Settings(**values)
    if refused is None:
        check_secret(settings, serving_host=host)
        return
    with pytest.raises(ConfigurationError, match=refused):
        check_secret(settings, serving_host=host)


def test_no_link_is_made_and_no_app_starts_with_a_placeholder_in_production() -> None:
    settings = Settings(unsubscribe_base_url="https://nomorehomelessness.org/engage")
    with pytest.raises(ConfigurationError, match="ENGAGE_UNSUBSCRIBE_SECRET"):
        unsubscribe_url(1, settings)
    with pytest.raises(ConfigurationError, match="ENGAGE_UNSUBSCRIBE_SECRET"):
        create_app(settings)


def test_recording_an_opt_out_twice_keeps_the_first(session: Session) -> None:
    contact = create_contact(session)
    first = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    record_opt_out(session=session, contact_id=contact.id or 0, source=SOURCE_ONE_CLICK, now=first)
    record_opt_out(session=session, contact_id=contact.id or 0, source=SOURCE_LINK, now=datetime.now(UTC))
    session.commit()
    session.refresh(contact)
    assert (contact.email_opt_out, contact.email_opt_out_at, contact.email_opt_out_source) == (
        True,
        first,
        SOURCE_ONE_CLICK,
    )
    assert record_opt_out(session=session, contact_id=10**9, source=SOURCE_LINK) is None


# --- the app, served by uvicorn -------------------------------------------------------------------------------


def contact_in(session: Session, **fields: Any) -> Contact:
    contact = create_contact(session, **fields)
    session.commit()
    return contact


def reread(session: Session, contact: Contact) -> Contact:
    session.commit()  # end the test session's snapshot: the app wrote in its own
    session.refresh(contact)
    return contact


@pytest.mark.parametrize(
    ("language", "words"), [("fr", "Ne plus recevoir nos e-mails"), ("en", "Stop receiving our emails")]
)
def test_get_shows_a_confirmation_in_the_contact_language_and_changes_nothing(
    session: Session, unsubscribe_app: Any, language: str, words: str
) -> None:
    contact = contact_in(session, email="helene@example.org", language=language)
    response = httpx.get(unsubscribe_url(contact.id or 0))
    assert response.status_code == 200
    assert words in response.text and f'<html lang="{language}">' in response.text
    assert '<form method="post">' in response.text and "h•••@example.org" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert reread(session, contact).email_opt_out is False


def test_one_click_post_unsubscribes_once_and_says_so(session: Session, unsubscribe_app: Any) -> None:
    contact = contact_in(session, language="en")
    url = unsubscribe_url(contact.id or 0)
    response = httpx.post(url, **ONE_CLICK)  # type: ignore[arg-type]
    assert response.status_code == 200 and "You will not receive our emails any more" in response.text
    contact = reread(session, contact)
    assert contact.email_opt_out and contact.email_opt_out_source == SOURCE_ONE_CLICK
    first = contact.email_opt_out_at
    assert first is not None and abs((datetime.now(UTC) - first).total_seconds()) < 60

    again = httpx.post(url, **ONE_CLICK)  # type: ignore[arg-type]
    assert again.status_code == 200
    assert reread(session, contact).email_opt_out_at == first
    assert "You will not receive" in httpx.get(url).text  # the link now says it is done


def test_the_confirmation_button_unsubscribes_too(session: Session, unsubscribe_app: Any) -> None:
    contact = contact_in(session, language="fr")
    response = httpx.post(
        unsubscribe_url(contact.id or 0),
        content=b"confirm=yes",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200 and "Vous ne recevrez plus nos e-mails" in response.text
    assert reread(session, contact).email_opt_out_source == SOURCE_LINK


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_tampered_link_gets_a_clear_400_page(session: Session, unsubscribe_app: Any, method: str) -> None:
    contact = contact_in(session, language="fr")
    victim = contact_in(session, language="fr")
    token = make_token(contact.id or 0)
    forged = f"{victim.id}.{token.partition('.')[2]}"
    for bad in (forged, token[:-2], token + "x", "../etc/passwd"):
        response = httpx.request(
            method,
            f"{unsubscribe_app.base_url}/u/{bad}",
            headers={"Accept-Language": "en-GB,en;q=0.9"},
            **({"content": ONE_CLICK["content"]} if method == "POST" else {}),
        )
        if bad.startswith(".."):
            assert response.status_code == 404
            continue
        assert response.status_code == 400, bad
        assert "This link is not valid." in response.text
        assert "Traceback" not in response.text
    assert reread(session, victim).email_opt_out is False
    assert reread(session, contact).email_opt_out is False


def test_other_paths_and_methods_get_pages_too(unsubscribe_app: Any) -> None:
    missing = httpx.get(f"{unsubscribe_app.base_url}/nothing-here", headers={"Accept-Language": "fr"})
    assert missing.status_code == 404 and "Cette page n'existe pas" in missing.text
    wrong = httpx.put(f"{unsubscribe_app.base_url}/u/1.abc")
    assert wrong.status_code == 405 and "<html" in wrong.text


def test_a_broken_ledger_gives_a_page_not_a_stack_trace(serve: Callable[[Any], Any], tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'nowhere' / 'engage.db'}")
    app = serve(create_app(settings))
    response = httpx.get(f"{app.base_url}/u/{make_token(1, settings)}", headers={"Accept-Language": "en"})
    assert response.status_code == 500
    assert "Something went wrong on our side." in response.text and "Traceback" not in response.text


# --- unsubscribing stops the emails, not the calls -------------------------------------------------------------


def test_unsubscribing_through_the_link_skips_the_next_emails_but_not_the_call(
    session: Session,
    smtp_sink: SmtpCapture,
    unsubscribe_app: Any,
    enroll: Callable[..., list[int]],
    run_plans: Callable[..., list[Any]],
) -> None:
    enroll(
        "volunteer-followup",
        {"email": "stays@example.org", "language": "fr"},
        {"email": "leaves@example.org", "language": "fr"},
        {"email": "leaves-and-no-calls@example.org", "language": "en", "do_not_call": True},
    )

    def unsubscribe_after_the_survey(now: datetime) -> None:
        for captured in smtp_sink.messages:
            message = email.message_from_bytes(captured.data, policy=email.policy.default)
            recipient = message["To"].addresses[0].addr_spec
            if recipient.startswith("leaves") and "survey" not in done:
                link = re.fullmatch(r"<(.+)>", str(message["List-Unsubscribe"]))
                assert link is not None and link.group(1).startswith(unsubscribe_app.base_url)
                assert httpx.post(link.group(1), **ONE_CLICK).status_code == 200  # type: ignore[arg-type]
        done.add("survey")

    done: set[str] = set()
    run_plans(between=unsubscribe_after_the_survey)
    session.commit()

    recipients = [
        email.message_from_bytes(m.data, policy=email.policy.default)["To"].addresses[0].addr_spec
        for m in smtp_sink.messages
    ]
    assert sorted(recipients) == sorted(
        ["stays@example.org"] * 3 + ["leaves@example.org", "leaves-and-no-calls@example.org"]
    )
    contacts = {c.email: c for c in session.exec(select(Contact))}
    by_contact: dict[str, dict[str, PlanStep]] = defaultdict(dict)
    for step, contact in session.exec(
        select(PlanStep, Contact)
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .join(Contact, col(Contact.id) == Plan.contact_id)
    ):
        by_contact[contact.email][step.step_key] = step

    for who in ("leaves@example.org", "leaves-and-no-calls@example.org"):
        assert contacts[who].email_opt_out_source == SOURCE_ONE_CLICK
        assert by_contact[who]["survey"].status == StepStatus.DONE
        for key in ("resource-pack", "motivation"):
            assert by_contact[who][key].status == StepStatus.SKIPPED
            assert "unsubscribe-one-click" in (by_contact[who][key].skip_reason or "")
    assert by_contact["leaves@example.org"]["follow-up-call"].status == StepStatus.OPEN
    assert by_contact["leaves-and-no-calls@example.org"]["follow-up-call"].status == StepStatus.SKIPPED
    assert by_contact["stays@example.org"]["follow-up-call"].status == StepStatus.OPEN
    assert len(session.exec(select(Call)).all()) == 2
