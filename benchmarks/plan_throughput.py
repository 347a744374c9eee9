"""Benchmark the volunteer plan end to end against the raw sending limit of a local SMTP sink.

Usage (from the repository root)::

    .venv/bin/python benchmarks/plan_throughput.py [--attendees 10000] [--concurrency K] [--database-url URL]
        [--workshop-size 1000] [--batch-size N] [--baseline-attendees 10000] [--profile FILE]

N attendees (in workshops of ``--workshop-size``, each enrolled by its own staff member, as a federation's local
groups would, so that each calendar has room for its calls) go through the volunteer plan with a simulated clock:
the enroll flow on the evening of the workshop, then the run-due-steps flow at each due time, until every plan's
call step is open. Each attendee gets three emails; each call step, when it gets its date (with the third email),
also sends its assignee a calendar invite. All of them count as messages, and the two baselines send the same ones
(the same templates for the same people, the invites built by the same code), against the same sink:

- **bare**: a plain loop that renders each contact's email with its template (the renderer with frames off: each
  email rendered on its own) and builds each invite with icalendar and the standard library (`engage.reference`),
  sending each over one smtplib connection (no ledger, no Prefect);
- **limit**: the same messages built beforehand and sent as ready bytes over one connection.

The SMTP sink runs in a process of its own and only counts what it accepts. The Engage phase runs in a process of
its own too (with a fresh SQLite ledger in a temporary folder, or a throwaway database created on the PostgreSQL
server of ``--database-url``), so its peak RSS compares across N; a first flow run starts Prefect's temporary server
before the clock starts. The pass that places calls and sends their invites is also timed on its own. Baselines take
at most ``--baseline-attendees`` attendees (a plain loop's rate does not depend on N). The last line printed is one
JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

TEMPLATE = "volunteer-followup"
EMAIL_STEPS = (
    ("survey", "volunteer/survey"),
    ("resource-pack", "volunteer/resource-pack"),
    ("motivation", "volunteer/motivation"),
)
WORKSHOP_DATE = date(2026, 11, 19)  # a Thursday: day 1 is a Friday, the plan then moves with its completions
FIRST_NAMES = ["Hélène", "Zoë", "Jérôme", "Amélie", "Samuel", "Chloé", "François", "Priya", "Léa", "Noël", ""]
LAST_NAMES = ["Lefèvre", "Dubois", "Faure", "Garnier", "O'Connor", "Rousseau", "Mercier", "Sharma", "Bonnet"]
LANGUAGES = ["fr", "fr", "en", "fr", "en"]
PLACES = ["Lyon", "Villeurbanne", "Saint-Étienne", "Grenoble", "Annecy"]


# --- The people -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """One generated attendee; the same index gives the same person in every phase."""

    index: int
    email: str
    first_name: str
    last_name: str
    language: str

    @classmethod
    def of(cls, index: int) -> Person:
        return cls(
            index=index,
            email=f"attendee.{index}@example.org",
            first_name=FIRST_NAMES[index % len(FIRST_NAMES)],
            last_name=LAST_NAMES[index % len(LAST_NAMES)],
            language=LANGUAGES[index % len(LANGUAGES)],
        )


def workshop_name(number: int) -> str:
    return f"Atelier {PLACES[number % len(PLACES)]} {number + 1}"


def staff_email(number: int) -> str:
    return f"groupe.{number + 1}@nomorehomelessness.example.org"


def staff_name(number: int) -> str:
    return f"Animatrice {number + 1}"


def workshops_of(attendees: int, size: int) -> Iterator[tuple[int, range]]:
    """(workshop number, attendee indexes) for every workshop."""
    for number, start in enumerate(range(0, attendees, size)):
        yield number, range(start, min(start + size, attendees))


def write_attendee_lists(folder: Path, attendees: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, indexes in workshops_of(attendees, size):
        path = folder / f"workshop-{number + 1:04d}.csv"
        with path.open("w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream, delimiter=";")
            writer.writerow(["Prénom", "Nom", "Courriel", "Langue"])
            for index in indexes:
                person = Person.of(index)
                writer.writerow([person.first_name, person.last_name, person.email, person.language])
        paths.append(path)
    return paths


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- The sink, in its own process -------------------------------------------------------------------------------


def serve_sink(port: int) -> None:
    """Accept every message on ``port`` and count it; answer `count` lines on stdin with the count so far."""
    from engage.mail.capture import SmtpCapture

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with SmtpCapture(None, port=port, keep_messages=False) as capture:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        for line in sys.stdin:
            if line.strip() == "count":
                sys.stdout.write(f"{capture.accepted}\n")
                sys.stdout.flush()


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE), "--serve-sink", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the SMTP sink did not start")

    def count(self) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=10)


# --- The Engage phase, in its own process -----------------------------------------------------------------------


class _Profiles:
    """cProfile across threads: the main thread, plus every call of the functions that do a batch's work."""

    def __init__(self) -> None:
        import cProfile
        import pstats

        self._lock = threading.Lock()
        self._stats: pstats.Stats | None = None
        self._main = cProfile.Profile()

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        import cProfile
        import functools

        @functools.wraps(function)
        def profiled(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                return function(*args, **kwargs)
            profile = cProfile.Profile()
            try:
                return profile.runcall(function, *args, **kwargs)
            finally:
                self._add(profile)

        return profiled

    def _add(self, profile: Any) -> None:
        import pstats

        with self._lock:
            if self._stats is None:
                self._stats = pstats.Stats(profile)
            else:
                self._stats.add(profile)

    def install(self) -> None:
        from engage import invites, runner
        from flows import enroll as enroll_flow

        runner.send_email_batch = self.wrap(runner.send_email_batch)
        runner.open_work_items = self.wrap(runner.open_work_items)
        invites.send_pending_invites = self.wrap(invites.send_pending_invites)
        enroll_flow.enroll_attendees = self.wrap(enroll_flow.enroll_attendees)
        self._main.enable()

    def report(self, path: str, lines: int = 40) -> str:
        import io

        self._main.disable()
        self._add(self._main)
        assert self._stats is not None
        out = io.StringIO()
        self._stats.dump_stats(f"{path}.prof")  # for pstats or snakeviz
        self._stats.stream = out  # type: ignore[attr-defined]
        for order in ("tottime", "cumulative"):
            self._stats.strip_dirs().sort_stats(order).print_stats(lines)
        return out.getvalue()


def _next_due(until: datetime) -> datetime | None:
    from sqlmodel import col, func, select

    from engage import db
    from models import PlanStep, StepStatus

    with db.session_scope(readonly=True) as session:
        due: datetime | None = session.exec(
            select(func.min(PlanStep.due_at)).where(
                col(PlanStep.status) == StepStatus.SCHEDULED, col(PlanStep.due_at) <= until
            )
        ).one()
        return due


def _ledger_counts() -> dict[str, int]:
    from sqlmodel import col, func, select

    from engage import db
    from models import Delivery, PlanStep

    with db.session_scope(readonly=True) as session:
        deliveries = session.exec(
            select(Delivery.kind, Delivery.state, func.count()).group_by(col(Delivery.kind), col(Delivery.state))
        ).all()
        steps = session.exec(
            select(PlanStep.kind, PlanStep.status, func.count()).group_by(col(PlanStep.kind), col(PlanStep.status))
        ).all()
    counts = {f"delivery {kind} {state}": int(n) for kind, state, n in deliveries}
    counts |= {f"step {kind} {status}": int(n) for kind, status, n in steps}
    return counts


class _Stopwatch:
    """Wall time spent inside a function, summed over its calls (made one at a time), and how far it raised the peak
    RSS of the process."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.raised_peak_mb = 0.0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started, peak = time.perf_counter(), peak_rss_mb()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.raised_peak_mb += peak_rss_mb() - peak

        return timed


def engage_phase(args: argparse.Namespace) -> dict[str, Any]:
    """Enroll every workshop, then run the due steps at each due time; time it and read the ledger back."""
    profiles = _Profiles() if args.profile else None
    from prefect import flow

    from flows import call_invites

    # The pass that places calls and sends their invites to staff, timed apart to show what it costs.
    invite_pass = _Stopwatch()
    call_invites.send_call_invites.fn = invite_pass.wrap(call_invites.send_call_invites.fn)

    from engage import db
    from engage.settings import get_settings
    from engage.staff import add_staff
    from flows.enroll import Attendees, enroll
    from flows.run_due_steps import run_due_steps

    @flow(name="warm-up")
    def warm_up() -> int:
        return 1

    warm_up()  # starts Prefect's temporary server: not part of the measure
    db.upgrade_schema()
    settings = get_settings()
    workshops = list(workshops_of(args.attendees, args.workshop_size))
    with db.session_scope() as session:
        for number, _ in workshops:
            add_staff(session=session, email=staff_email(number), name=staff_name(number))
    zone = ZoneInfo(settings.timezone)
    start = datetime.combine(WORKSHOP_DATE, clock_time(18, 0), tzinfo=zone).astimezone(UTC)
    until = start + timedelta(days=60)
    rss_before = peak_rss_mb()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    if profiles is not None:
        profiles.install()
    phases: list[dict[str, Any]] = []
    started = time.perf_counter()
    for number, _ in workshops:
        enroll(
            Attendees(
                attendees=f"workshop-{number + 1:04d}.csv",
                workshop=workshop_name(number),
                date=WORKSHOP_DATE,
                place=PLACES[number % len(PLACES)],
                applied_by=staff_email(number),
            ),
            template=TEMPLATE,
            now=start,
        )
    phases.append(
        {"phase": "enroll", "seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak_rss_mb())}
    )
    while (due := _next_due(until)) is not None:
        began = time.perf_counter()
        outcome = run_due_steps(now=due)
        day = (due.astimezone(zone).date() - WORKSHOP_DATE).days
        phases.append(
            {
                "phase": f"day {day}",
                "seconds": round(time.perf_counter() - began, 2),
                "peak_rss_mb": round(peak_rss_mb()),
                **{k: v for k, v in outcome.items() if v and k in ("sent", "opened", "failed", "unknown", "deferred")},
            }
        )
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "seconds": seconds,
        "invite_pass_seconds": round(invite_pass.seconds, 2),
        "invite_pass_raised_peak_rss_mb": round(invite_pass.raised_peak_mb, 1),
        "phases": phases,
        "ledger": _ledger_counts(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_at_start_mb": round(rss_before, 1),
        "cpu_seconds": round(
            (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime), 1
        ),
    }
    if profiles is not None:
        Path(args.profile).write_text(profiles.report(args.profile), encoding="utf-8")
    db.dispose_engines()
    return result


def run_engage_phase(args: argparse.Namespace, folder: Path, url: str, sink: Sink) -> dict[str, Any]:
    environment = dict(os.environ)
    for name in list(environment):
        if name.startswith(("ENGAGE_", "PREFECT_")):
            del environment[name]
    environment |= {
        "ENGAGE_DATABASE_URL": url,
        "ENGAGE_SMTP_HOST": "127.0.0.1",
        "ENGAGE_SMTP_PORT": str(sink.port),
        "ENGAGE_SMTP_SECURITY": "none",
        "ENGAGE_PREFECT_DEPLOYMENTS": "never",
        "ENGAGE_INBOX_DIR": str(folder / "inbox"),
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # Prefect's temporary server can take more than its default 20 s to start on a busy machine.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    if args.concurrency is not None:
        environment["ENGAGE_SEND_CONCURRENCY"] = str(args.concurrency)
    if args.batch_size is not None:
        environment["ENGAGE_BATCH_SIZE"] = str(args.batch_size)
    command = [
        sys.executable,
        str(HERE),
        "--engage-phase",
        "--attendees",
        str(args.attendees),
        "--workshop-size",
        str(args.workshop_size),
    ]
    if args.profile:
        command += ["--profile", str(Path(args.profile).resolve())]
    log = folder / "engage-phase.log"
    with log.open("wb") as stream:
        finished = subprocess.run(command, env=environment, cwd=folder, stdout=subprocess.PIPE, stderr=stream)
    if finished.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise RuntimeError(f"the Engage phase failed (exit {finished.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(finished.stdout.decode().strip().splitlines()[-1])
    return result


# --- The baselines ----------------------------------------------------------------------------------------------


class Messages:
    """The messages Engage sends, built in memory with Engage's own code: three emails and one invite per person."""

    def __init__(self, settings: Any, workshop_size: int) -> None:
        from engage.invites.brief import Person as InvitePerson
        from engage.invites.due import InviteMessage
        from engage.plan_templates.loading import load_template
        from engage.rendering.renderer import get_renderer
        from models import Staff, Workshop

        self.settings = settings
        self.workshop_size = workshop_size
        self.renderer = get_renderer(settings.email_templates_dir, tuple(settings.language_list), frames=False)
        spec = load_template(settings.plan_templates_dir / f"{TEMPLATE}.yaml")
        self.links = spec.links
        self.template_name = spec.name
        call = spec.step("follow-up-call")
        self.call_name, self.call_description, self.call_priority = call.name, call.description, call.priority
        self.step_names = {step.key: step.name for step in spec.steps}
        self.zone = ZoneInfo(settings.timezone)
        self._workshops: dict[int, tuple[Any, Any, Any]] = {}
        self._staff_type, self._workshop_type = Staff, Workshop
        self._invite_person, self._invite_message = InvitePerson, InviteMessage

    def _people(self, number: int) -> tuple[Any, Any, Any]:
        if number not in self._workshops:
            staff = self._staff_type(email=staff_email(number), name=staff_name(number))
            workshop = self._workshop_type(
                name=workshop_name(number), date=WORKSHOP_DATE, place=PLACES[number % len(PLACES)]
            )
            person = self._invite_person(email=staff.email, name=staff.name, language="fr", timezone="Europe/Paris")
            self._workshops = {number: (staff, workshop, person)}
        return self._workshops[number]

    def of(self, index: int) -> Iterator[Any]:
        """Yield the messages of one attendee, ready to send: three emails, then the invite, each built when asked."""
        from engage.invites.brief import CallBrief, StepLine
        from engage.mail.message import OutgoingEmail, build_message, new_message_id
        from engage.reference import invite_email, prepare_email_message
        from engage.rendering.context import email_context, signer
        from engage.unsubscribe.tokens import unsubscribe_url
        from models import Contact

        person = Person.of(index)
        staff, workshop, assignee = self._people(index // self.workshop_size)
        contact = Contact(
            id=index + 1,
            email=person.email,
            email_key=person.email,
            first_name=person.first_name or None,
            last_name=person.last_name,
            language=person.language,
        )
        language = self.renderer.pick_language(contact.language)
        unsubscribe = unsubscribe_url(index + 1, self.settings)
        for _, template in EMAIL_STEPS:
            context = email_context(
                contact=contact,
                workshop=workshop,
                signed_by=signer(applied_by=staff, assignee=None, settings=self.settings),
                links=self.links,
                settings=self.settings,
                unsubscribe_url=unsubscribe,
                language=language,
            )
            rendered = self.renderer.render(template, language, context)
            yield build_message(
                OutgoingEmail(
                    to=contact.email,
                    to_name=contact.full_name,
                    subject=rendered.subject,
                    text=rendered.text,
                    html=rendered.html,
                    reply_to=staff.email,
                    reply_to_name=staff.name,
                    message_id=new_message_id(self.settings),
                    unsubscribe_url=unsubscribe,
                    language=language,
                ),
                self.settings,
            )
        sent = datetime.combine(WORKSHOP_DATE, clock_time(9, 0), tzinfo=self.zone).astimezone(UTC)
        slot = sent + timedelta(days=30, minutes=15 * (index % self.workshop_size % 32))
        history = tuple(
            StepLine(self.step_names[key], "email", "done", sent + timedelta(days=day), "sent")
            for (key, _), day in zip(EMAIL_STEPS, (1, 7, 14), strict=True)
        )
        brief = CallBrief(
            call_id=index + 1,
            step_id=4 * index + 4,
            uid=f"engage-call-{4 * index + 4}@nomorehomelessness.org",
            slot_start=slot,
            slot_end=slot + timedelta(minutes=15),
            sequence=0,
            cancelled=False,
            assignee=assignee,
            fallback=False,
            contact_name=contact.full_name,
            contact_email=contact.email,
            contact_phone=None,
            contact_language=contact.language,
            plan_id=index + 1,
            template_name=self.template_name,
            step_name=self.call_name,
            step_description=self.call_description,
            priority=self.call_priority,
            workshop_name=workshop.name,
            workshop_date=workshop.date,
            workshop_place=workshop.place,
            history=history,
        )
        invite = invite_email(
            brief,
            self._invite_message("invite", staff.email, 0),
            assignee,
            now=sent + timedelta(days=14),
            settings=self.settings,
            message_id=new_message_id(self.settings),
        )
        yield prepare_email_message(invite, self.settings)


def bare_loop(messages: Messages, attendees: int) -> tuple[int, float, float]:
    """Render, build and send each message in turn over one connection; (messages, seconds, of which invites)."""
    from engage.mail.smtp import SmtpSender

    count, invite_seconds = 0, 0.0
    started = time.perf_counter()
    with SmtpSender(messages.settings) as sender:
        for index in range(attendees):
            built = messages.of(index)
            for number in itertools.count():
                began = time.perf_counter()
                message = next(built, None)
                if message is None:
                    break
                sender.send(message)
                count += 1
                if number == len(EMAIL_STEPS):  # the invite, after the emails
                    invite_seconds += time.perf_counter() - began
    return count, time.perf_counter() - started, invite_seconds


def limit_loop(messages: Messages, attendees: int, chunk: int = 500) -> tuple[int, float]:
    """Send the same messages built beforehand (a chunk at a time, untimed) as ready bytes; (messages, seconds)."""
    from engage.mail.smtp import SmtpSender

    count, seconds = 0, 0.0
    with SmtpSender(messages.settings) as sender:
        sender.send(next(iter(messages.of(0))))  # open the connection outside the clock, as the bare loop's first
        for first in range(0, attendees, chunk):
            ready = [message for index in range(first, min(first + chunk, attendees)) for message in messages.of(index)]
            started = time.perf_counter()
            for message in ready:
                sender.send(message)
            seconds += time.perf_counter() - started
            count += len(ready)
    return count, seconds


# --- The ledger -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def ledger(database_url: str | None, folder: Path) -> Iterator[str]:
    """A fresh SQLite file in ``folder``, or a throwaway database on the PostgreSQL server of ``database_url``."""
    if not database_url:
        yield f"sqlite:///{folder / 'ledger.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(database_url)
    if server.get_backend_name() != "postgresql":
        raise SystemExit("--database-url takes a PostgreSQL server URL (SQLite is the default)")
    name = f"engage_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- Main -------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--attendees", type=int, default=10_000, help="attendees (default 10000)")
    parser.add_argument(
        "--concurrency", type=int, help="batches sent at once, each over its own SMTP connection (default: the setting)"
    )
    parser.add_argument("--batch-size", type=int, help="plan steps per batch (default: the setting)")
    parser.add_argument("--database-url", help="a PostgreSQL server to create a throwaway ledger on (default SQLite)")
    parser.add_argument("--workshop-size", type=int, default=1_000, help="attendees per workshop (default 1000)")
    parser.add_argument(
        "--baseline-attendees", type=int, default=10_000, help="attendees the baselines send for (default 10000)"
    )
    parser.add_argument("--profile", help="write a cProfile summary of the Engage phase to this file")
    parser.add_argument("--serve-sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--engage-phase", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sink:
        serve_sink(args.serve_sink)
        return
    if args.engage_phase:
        result = engage_phase(args)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    from engage.settings import Settings

    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="engage-throughput-") as temporary:
        folder = Path(temporary)
        write_attendee_lists(folder / "inbox", args.attendees, args.workshop_size)
        sink = Sink()
        try:
            with ledger(args.database_url, folder) as url:
                before = sink.count()
                engage = run_engage_phase(args, folder, url, sink)
                accepted = sink.count() - before
            settings = Settings(
                smtp_host="127.0.0.1", smtp_port=sink.port, smtp_security="none", smtp_user=None, _env_file=None
            )
            messages = Messages(settings, args.workshop_size)
            sample = min(args.attendees, args.baseline_attendees)
            bare_count, bare_seconds, bare_invite_seconds = bare_loop(messages, sample)
            limit_count, limit_seconds = limit_loop(messages, sample)
        finally:
            sink.stop()
    ledger_counts = engage["ledger"]
    contact_emails = ledger_counts.get("delivery email sent", 0)
    invites = ledger_counts.get("delivery invite sent", 0)
    sent = contact_emails + invites
    seconds = engage["seconds"]
    emails_per_s = sent / seconds
    bare = bare_count / bare_seconds
    limit = limit_count / limit_seconds
    workshops = -(-args.attendees // args.workshop_size)
    out.write(
        f"engage: {args.attendees} attendees in {workshops} workshops, {contact_emails} emails to contacts and "
        f"{invites} calendar invites to staff ({accepted} accepted by the sink) in {seconds:.1f} s: "
        f"{args.attendees / seconds:.1f} attendees/s, {emails_per_s:.1f} messages/s; "
        f"peak RSS {engage['peak_rss_mb']} MB "
        f"({engage['rss_at_start_mb']} MB before the first enrollment), {engage['cpu_seconds']} s CPU\n"
    )
    out.write("  " + ", ".join(f"{p['phase']} {p['seconds']} s" for p in engage["phases"]) + "\n")
    unexpected = {k: v for k, v in ledger_counts.items() if "failed" in k or "unknown" in k or "sending" in k}
    if unexpected or accepted != sent:
        out.write(f"  WARNING: not every message went out exactly once: {unexpected}, sink {accepted} vs {sent}\n")
    invite_pass = engage["invite_pass_seconds"]
    engage_emails = contact_emails / (seconds - invite_pass)
    bare_emails = (bare_count - sample) / (bare_seconds - bare_invite_seconds)
    out.write(
        f"  of which the pass placing calls and sending their invites to staff: {invite_pass:.1f} s "
        f"({invite_pass / max(invites, 1) * 1000:.2f} ms an invite; it raised the peak RSS by "
        f"{engage['invite_pass_raised_peak_rss_mb']} MB); the rest: {engage_emails:.1f} contact emails/s\n"
    )
    out.write(
        f"bare:  {bare_count} messages in {bare_seconds:.1f} s: {bare:.1f} messages/s "
        f"(invites {bare_invite_seconds / sample * 1000:.2f} ms each; contact emails {bare_emails:.1f}/s)\n"
    )
    out.write(f"limit: {limit_count} messages in {limit_seconds:.1f} s: {limit:.1f} messages/s\n")
    out.write(f"engage / bare: {emails_per_s / bare:.2f}; engage / limit: {emails_per_s / limit:.2f}\n")
    out.write(
        json.dumps(
            {
                "attendees": args.attendees,
                "seconds": round(seconds, 2),
                "attendees_per_s": round(args.attendees / seconds, 1),
                "ms_per_attendee": round(seconds / args.attendees * 1000, 3),
                "emails_per_s": round(emails_per_s, 1),
                "bare_emails_per_s": round(bare, 1),
                "limit_emails_per_s": round(limit, 1),
                "ratio": round(emails_per_s / bare, 3),
                "limit_ratio": round(emails_per_s / limit, 3),
                "peak_rss_mb": engage["peak_rss_mb"],
                "emails": sent,
                "contact_emails": contact_emails,
                "invites": invites,
                "sink_accepted": accepted,
                "baseline_attendees": sample,
                "workshops": workshops,
                "concurrency": args.concurrency,
                "backend": "postgresql" if args.database_url else "sqlite",
                "cpu_seconds": engage["cpu_seconds"],
                "invite_pass_seconds": invite_pass,
                "invite_pass_raised_peak_rss_mb": engage["invite_pass_raised_peak_rss_mb"],
                "contact_emails_ratio": round(engage_emails / bare_emails, 3),
                "phases": engage["phases"],
            }
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
