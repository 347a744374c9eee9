"""Real parts for the email tests: SMTP servers with TLS and AUTH, a running unsubscribe app, enrolled plans."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from factories import apply_seed_plans, create_staff
from sqlmodel import Session as DbSession

from engage import runner
from engage.settings import get_settings
from models import Staff

MONDAY_9 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 09:00 in Paris: the first survey goes out
SMTP_USER = "engage-relay"
SMTP_PASSWORD = "pa55-w0rd-that-must-never-show"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- A throwaway certificate authority ------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a certificate it signed for 127.0.0.1 and localhost, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Engage test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(ca=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


# --- SMTP servers that behave like real relays ----------------------------------------------------------------


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    tls: bool
    login: str | None


@dataclass
class RelayHandler:
    """Keeps what it accepts; can refuse recipients, and drop the connection the way relays do."""

    refuse: Callable[[str], str | None] | None = None
    #: close the connection after answering each message (an idle timeout, or a relay's per-connection limit)
    close_after_each: bool = False
    #: close the connection after the message's content arrives, without answering
    vanish_during_data: bool = False
    received: list[Received] = field(default_factory=list)
    peers: set[Any] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(  # noqa: N802 (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # STARTTLS makes a new session on the same TCP connection: count connections by the client's address.
        with self.lock:
            self.peers.add(session.peer)
        session.host_name = hostname
        return responses

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        answer = self.refuse(address) if self.refuse else None
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        # Implicit TLS leaves session.ssl empty in aiosmtpd; the transport knows either way.
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
        received = Received(
            str(envelope.mail_from),
            list(envelope.rcpt_tos),
            envelope.original_content or b"",
            tls,
            login,
        )
        with self.lock:
            self.received.append(received)
            number = len(self.received)
        if self.vanish_during_data and server.transport is not None:
            server.transport.abort()
            return "250 never heard"
        if self.close_after_each and server.transport is not None:
            # After the answer is written: the client only notices when it sends its next command.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return f"250 2.0.0 Ok: queued as Q{number:04d}"


@dataclass
class RunningRelay:
    handler: RelayHandler
    port: int
    controller: Controller

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    @property
    def connections(self) -> int:
        with self.handler.lock:
            return len(self.handler.peers)


def _authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    good = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == SMTP_USER
        and auth_data.password.decode() == SMTP_PASSWORD
    )
    return AuthResult(success=good, handled=False, auth_data=auth_data if good else None)


@pytest.fixture
def relay(tls_files: TlsFiles) -> Iterator[Callable[..., RunningRelay]]:
    """Start SMTP servers on loopback: `relay(security="starttls", auth=True, refuse=..., close_after_each=True)`."""
    running: list[Controller] = []

    def start(*, security: str = "none", auth: bool = False, **handler_options: Any) -> RunningRelay:
        handler = RelayHandler(**handler_options)
        port = free_port()
        options: dict[str, Any] = {"server_hostname": "relay.test", "ready_timeout": 10}
        if security == "starttls":
            options.update(tls_context=tls_files.server_context(), require_starttls=True)
        elif security == "ssl":
            options.update(ssl_context=tls_files.server_context())
        if auth and security == "ssl":
            # aiosmtpd only counts STARTTLS as TLS for AUTH; on an implicit-TLS port it must be told not to ask.
            options.update(authenticator=_authenticate, auth_require_tls=False)
        elif auth:
            options.update(authenticator=_authenticate, auth_required=True, auth_require_tls=True)
        controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
        controller.start()
        running.append(controller)
        return RunningRelay(handler, port, controller)

    yield start
    for controller in running:
        controller.stop()


@pytest.fixture
def smtp_login() -> tuple[str, str]:
    """The user and password the relays of `relay(auth=True)` accept."""
    return SMTP_USER, SMTP_PASSWORD


@pytest.fixture
def use_relay(monkeypatch: pytest.MonkeyPatch, tls_files: TlsFiles) -> Callable[..., None]:
    """Point ENGAGE_SMTP_* at a relay: `use_relay(relay, security="starttls", user=..., password=...)`."""

    def point(
        running: RunningRelay, *, security: str = "none", user: str | None = None, password: str | None = None
    ) -> None:
        monkeypatch.setenv("ENGAGE_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("ENGAGE_SMTP_PORT", str(running.port))
        monkeypatch.setenv("ENGAGE_SMTP_SECURITY", security)
        monkeypatch.setenv("ENGAGE_SMTP_TIMEOUT", "5")
        if security != "none":
            monkeypatch.setenv("ENGAGE_SMTP_CA_FILE", str(tls_files.ca))
        if user is not None:
            monkeypatch.setenv("ENGAGE_SMTP_USER", user)
        if password is not None:
            monkeypatch.setenv("ENGAGE_SMTP_PASSWORD", password)
        get_settings.cache_clear()

    return point


# --- Plans in the ledger, moved forward by the real runner -------------------------------------------------------


@pytest.fixture
def applier(session: DbSession) -> Staff:
    staff = create_staff(session, name="Camille Martin", email="camille@nmh.example.org")
    session.commit()
    return staff


@pytest.fixture
def enroll(session: DbSession, applier: Staff) -> Callable[..., list[int]]:
    """Apply a seed template to new contacts of the workshop "Atelier Lyon"; return the plan ids."""

    def apply(template: str, *contacts: dict[str, Any], workshop: str = "Atelier Lyon") -> list[int]:
        created = apply_seed_plans(session, contacts, applier=applier, template=template, workshop=workshop)
        ids = [plan.id or 0 for plan in created]
        session.commit()  # end the snapshot reading the ids took: the tests then see what the runner writes
        return ids

    return apply


def run_due(now: datetime, claimant: str = "test") -> runner.BatchOutcome:
    """Run every step due at ``now`` the way the run-due-steps flow does, without Prefect."""
    total = runner.BatchOutcome()
    while claimed := runner.claim_due_steps(now=now, claimant=claimant, limit=50, lease_seconds=600):
        for group in runner.group_claims(step_ids=claimed):
            if group.kind == "email":
                total.add(runner.send_email_batch(step_ids=group.step_ids, claimant=claimant, now=now))
            else:
                total.add(runner.open_work_items(step_ids=group.step_ids, claimant=claimant, now=now))
    return total


def next_due(now: datetime) -> datetime | None:
    items = runner.scheduled_due_items(now=now)
    return items[0].due_at if items else None


@pytest.fixture
def run_plans() -> Callable[..., list[runner.BatchOutcome]]:
    """Run due steps at each next due time from the first survey on, until nothing more is scheduled."""

    def drive(
        start: datetime = MONDAY_9, *, between: Callable[[datetime], None] | None = None
    ) -> list[runner.BatchOutcome]:
        outcomes, now = [], start
        for _ in range(20):
            outcomes.append(run_due(now))
            if between is not None:
                between(now)
            following = next_due(now)
            if following is None:
                return outcomes
            now = following
        raise AssertionError("the plans never finished")

    return drive


# --- The unsubscribe app, served for real ------------------------------------------------------------------------


@dataclass
class RunningApp:
    base_url: str
    server: Any


@contextmanager
def served(app: Any, port: int | None = None) -> Iterator[RunningApp]:
    """Serve an ASGI app with uvicorn on a free loopback port, in a thread, for the duration of a test."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="critical", access_log=False, lifespan="off", ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="asgi-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the app did not start")
        time.sleep(0.01)
    try:
        yield RunningApp(f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def serve() -> Iterator[Callable[[Any], RunningApp]]:
    """Start ASGI apps for real: `serve(app).base_url`; all stop at the end of the test."""
    with ExitStack() as stack:
        yield lambda app: stack.enter_context(served(app))


@pytest.fixture
def unsubscribe_app(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningApp]:
    """`engage unsubscribe-server`'s app under uvicorn on a free loopback port; emails link to it."""
    from engage.unsubscribe.app import create_app

    port = free_port()
    monkeypatch.setenv("ENGAGE_UNSUBSCRIBE_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("ENGAGE_UNSUBSCRIBE_SECRET", "a-test-secret-long-enough-for-anything-0123456789")
    get_settings.cache_clear()
    with served(create_app(get_settings()), port=port) as running:
        yield running
