"""The SMTP sender and the messages it builds, against real SMTP servers (aiosmtpd) with TLS and AUTH."""

from __future__ import annotations

import email
import email.policy
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from engage.errors import ConnectionSendError, PermanentSendError, SendOutcomeUnknownError, TransientSendError
from engage.mail.message import CalendarPart, OutgoingEmail, PreparedMessage, build_message, new_message_id
from engage.mail.smtp import SmtpSender
from engage.secrets import smtp_password_source
from engage.settings import Settings, get_settings

Relay = Callable[..., Any]
UseRelay = Callable[..., None]

SMTP_USER, SMTP_PASSWORD = "engage-relay", "pa55-w0rd-that-must-never-show"  # what the `relay` fixture accepts
HTML = '<!DOCTYPE html><html><body><p style="color: #333;">Bonjour Hélène, 30&nbsp;€ = un repas.</p></body></html>'


def outgoing(**overrides: object) -> OutgoingEmail:
    values: dict[str, object] = {
        "to": "helene.lefevre@example.org",
        "to_name": "Hélène Lefèvre",
        "subject": "Merci pour votre présence à « Regards sur la rue » : votre avis en 3 minutes",
        "text": "Bonjour Hélène,\n\n30 € financent une nuit à l'abri.\n",
        "html": HTML,
        "reply_to": "camille@nmh.example.org",
        "reply_to_name": "Camille Martin",
        "message_id": "<0123456789abcdef0123456789abcdef@nomorehomelessness.org>",
        "unsubscribe_url": "https://unsubscribe.example.org/u/42.c2lnbmF0dXJl",
        "language": "fr",
    }
    values.update(overrides)
    return OutgoingEmail(**values)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None and part.get_content_type() == f"text/{subtype}"
    # Parsed from SMTP's CRLF bytes, the content keeps CRLF line ends (a mailbox would store LF).
    return str(part.get_content()).replace("\r\n", "\n")


# --- building -------------------------------------------------------------------------------------------------


def test_a_message_has_both_parts_and_every_header() -> None:
    settings = Settings()
    message = parse(build_message(outgoing(), settings).data)
    assert message.defects == [] and all(part.defects == [] for part in message.walk())
    assert message.get_content_type() == "multipart/alternative"
    assert str(message["From"]) == "No More Homelessness <contact@nomorehomelessness.org>"
    assert message["To"].addresses[0].display_name == "Hélène Lefèvre"
    assert message["To"].addresses[0].addr_spec == "helene.lefevre@example.org"
    assert str(message["Reply-To"]) == "Camille Martin <camille@nmh.example.org>"
    assert message["Subject"] == "Merci pour votre présence à « Regards sur la rue » : votre avis en 3 minutes"
    assert message["Message-ID"] == "<0123456789abcdef0123456789abcdef@nomorehomelessness.org>"
    assert message["Date"].datetime is not None and message["Date"].datetime.utcoffset() is not None
    assert message["Content-Language"] == "fr"
    assert message["MIME-Version"] == "1.0"
    assert message["List-Unsubscribe"] == "<https://unsubscribe.example.org/u/42.c2lnbmF0dXJl>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body_of(message, "plain") == "Bonjour Hélène,\n\n30 € financent une nuit à l'abri.\n"
    assert body_of(message, "html") == HTML + "\n"
    assert [part.get_content_charset() for part in message.walk() if not part.is_multipart()] == ["utf-8", "utf-8"]


def test_the_bytes_are_what_smtp_wants_7_bit_crlf_and_short_lines() -> None:
    data = build_message(outgoing(html="<p>" + "é" * 400 + "</p>"), Settings()).data
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 78


def test_names_and_subjects_keep_every_character() -> None:
    tricky = 'Tom <b>&</b> "Jerry" Zoë, Jr.'
    message = parse(
        build_message(outgoing(to_name=tricky, subject="Zoë & « Tom » : 100 % réel — ok?"), Settings()).data
    )
    assert message["To"].addresses[0].display_name == tricky
    assert message["Subject"] == "Zoë & « Tom » : 100 % réel — ok?"


def test_a_name_cannot_add_a_header() -> None:
    message = parse(
        build_message(outgoing(to_name="Eve\r\nBcc: everyone@example.org", subject="Hi\nBcc: x@y"), Settings()).data
    )
    assert message["Bcc"] is None
    assert message["To"].addresses[0].display_name == "Eve Bcc: everyone@example.org"
    assert message["Subject"] == "Hi Bcc: x@y"


def test_a_long_ascii_subject_is_folded_and_reads_back_whole() -> None:
    subject = "How about organising a get-together in your neighbourhood with friends, colleagues and neighbours?"
    data = build_message(outgoing(subject=subject), Settings()).data
    assert parse(data)["Subject"] == subject
    assert max(len(line) for line in data.split(b"\r\n")) <= 78


def test_a_line_starting_with_from_survives_relays_that_mangle_it() -> None:
    text = "Hello,\nFrom now on, we write less.\n.\nBye\n"
    data = build_message(outgoing(text=text, html=None), Settings()).data
    assert b"\r\nFrom " not in data
    message = parse(data)
    assert message.get_content_type() == "text/plain"
    assert message.get_content().replace("\r\n", "\n") == text


def test_without_a_reply_to_none_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """Who answers is the signer's to say (`engage.rendering.context.signer`); the builder writes what it is given."""
    monkeypatch.setenv("ENGAGE_ORGANISATION_REPLY_TO", "hello@nomorehomelessness.org")
    message = parse(build_message(outgoing(reply_to=None, reply_to_name=None), Settings()).data)
    assert message["Reply-To"] is None


def test_a_calendar_message_has_the_text_and_the_calendar_and_says_it_is_automatic() -> None:
    calendar = b"BEGIN:VCALENDAR\r\nMETHOD:CANCEL\r\nX-LONG:" + b"x" * 200 + b"\r\nEND:VCALENDAR\r\n"
    email = outgoing(
        html=None,
        unsubscribe_url=None,
        reply_to=None,
        calendar=CalendarPart(method="CANCEL", data=calendar),
        auto_submitted=True,
        date=datetime(2026, 12, 7, 9, tzinfo=UTC),
    )
    data = build_message(email, Settings()).data
    assert data.isascii() and max(len(line) for line in data.split(b"\r\n")) <= 78
    message = parse(data)
    assert message.defects == [] and message.get_content_type() == "multipart/alternative"
    assert message["Auto-Submitted"] == "auto-generated" and message["List-Unsubscribe"] is None
    assert message["Date"].datetime == datetime(2026, 12, 7, 9, tzinfo=UTC)
    text, part = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert (part.get_content_type(), part.get_param("method")) == ("text/calendar", "CANCEL")
    assert part.get_payload(decode=True) == calendar


def test_a_message_has_an_html_part_or_a_calendar_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        build_message(outgoing(calendar=CalendarPart(method="REQUEST", data=b"x")), Settings())


def test_the_mailer_imports_no_prefect_and_its_builder_and_sender_no_database() -> None:
    import ast
    import subprocess
    import sys
    from pathlib import Path

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, engage.mail; print(sorted(m for m in sys.modules if 'prefect' in m))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
    folder = Path(__file__).resolve().parents[2] / "engage" / "mail"
    for module in ("message.py", "smtp.py"):
        tree = ast.parse((folder / module).read_text(encoding="utf-8"))
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in {"prefect", "sqlalchemy", "sqlmodel", "models"}], module
        assert "engage.db" not in names and "engage.secrets" not in names, module


def test_list_unsubscribe_may_also_offer_a_mailto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGE_UNSUBSCRIBE_MAILTO", "unsubscribe@nomorehomelessness.org")
    message = parse(build_message(outgoing(), Settings()).data)
    assert message["List-Unsubscribe"] == (
        "<mailto:unsubscribe@nomorehomelessness.org?subject=unsubscribe%2042.c2lnbmF0dXJl>, "
        "<https://unsubscribe.example.org/u/42.c2lnbmF0dXJl>"
    )


def test_an_address_smtp_cannot_carry_fails_for_good() -> None:
    with pytest.raises(PermanentSendError, match="non-ASCII local part"):
        build_message(outgoing(to="zoë@example.org"), Settings())
    international = parse(build_message(outgoing(to="zoe@exämple.org"), Settings()).data)
    assert international["To"].addresses[0].domain == "xn--exmple-cua.org"


def test_message_ids_are_unique_and_from_the_organisation_domain() -> None:
    ids = {new_message_id(Settings()) for _ in range(100)}
    assert len(ids) == 100 and all(i.endswith("@nomorehomelessness.org>") for i in ids)


# --- sending --------------------------------------------------------------------------------------------------


def prepared(n: int, **overrides: object) -> PreparedMessage:
    return build_message(
        outgoing(to=f"contact{n}@example.org", message_id=new_message_id(Settings()), **overrides), Settings()
    )


def test_one_connection_carries_a_batch_and_the_server_answer_is_returned(relay: Relay, use_relay: UseRelay) -> None:
    server = relay()
    use_relay(server)
    with SmtpSender(get_settings()) as sender:
        answers = [sender.send(prepared(n)) for n in range(3)]
    assert answers == [f"250 2.0.0 Ok: queued as Q000{n}" for n in (1, 2, 3)]
    assert server.connections == 1
    received = server.received
    assert [r.recipients for r in received] == [[f"contact{n}@example.org"] for n in range(3)]
    assert {r.sender for r in received} == {"contact@nomorehomelessness.org"}


def test_a_dropped_connection_is_reopened_and_nothing_is_sent_twice(relay: Relay, use_relay: UseRelay) -> None:
    server = relay(close_after_each=True)
    use_relay(server)
    with SmtpSender(get_settings()) as sender:
        for n in range(4):
            sender.send(prepared(n))
        assert sender.connections_opened == 4
    assert [r.recipients[0] for r in server.received] == [f"contact{n}@example.org" for n in range(4)]


def test_a_connection_lost_after_the_content_is_an_unknown_outcome_not_a_resend(
    relay: Relay, use_relay: UseRelay
) -> None:
    server = relay(vanish_during_data=True)
    use_relay(server)
    with SmtpSender(get_settings()) as sender, pytest.raises(SendOutcomeUnknownError, match="may have been delivered"):
        sender.send(prepared(1))
    assert len(server.received) == 1
    assert issubclass(SendOutcomeUnknownError, TransientSendError)


def test_a_recipient_refused_for_good_keeps_the_answer_and_the_connection(relay: Relay, use_relay: UseRelay) -> None:
    def refuse(address: str) -> str | None:
        return "550 5.1.1 <contact1@example.org>: mailbox unavailable" if address == "contact1@example.org" else None

    server = relay(refuse=refuse)
    use_relay(server)
    with SmtpSender(get_settings()) as sender:
        with pytest.raises(PermanentSendError) as refused:
            sender.send(prepared(1))
        sender.send(prepared(2))
    assert refused.value.code == 550
    assert refused.value.response == "550 5.1.1 <contact1@example.org>: mailbox unavailable"
    assert [r.recipients for r in server.received] == [["contact2@example.org"]]
    assert server.connections == 1


def test_a_deferral_is_transient(relay: Relay, use_relay: UseRelay) -> None:
    server = relay(refuse=lambda address: "451 4.7.1 greylisted, try again later")
    use_relay(server)
    with SmtpSender(get_settings()) as sender, pytest.raises(TransientSendError) as deferred:
        sender.send(prepared(1))
    assert not isinstance(deferred.value, PermanentSendError)
    assert deferred.value.code == 451 and "greylisted" in str(deferred.value)


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_and_login_with_a_private_ca(relay: Relay, use_relay: UseRelay, security: str) -> None:
    server = relay(security=security, auth=True)
    use_relay(server, security=security, user=SMTP_USER, password=SMTP_PASSWORD)
    with SmtpSender(get_settings()) as sender:
        sender.send(prepared(1))
        sender.send(prepared(2))
    assert [(r.tls, r.login) for r in server.received] == [(True, SMTP_USER), (True, SMTP_USER)]
    assert server.connections == 1


def test_a_certificate_from_an_unknown_ca_is_refused_with_the_setting_to_fix_it(
    relay: Relay, use_relay: UseRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = relay(security="starttls")
    use_relay(server, security="starttls")
    monkeypatch.delenv("ENGAGE_SMTP_CA_FILE")
    get_settings.cache_clear()
    with SmtpSender(get_settings()) as sender, pytest.raises(ConnectionSendError, match="ENGAGE_SMTP_CA_FILE"):
        sender.send(prepared(1))
    assert server.received == []


def test_starttls_asked_of_a_server_without_it_sends_nothing(relay: Relay, use_relay: UseRelay) -> None:
    server = relay()
    use_relay(server, security="starttls")
    with SmtpSender(get_settings()) as sender, pytest.raises(ConnectionSendError, match="does not offer STARTTLS"):
        sender.send(prepared(1))
    assert server.received == []


def test_the_password_never_shows(relay: Relay, use_relay: UseRelay, caplog: pytest.LogCaptureFixture) -> None:
    server = relay(security="starttls", auth=True)
    use_relay(server, security="starttls", user=SMTP_USER, password="wrong-" + SMTP_PASSWORD)
    caplog.set_level(logging.DEBUG)
    settings = get_settings()
    with SmtpSender(settings) as sender:
        with pytest.raises(ConnectionSendError, match="login refused for user 'engage-relay'") as refused:
            sender.send(prepared(1))
        shown = [str(refused.value), repr(refused.value), repr(sender), repr(settings), str(settings.model_dump())]
    shown.append(caplog.text)
    assert not any(SMTP_PASSWORD in text for text in shown)
    assert refused.value.code == 535
    assert server.received == []


def test_a_user_without_a_password_is_a_clear_error(relay: Relay, use_relay: UseRelay) -> None:
    server = relay(security="starttls", auth=True)
    use_relay(server, security="starttls", user=SMTP_USER)
    with SmtpSender(get_settings()) as sender, pytest.raises(ConnectionSendError, match="ENGAGE_SMTP_PASSWORD_BLOCK"):
        sender.send(prepared(1))


def test_the_password_can_come_from_a_prefect_secret_block(
    prefect_api: str, relay: Relay, use_relay: UseRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    Secret(value=SMTP_PASSWORD).save("engage-smtp-password-test", overwrite=True)
    server = relay(security="starttls", auth=True)
    use_relay(server, security="starttls", user=SMTP_USER)
    monkeypatch.setenv("ENGAGE_SMTP_PASSWORD_BLOCK", "engage-smtp-password-test")
    get_settings.cache_clear()
    settings = get_settings()
    with SmtpSender(settings, password=smtp_password_source(settings)) as sender:
        sender.send(prepared(1))
        assert SMTP_PASSWORD not in repr(sender)
    assert [r.login for r in server.received] == [SMTP_USER]

    monkeypatch.setenv("ENGAGE_SMTP_PASSWORD_BLOCK", "no-such-block")
    get_settings.cache_clear()
    settings = get_settings()
    with (
        SmtpSender(settings, password=smtp_password_source(settings)) as sender,
        pytest.raises(ConnectionSendError, match="'no-such-block'"),
    ):
        sender.send(prepared(2))
    # A sender given no way to read the block says so, rather than asking for a password that is configured.
    with SmtpSender(settings) as sender, pytest.raises(ConnectionSendError, match="given no way to read it"):
        sender.send(prepared(3))


def test_the_rate_limit_spaces_messages(relay: Relay, use_relay: UseRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    server = relay()
    use_relay(server)
    monkeypatch.setenv("ENGAGE_SMTP_RATE_PER_MINUTE", "1200")  # one every 50 ms
    get_settings.cache_clear()
    with SmtpSender(get_settings()) as sender:
        sender.send(prepared(0))
        started = time.monotonic()
        for n in range(1, 5):
            sender.send(prepared(n))
        elapsed = time.monotonic() - started
    assert elapsed >= 4 * 0.05 * 0.9
    assert len(server.received) == 5


def test_the_reference_builders_messages_are_sent_too(relay: Relay, use_relay: UseRelay) -> None:
    """The benchmark's plain baseline sends standard-library messages through `engage.reference`."""
    from engage.reference import prepare_email_message

    server = relay()
    use_relay(server)
    invite = EmailMessage()
    invite["From"] = "contact@nomorehomelessness.org"
    invite["To"] = "Camille Martin <camille@nmh.example.org>"
    invite["Bcc"] = "archive@nmh.example.org"
    invite["Subject"] = "Appel de suivi : Hélène"
    invite.set_content("Un appel est prévu.")
    with SmtpSender(get_settings()) as sender:
        sender.send(prepare_email_message(invite, get_settings()))
    (received,) = server.received
    assert received.recipients == ["camille@nmh.example.org", "archive@nmh.example.org"]
    message = parse(received.data)
    assert message["Bcc"] is None and message["Subject"] == "Appel de suivi : Hélène"
