"""What staff do in the Prefect UI, in a real browser: trigger a workshop from the deployment's form, watch the
run complete, see a run fail when the mail relay refuses, press Retry, and get the missing emails, none twice."""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from stack import free_port

from engage import db
from engage.local.stack import LocalStack
from engage.mail.capture import SmtpCapture
from engage.settings import PROJECT_ROOT
from engage.staff import add_staff

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STAFF = "camille@nmh.example.org"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed (make test installs it when run as root)"
    return None


@pytest.fixture(scope="module")
def browser_or_skip() -> None:
    reason = _browser_missing()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


class Relay:
    """A mail relay the test can make defer everything (451), then recover."""

    def __init__(self, outbox: Path) -> None:
        self.deferring = threading.Event()
        self.capture = SmtpCapture(
            outbox, refuse=lambda _address: "451 4.3.0 relay busy, try again later" if self.deferring.is_set() else None
        )

    def recipients(self) -> list[str]:
        return [m.recipients[0] for m in self.capture.messages]


@pytest.fixture
def running(browser_or_skip: None, tmp_path: Path) -> Iterator[tuple[LocalStack, Relay]]:
    # A template that may send at any hour on any day: the test must not depend on the clock of the machine.
    templates = tmp_path / "plan_templates"
    templates.mkdir()
    source = (PROJECT_ROOT / "plan_templates" / "volunteer-followup.yaml").read_text(encoding="utf-8")
    source = source.replace("skip_weekends: true", "skip_weekends: false")
    source = source.replace('send_window: "09:00-17:00"', 'send_window: "00:00-23:59"')
    (templates / "volunteer-followup.yaml").write_text(source, encoding="utf-8")
    ledger = f"sqlite:///{tmp_path / 'engage.db'}"
    db.upgrade_schema(ledger)
    with db.session_scope(ledger) as session:
        add_staff(session=session, email=STAFF, name="Camille Martin")
    relay = Relay(tmp_path / "outbox")
    relay.capture.start()
    stack = LocalStack(
        port=free_port(),
        workers=0,
        prefect_home=tmp_path / "prefect",
        log_dir=tmp_path / "logs",
        extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1"},
    )
    try:
        stack.start()
        stack.start_worker(
            env={
                "ENGAGE_DATABASE_URL": ledger,
                "ENGAGE_PLAN_TEMPLATES_DIR": str(templates),
                "ENGAGE_SMTP_PORT": str(relay.capture.port),
                "ENGAGE_STAFF_EMAIL": STAFF,
                "ENGAGE_PREFECT_DEPLOYMENTS": "never",
                "ENGAGE_SEND_RETRIES": "1",
                "ENGAGE_RETRY_DELAY_SECONDS": "1",
            }
        )
        yield stack, relay
    finally:
        stack.stop()
        relay.capture.stop()
        db.dispose_engines()


def _trigger_from_the_form(page, stack: LocalStack, csv_text: str, workshop: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{stack.ui_url}/deployments", wait_until="networkidle")
    page.get_by_role("link", name="volunteer-followup").click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").click()
    page.wait_for_load_state("networkidle")
    textareas = page.locator(".schema-form-property textarea.p-textarea__control")
    textareas.nth(0).fill(csv_text)  # Attendees
    textareas.nth(1).fill(workshop)  # Workshop
    date = page.locator(
        ".schema-form-property", has=page.locator(".schema-form-property__label", has_text=re.compile("^Date$"))
    ).last
    date.locator(".schema-form-property-menu button").first.click()
    page.get_by_text("Use JSON input").last.click()
    date.locator("textarea.p-code-input__textarea").fill('"2026-11-20"')
    page.get_by_role("button", name="Submit").click()
    page.get_by_role("button", name="View run").last.click()
    page.wait_for_url(re.compile(r"/runs/flow-run/"))


def _wait_for_state(page, state: str, timeout_s: float = 180) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect(page.locator(".state-badge", has_text=state).first).to_be_visible(timeout=timeout_s * 1000)


def test_staff_trigger_watch_and_retry_a_workshop_in_the_prefect_ui(
    running: tuple[LocalStack, Relay], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    stack, relay = running
    first = "Email,First name\nlea@example.org,Léa\ntom@example.org,Tom\n"
    second = "Email,First name\nzoe@example.org,Zoë\nnoah@example.org,Noah\nines@example.org,Inès\n"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # The UI is a large single-page app: on a busy 2-core machine a click can wait well past Playwright's 30 s.
        page.set_default_timeout(120_000)
        page.set_default_navigation_timeout(120_000)
        try:
            _trigger_from_the_form(page, stack, first, "Atelier Lyon")
            _wait_for_state(page, "Completed")
            expect(page.get_by_text("volunteer-followup · Atelier Lyon · 2026-11-20").first).to_be_visible()
            assert sorted(relay.recipients()) == ["lea@example.org", "tom@example.org"]

            relay.deferring.set()
            _trigger_from_the_form(page, stack, second, "Atelier Grenoble")
            _wait_for_state(page, "Failed")
            expect(page.get_by_text(re.compile("451 4.3.0")).first).to_be_visible(timeout=30_000)
            assert len(relay.recipients()) == 2

            relay.deferring.clear()
            page.get_by_role("button", name="Retry").click()
            confirm = page.get_by_role("button", name="Retry").last
            if confirm.is_visible():
                confirm.click()
            _wait_for_state(page, "Completed")
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    recipients = relay.recipients()
    assert sorted(recipients) == sorted(
        ["lea@example.org", "tom@example.org", "zoe@example.org", "noah@example.org", "ines@example.org"]
    ), "every missing email arrived after Retry, and none twice"
