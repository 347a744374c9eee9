"""Everything one machine needs to run Engage for real: a Prefect server, the deployments, workers, a mail capture.

`engage server` uses it; so do the tests that kill processes on purpose. Each part is a child process of ours,
started with the environment the flows need, and stopped in reverse order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from engage.db import absolute_sqlite_url
from engage.errors import ServerError
from engage.settings import PROJECT_ROOT, get_settings

WORK_POOL = "engage"


def _prefect() -> list[str]:
    return [sys.executable, "-m", "prefect"]


@dataclass
class LocalStack:
    """A Prefect server on ``port``, Engage's deployments, ``workers`` process workers; logs go to ``log_dir``."""

    port: int = 4200
    host: str = "127.0.0.1"
    workers: int = 1
    log_dir: Path = field(default_factory=lambda: Path("logs"))
    prefect_home: Path | None = None
    prefect_database_url: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None
    worker_processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        """What every part (and every flow run a worker starts) sees: one ledger, one inbox, this server."""
        settings = get_settings()
        cwd = Path.cwd()
        env = dict(os.environ)
        env.update(
            {
                "PREFECT_API_URL": self.api_url,
                # The UI runs in the browser: it must be told where the API is when it is not on port 4200.
                "PREFECT_UI_API_URL": self.api_url,
                "PREFECT_SERVER_API_HOST": self.host,
                "PREFECT_SERVER_API_PORT": str(self.port),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "ENGAGE_HOME": str(PROJECT_ROOT),
                "ENGAGE_DATABASE_URL": absolute_sqlite_url(settings.database_url, cwd),
                "ENGAGE_INBOX_DIR": str(settings.inbox_dir.resolve()),
                "ENGAGE_OUTBOX_DIR": str(settings.outbox_dir.resolve()),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.prefect_home is not None:
            env["PREFECT_HOME"] = str(self.prefect_home.resolve())
        database_url = self.prefect_database_url or os.environ.get("ENGAGE_PREFECT_DATABASE_URL")
        if database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
        env.update(self.extra_env)
        return env

    def _log(self, name: str) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / f"{name}.log"

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        # The child keeps its own copy of the log's descriptor; ours closes with the block.
        with self._log(name).open("ab") as log:
            return subprocess.Popen(
                args,
                env=self.environment() | dict(env or {}),
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _run(self, name: str, args: list[str]) -> None:
        with self._log(name).open("ab") as log:
            done = subprocess.run(args, env=self.environment(), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise ServerError(f"{name} failed (exit {done.returncode}); see {self._log(name)}")

    def start_server(self, timeout: float = 90.0) -> None:
        """Start the Prefect server and wait until its API answers."""
        self.server = self._spawn(
            "prefect-server",
            [*_prefect(), "server", "start", "--host", self.host, "--port", str(self.port), "--analytics-off"],
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise ServerError(f"the Prefect server stopped at start; see {self._log('prefect-server')}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise ServerError(f"the Prefect server did not answer within {timeout:.0f}s; see {self._log('prefect-server')}")

    def deploy(self) -> None:
        """Create the process work pool and register every deployment of prefect.yaml."""
        self._run("deploy", [*_prefect(), "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"])
        self._run(
            "deploy",
            [*_prefect(), "--no-prompt", "deploy", "--all", "--prefect-file", str(PROJECT_ROOT / "prefect.yaml")],
        )

    def start_worker(
        self, name: str | None = None, env: Mapping[str, str] | None = None, limit: int | None = None
    ) -> subprocess.Popen[bytes]:
        """Start one process worker on the engage pool (``env`` adds to what its flow runs see)."""
        number = len(self.worker_processes) + 1
        worker_name = name or f"engage-worker-{number}"
        process = self._spawn(
            worker_name,
            [
                *_prefect(),
                "worker",
                "start",
                "--pool",
                WORK_POOL,
                "--type",
                "process",
                "--name",
                worker_name,
                "--install-policy",
                "never",
                *(["--limit", str(limit)] if limit else []),
            ],
            env,
        )
        self.worker_processes.append(process)
        return process

    def start(self) -> LocalStack:
        self.start_server()
        self.deploy()
        for _ in range(self.workers):
            self.start_worker()
        return self

    def stop_workers(self) -> None:
        """Stop every worker (their whole process groups, flow runs included)."""
        for process in self.worker_processes:
            _stop(process)
        self.worker_processes.clear()

    def stop(self) -> None:
        """Stop the workers, then the server."""
        self.stop_workers()
        if self.server is not None:
            _stop(self.server)
        self.server = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.stop()


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        return
