"""Helpers for the tests that run Engage for real: a Prefect server, deployments and workers, as `engage server`."""

from __future__ import annotations

import email
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from engage.local.stack import LocalStack


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def prefect_api(stack: LocalStack) -> Iterator[None]:
    """Talk to the stack's Prefect server from the test process."""
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        yield


def run(stack: LocalStack, deployment: str, parameters: dict[str, Any], timeout: float = 180) -> FlowRun:
    """Run a deployment on the stack's workers and wait for it to end."""
    with prefect_api(stack):
        return run_deployment(deployment, parameters=parameters, timeout=timeout, poll_interval=1, as_subflow=False)


def submit(stack: LocalStack, deployment: str, parameters: dict[str, Any]) -> FlowRun:
    """Create a run of a deployment, due now, without waiting."""
    with prefect_api(stack):
        return run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False)


def wait_for(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(encoding="utf-8").strip():
            return path.read_text(encoding="utf-8").strip()
        time.sleep(0.2)
    raise TimeoutError(f"{path} did not appear within {timeout:.0f}s")


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait()


class MailSink:
    """The SMTP capture in a process of its own (`engage smtp-capture`), so killing a flow run cannot touch it."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MailSink:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engage.cli",
                "smtp-capture",
                "--port",
                str(self.port),
                "--outbox",
                str(self.outbox),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        raise TimeoutError("the SMTP capture did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def received(self) -> Counter[tuple[str, str]]:
        """How many times each (recipient, subject) was accepted."""
        counts: Counter[tuple[str, str]] = Counter()
        for path in self.outbox.glob("*.eml"):
            message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
            counts[(str(message["To"]).lower(), str(message["Subject"]))] += 1
        return counts


def iso(moment: datetime) -> str:
    return moment.isoformat()


def wait_all(stack: LocalStack, runs: list[FlowRun], timeout: float = 600) -> list[FlowRun]:
    """Wait until every run has ended; returns them as they ended."""
    from prefect import get_client

    deadline = time.monotonic() + timeout
    with prefect_api(stack), get_client(sync_client=True) as client:
        while True:
            current = [client.read_flow_run(r.id) for r in runs]
            if all(r.state is not None and r.state.is_final() for r in current):
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs still going after {timeout:.0f}s: {[r.state for r in current]}")
            time.sleep(1)
