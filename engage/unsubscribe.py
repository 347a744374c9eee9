"""Signed unsubscribe links: a token per contact that cannot be guessed or reused for anybody else."""

from __future__ import annotations

import base64
import hashlib
import hmac

from engage.errors import EngageError
from engage.settings import Settings, get_settings


class BadTokenError(EngageError):
    """The unsubscribe token is malformed or its signature does not match."""


def _signature(contact_id: int, secret: str) -> str:
    digest = hmac.new(secret.encode(), f"unsubscribe:{contact_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")


def make_token(contact_id: int, settings: Settings | None = None) -> str:
    """`<contact id>.<signature>`: the id is readable, the HMAC makes it unforgeable."""
    settings = settings or get_settings()
    return f"{contact_id}.{_signature(contact_id, settings.unsubscribe_secret.get_secret_value())}"


def read_token(token: str, settings: Settings | None = None) -> int:
    """The contact id of a valid token; BadTokenError otherwise."""
    settings = settings or get_settings()
    contact_part, _, signature = token.partition(".")
    if not contact_part.isdigit() or not signature:
        raise BadTokenError("this unsubscribe link is not valid")
    contact_id = int(contact_part)
    expected = _signature(contact_id, settings.unsubscribe_secret.get_secret_value())
    if not hmac.compare_digest(expected, signature):
        raise BadTokenError("this unsubscribe link is not valid")
    return contact_id


def unsubscribe_url(contact_id: int, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return f"{settings.unsubscribe_base_url.rstrip('/')}/u/{make_token(contact_id, settings)}"
