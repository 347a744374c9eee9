"""A local SMTP server that accepts every message and keeps it as an `.eml` file: the embedded default relay."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class CapturedMessage:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class _Handler:
    outbox: Path | None
    refuse: Callable[[str], str | None] | None = None
    lose_answer: Callable[[str], bool] | None = None
    keep: bool = True
    messages: list[CapturedMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.refuse is not None:
            answer = self.refuse(address)
            if answer:
                return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        data = envelope.original_content or b""
        message = CapturedMessage(str(envelope.mail_from), list(envelope.rcpt_tos), data)
        with self.lock:
            self.counter += 1
            number = self.counter
            if self.keep:
                self.messages.append(message)
        if self.lose_answer is not None and any(self.lose_answer(r) for r in message.recipients):
            # Keep the message but hang up before answering: the client cannot know it went out.
            server.transport.close()  # type: ignore[union-attr]
        if self.outbox is not None:
            name = f"{number:05d}-{_SAFE.sub('_', message.recipients[0] if message.recipients else 'unknown')}.eml"
            (self.outbox / name).write_bytes(data)
        return "250 Message accepted for delivery"


def _free_port(host: str) -> int:
    # aiosmtpd's controller checks readiness by connecting to the port it was given, so port 0 cannot be used.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class SmtpCapture:
    """Run on loopback in a background thread; `with SmtpCapture(outbox) as capture: ... capture.port`.

    ``refuse`` may return an SMTP answer (e.g. ``"550 5.1.1 no such user"``) to refuse a recipient, for tests;
    ``lose_answer`` keeps a message for those recipients but hangs up before answering, as a crashing relay would.
    ``keep_messages=False`` only counts what it accepts (``accepted``), so a long benchmark holds no message in memory.
    """

    def __init__(
        self,
        outbox: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        refuse: Callable[[str], str | None] | None = None,
        lose_answer: Callable[[str], bool] | None = None,
        keep_messages: bool = True,
    ) -> None:
        if outbox is not None:
            outbox.mkdir(parents=True, exist_ok=True)
            existing = sorted(outbox.glob("*.eml"))
            start = int(existing[-1].name.split("-", 1)[0]) if existing and existing[-1].name[:5].isdigit() else 0
        else:
            start = 0
        self.handler = _Handler(
            outbox=outbox, refuse=refuse, lose_answer=lose_answer, keep=keep_messages, counter=start
        )
        self._start_count = start
        self.host = host
        self._port = port
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[CapturedMessage]:
        with self.handler.lock:
            return list(self.handler.messages)

    @property
    def accepted(self) -> int:
        """How many messages this capture accepted since it started."""
        with self.handler.lock:
            return self.handler.counter - self._start_count

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("the SMTP capture is not running")
        return int(self._controller.port)

    def start(self) -> SmtpCapture:
        port = self._port or _free_port(self.host)
        controller = Controller(self.handler, hostname=self.host, port=port, ready_timeout=10)
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpCapture:
        return self.start()

    def __exit__(self, *exc: Any | TracebackType | None) -> None:
        self.stop()
