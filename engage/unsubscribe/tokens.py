"""Signed unsubscribe links: a token per contact that cannot be guessed or reused for anybody else.

The token is ``<contact id>.<HMAC-SHA256 of the id>``, keyed by ``ENGAGE_UNSUBSCRIBE_SECRET``. The development
placeholder secret is refused as soon as links point anywhere but this machine: anybody could forge them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from datetime import datetime
from urllib.parse import urlsplit

from sqlmodel import Session

from engage.errors import BadTokenError, ConfigurationError
from engage.settings import Settings, get_settings
from models import Contact, utcnow

#: The default of ENGAGE_UNSUBSCRIBE_SECRET: fine on a laptop, refused for links that leave it.
PLACEHOLDER_SECRET = "engage-local-development-secret-change-me"
MINIMUM_SECRET_LENGTH = 24
SOURCE_LINK = "unsubscribe-link"
SOURCE_ONE_CLICK = "unsubscribe-one-click"


def is_loopback(host: str | None) -> bool:
    """Tell whether a host name or address only reaches this machine."""
    if not host:
        return False
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def secret_problem(settings: Settings, *, serving_host: str | None = None) -> str | None:
    """Return why the unsubscribe secret may not be used with these settings, or None when it may."""
    secret = settings.unsubscribe_secret.get_secret_value()
    public = not is_loopback(urlsplit(settings.unsubscribe_base_url).hostname) or (
        serving_host is not None and not is_loopback(serving_host)
    )
    if not public:
        return None
    where = settings.unsubscribe_base_url if serving_host is None or is_loopback(serving_host) else serving_host
    if secret == PLACEHOLDER_SECRET or "change-me" in secret.lower() or "changeme" in secret.lower():
        problem = "is the development placeholder"
    elif len(secret) < MINIMUM_SECRET_LENGTH:
        problem = f"is shorter than {MINIMUM_SECRET_LENGTH} characters"
    else:
        return None
    return (
        f"ENGAGE_UNSUBSCRIBE_SECRET {problem}, but unsubscribe links are served at {where}: anybody could forge "
        "them. Set a long random value, e.g. from "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
    )


def check_secret(settings: Settings, *, serving_host: str | None = None) -> None:
    """Refuse, with one clear line, a placeholder or short secret for links that leave this machine."""
    problem = secret_problem(settings, serving_host=serving_host)
    if problem:
        raise ConfigurationError(problem)


def _signature(contact_id: int, secret: str) -> str:
    digest = hmac.new(secret.encode(), f"unsubscribe:{contact_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")


def make_token(contact_id: int, settings: Settings | None = None) -> str:
    """Return `<contact id>.<signature>`: the id is readable, the HMAC makes it unforgeable."""
    settings = settings or get_settings()
    check_secret(settings)
    return f"{contact_id}.{_signature(contact_id, settings.unsubscribe_secret.get_secret_value())}"


def read_token(token: str, settings: Settings | None = None) -> int:
    """Return the contact id of a valid token; BadTokenError otherwise."""
    settings = settings or get_settings()
    contact_part, _, signature = token.partition(".")
    if not (contact_part.isascii() and contact_part.isdigit()) or len(contact_part) > 18 or not signature:
        raise BadTokenError("this unsubscribe link is not valid")
    contact_id = int(contact_part)
    expected = _signature(contact_id, settings.unsubscribe_secret.get_secret_value())
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise BadTokenError("this unsubscribe link is not valid")
    return contact_id


def unsubscribe_url(contact_id: int, settings: Settings | None = None) -> str:
    """Return the link a contact follows to stop receiving emails."""
    settings = settings or get_settings()
    return f"{settings.unsubscribe_base_url.rstrip('/')}/u/{make_token(contact_id, settings)}"


def record_opt_out(*, session: Session, contact_id: int, source: str, now: datetime | None = None) -> Contact | None:
    """Mark a contact as not wanting email; the first opt-out's time and source are kept. None if erased or gone."""
    contact = session.get(Contact, contact_id)
    if contact is None or contact.erased_at is not None:
        return None
    if not contact.email_opt_out:
        moment = now or utcnow()
        contact.email_opt_out = True
        contact.email_opt_out_at = moment
        contact.email_opt_out_source = source
        contact.updated_at = moment
        session.add(contact)
    return contact
