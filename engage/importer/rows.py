"""What reading an attendee file gives: a good row, normalised, or a rejected one with its reasons."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class AttendeeRow:
    """One good attendee record, normalised; ``line`` is its row number as a spreadsheet shows it (header = 1)."""

    line: int
    email: str
    email_key: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    language: str | None = None
    #: The first community of the row's role cell, canonical (``volunteer``, ``donor``...): a flow maps it to a plan.
    role: str | None = None
    communities: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    #: The owner's email, lower-cased; the ledger checks it against staff.
    owner_email: str | None = None
    #: True only when the file says so: blank or "no" never re-subscribes anyone.
    email_opt_out: bool = False
    do_not_call: bool = False
    city: str | None = None
    postal_code: str | None = None
    country: str | None = None
    organisation: str | None = None
    #: The record's cells as read, for the rejects file should the ledger refuse the row (e.g. unknown owner).
    cells: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def merge(self, later: AttendeeRow) -> AttendeeRow:
        """Merge a later row for the same person: its non-blank values win, blanks never erase, flags only add."""
        values = {
            name: getattr(later, name)
            for name in (
                "email",
                "first_name",
                "last_name",
                "phone",
                "language",
                "role",
                "owner_email",
                "city",
                "postal_code",
                "country",
                "organisation",
            )
            if getattr(later, name) is not None
        }
        return replace(
            self,
            **values,
            communities=tuple(dict.fromkeys(self.communities + later.communities)),
            tags=tuple(dict.fromkeys(self.tags + later.tags)),
            email_opt_out=self.email_opt_out or later.email_opt_out,
            do_not_call=self.do_not_call or later.do_not_call,
        )


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A record that cannot be imported, with every reason found, so it can be fixed in one go."""

    line: int
    cells: tuple[str, ...]
    reason: str
