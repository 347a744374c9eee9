"""Reading attendee lists as real tools export them, row by row. Pure: no database, no Prefect."""

from engage.importer.fields import (
    FIELDS,
    IGNORE,
    fold,
    normalise_country,
    normalise_email,
    normalise_language,
    normalise_roles,
    parse_flag,
    parse_mapping,
)
from engage.importer.rejects import RejectsWriter
from engage.importer.rows import AttendeeRow, RejectedRow
from engage.importer.source import AttendeeSource

__all__ = [
    "AttendeeRow",
    "AttendeeSource",
    "FIELDS",
    "IGNORE",
    "RejectedRow",
    "RejectsWriter",
    "fold",
    "normalise_country",
    "normalise_email",
    "normalise_language",
    "normalise_roles",
    "parse_flag",
    "parse_mapping",
]
