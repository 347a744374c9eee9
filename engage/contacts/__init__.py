"""Contacts in the ledger: found, imported, listed."""

from engage.contacts.importing import CHUNK_SIZE, ImportSummary, OnChunk, Reject, import_contacts
from engage.contacts.listing import ContactView, list_contacts
from engage.contacts.lookup import get_contact, get_contact_by_id

__all__ = [
    "CHUNK_SIZE",
    "ContactView",
    "ImportSummary",
    "OnChunk",
    "Reject",
    "get_contact",
    "get_contact_by_id",
    "import_contacts",
    "list_contacts",
]
