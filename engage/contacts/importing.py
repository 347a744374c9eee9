"""Upserting contacts from attendee lists, chunk by chunk: never duplicated, never re-subscribed."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert
from sqlmodel import Session, SQLModel, col, select

from engage.importer.rejects import RejectsWriter
from engage.importer.rows import AttendeeRow, RejectedRow
from engage.importer.source import AttendeeSource
from models import Contact, ContactCommunity, ContactTag, Staff

#: Rows per transaction: large enough for few round trips, small enough to keep SQLite's write lock short.
CHUNK_SIZE = 500


#: Called inside each chunk's transaction with (contact id, row) for every good row of the chunk.
OnChunk = Callable[[Session, list[tuple[int, AttendeeRow]]], None]


# Values a non-blank cell sets (and a blank one leaves alone).
_COPIED_FIELDS = ("first_name", "last_name", "phone", "language", "city", "postal_code", "country", "organisation")


@dataclass(frozen=True, slots=True)
class Reject:
    """A row that was not imported: its spreadsheet row number (header = 1) and why."""

    line: int
    reason: str


@dataclass
class ImportSummary:
    """What an import did; every good row is counted once, as created, updated, unchanged or merged.

    - ``created``: contacts new to the ledger;
    - ``updated``: contacts already in the ledger whose stored data really changed (a value, a community, a tag,
      the owner, or a newly recorded opt-out); one found in the file with nothing new counts as ``unchanged``;
    - ``merged``: further rows for a person already seen in this file (duplicates, compared without case);
    - ``rejected``: rows not imported, each with its line and reason in ``rejects`` (and in ``rejects_file``).
    """

    source: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    merged: int = 0
    rejects: list[Reject] = field(default_factory=list)
    rejects_file: Path | None = None

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    @property
    def rows(self) -> int:
        """Non-blank data rows read."""
        return self.created + self.updated + self.unchanged + self.merged + self.rejected

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready data."""
        return {
            "source": self.source,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "merged": self.merged,
            "rejected": self.rejected,
            "rejects_file": str(self.rejects_file) if self.rejects_file else None,
            "rejects": [{"line": reject.line, "reason": reject.reason} for reject in self.rejects],
        }


@dataclass
class _Import:
    """The state of one import across its chunks."""

    session: Session
    source: AttendeeSource
    now: datetime
    rejects: RejectsWriter
    summary: ImportSummary
    on_chunk: OnChunk | None
    #: email keys handled by earlier chunks: a later row for one of them is a duplicate, counted as merged
    seen: set[str] = field(default_factory=set)
    #: keys of contacts that existed before and are so far unchanged (a later duplicate may still change them)
    unchanged: set[str] = field(default_factory=set)
    #: lower-cased staff email -> (id, active), or None when no such staff member
    staff: dict[str, tuple[int, bool] | None] = field(default_factory=dict)

    def reject(self, line: int, cells: tuple[str, ...], reason: str) -> None:
        self.summary.rejects.append(Reject(line=line, reason=reason))
        self.rejects.write(cells, reason)

    def run_chunk(self, items: list[AttendeeRow | RejectedRow]) -> None:
        """Upsert one chunk: validate owners, merge duplicates, one SELECT, bulk inserts, updates."""
        good: list[AttendeeRow] = []
        for item in items:
            if isinstance(item, RejectedRow):
                self.reject(item.line, item.cells, item.reason)
            else:
                good.append(item)
        self._load_staff({row.owner_email for row in good if row.owner_email})
        rows: dict[str, AttendeeRow] = {}
        sources: dict[str, list[AttendeeRow]] = {}
        for row in good:
            owner_problem = self._owner_problem(row.owner_email)
            if owner_problem:
                self.reject(row.line, row.cells, owner_problem)
                continue
            sources.setdefault(row.email_key, []).append(row)
            previous = rows.get(row.email_key)
            rows[row.email_key] = row if previous is None else previous.merge(row)
        if not rows:
            return
        existing = {
            contact.email_key: contact
            for contact in self.session.exec(select(Contact).where(col(Contact.email_key).in_(list(rows))))
        }
        for key, contact in list(existing.items()):
            if contact.erased_at is not None:
                # the person asked to be forgotten: a list they are on does not bring them back
                for row in sources.pop(key):
                    self.reject(row.line, row.cells, f"{row.email} was erased at their request; not imported again")
                del rows[key], existing[key]
        self.summary.merged += sum(len(group) - 1 for group in sources.values())

        ids = {key: _flushed_id(contact) for key, contact in existing.items()}
        communities, tags = self._memberships(list(ids.values()))
        new_values = [self._new_values(row) for key, row in rows.items() if key not in existing]
        if new_values:
            # plain rows, not ORM objects: building 500 validated models costs more than inserting them
            # Core, not the ORM's bulk INSERT, which splits the rows wherever the set of blank cells changes.
            table = SQLModel.metadata.tables["contact"]
            inserted = self.session.connection().execute(
                insert(table).returning(table.c.id, table.c.email_key, sort_by_parameter_order=True), new_values
            )
            ids.update((key, contact_id) for contact_id, key in inserted)

        community_rows: list[dict[str, Any]] = []
        tag_rows: list[dict[str, Any]] = []
        for key, row in rows.items():
            contact_id = ids[key]
            added_communities = [c for c in row.communities if (contact_id, c) not in communities]
            added_tags = [t for t in row.tags if (contact_id, t) not in tags]
            community_rows += [{"contact_id": contact_id, "community": c} for c in added_communities]
            tag_rows += [{"contact_id": contact_id, "tag": t} for t in added_tags]
            if key not in existing:
                self.summary.created += 1
                continue
            contact = existing[key]
            changed = self._update(contact, row) or bool(added_communities or added_tags)
            if changed:
                contact.updated_at = self.now
                self.session.add(contact)
            if key in self.seen:
                self.summary.merged += 1
                if changed and key in self.unchanged:
                    self.unchanged.discard(key)
                    self.summary.unchanged -= 1
                    self.summary.updated += 1
            elif changed:
                self.summary.updated += 1
            else:
                self.summary.unchanged += 1
                self.unchanged.add(key)
        if community_rows:
            self.session.exec(insert(ContactCommunity), params=community_rows)
        if tag_rows:
            self.session.exec(insert(ContactTag), params=tag_rows)
        self.session.flush()
        if self.on_chunk is not None:
            self.on_chunk(self.session, [(ids[key], row) for key, row in rows.items() if key not in self.seen])
        self.seen.update(rows)

    def _load_staff(self, emails: set[str]) -> None:
        unknown = [email for email in emails if email not in self.staff]
        if not unknown:
            return
        found = self.session.exec(
            select(Staff.id, Staff.email, Staff.active).where(func.lower(Staff.email).in_(unknown))
        ).all()
        for email in unknown:
            self.staff[email] = None
        for staff_id, email, active in found:
            if staff_id is not None:
                self.staff[email.lower()] = (staff_id, active)

    def _owner_problem(self, owner_email: str | None) -> str | None:
        if owner_email is None:
            return None
        staff = self.staff.get(owner_email)
        if staff is None:
            return f"owner {owner_email} is not a staff member (add them with: engage staff add)"
        if not staff[1]:
            return f"owner {owner_email} is no longer an active staff member; name another owner"
        return None

    def _owner_id(self, owner_email: str | None) -> int | None:
        staff = self.staff.get(owner_email) if owner_email else None
        return staff[0] if staff else None

    def _memberships(self, contact_ids: list[int]) -> tuple[set[tuple[int, str]], set[tuple[int, str]]]:
        """The (contact id, community) and (contact id, tag) pairs already stored for these contacts."""
        if not contact_ids:
            return set(), set()
        communities = self.session.exec(
            select(ContactCommunity.contact_id, ContactCommunity.community).where(
                col(ContactCommunity.contact_id).in_(contact_ids)
            )
        ).all()
        tags = self.session.exec(
            select(ContactTag.contact_id, ContactTag.tag).where(col(ContactTag.contact_id).in_(contact_ids))
        ).all()
        return {(i, c) for i, c in communities}, {(i, t) for i, t in tags}

    def _new_values(self, row: AttendeeRow) -> dict[str, Any]:
        """The column values of a new contact; every row has the same keys, so one INSERT serves the chunk."""
        opted_out = row.email_opt_out
        return {
            "email": row.email,
            "email_key": row.email_key,
            **{name: getattr(row, name) for name in _COPIED_FIELDS},
            "owner_id": self._owner_id(row.owner_email),
            "email_opt_out": opted_out,
            "email_opt_out_at": self.now if opted_out else None,
            "email_opt_out_source": self._opt_out_source if opted_out else None,
            "do_not_call": row.do_not_call,
            "created_at": self.now,
            "updated_at": self.now,
        }

    def _update(self, contact: Contact, row: AttendeeRow) -> bool:
        """Apply the row's non-blank values; an import only ever adds opt-outs. Return whether anything changed."""
        changed = False
        values: dict[str, Any] = {name: getattr(row, name) for name in _COPIED_FIELDS}
        values["email"] = row.email
        values["owner_id"] = self._owner_id(row.owner_email)
        for name, value in values.items():
            if value is not None and getattr(contact, name) != value:
                setattr(contact, name, value)
                changed = True
        if row.email_opt_out and not contact.email_opt_out:
            self._record_opt_out(contact)
            changed = True
        if row.do_not_call and not contact.do_not_call:
            contact.do_not_call = True
            changed = True
        return changed

    @property
    def _opt_out_source(self) -> str:
        return f"import:{self.source.label}"[:200]

    def _record_opt_out(self, contact: Contact) -> None:
        contact.email_opt_out = True
        contact.email_opt_out_at = self.now
        contact.email_opt_out_source = self._opt_out_source


def _flushed_id(contact: Contact) -> int:
    if contact.id is None:
        raise RuntimeError(f"contact {contact.email_key!r} has no id after flush")
    return contact.id


def _chunks(items: Iterable[AttendeeRow | RejectedRow], size: int) -> Iterator[list[AttendeeRow | RejectedRow]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def import_contacts(
    *,
    session: Session,
    source: AttendeeSource,
    now: datetime,
    on_chunk: OnChunk | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> ImportSummary:
    """Upsert the attendees of ``source`` into the ledger, chunk by chunk, and report what happened.

    A contact is matched on its email without regard to case and never duplicated; a blank cell never erases what
    is known; an opt-out or do-not-call in the file is recorded, while a "no" never undoes one (an import never
    re-subscribes anyone). Owners must be active staff. Bad rows are skipped, counted and, for a file source,
    written to ``source.rejects_path`` ready to fix and import again.

    Each chunk is one transaction, committed on ``session`` before the next starts: a failure rolls back the chunk
    in progress (no rejects file is written) and leaves earlier chunks in, which a second run completes.
    ``on_chunk(session, [(contact_id, row), ...])`` runs inside each chunk's transaction, once per person (in-file
    duplicates merged first), so a flow can create plans in the same commit; what it raises aborts the import.
    ``progress(n)`` is told after each chunk how many of ``source.row_count`` records were read.
    The source is read from its start at each call, so the same source can be imported again.
    """
    if now.tzinfo is None:
        raise ValueError("import_contacts needs an aware `now` (UTC)")
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    summary = ImportSummary(source=source.name)
    with RejectsWriter(source) as rejects:
        state = _Import(session=session, source=source, now=now, rejects=rejects, summary=summary, on_chunk=on_chunk)
        for chunk in _chunks(source.read(), chunk_size):
            try:
                state.run_chunk(chunk)
                session.commit()
            except BaseException:
                session.rollback()
                raise
            if progress is not None:
                progress(chunk[-1].line - source.header_line)
        summary.rejects_file = rejects.finish()
    if progress is not None:
        progress(source.row_count)
    return summary
