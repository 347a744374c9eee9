"""The web app behind every email's unsubscribe link, served by `engage unsubscribe-server`.

``GET /u/{token}`` shows a confirmation page in the contact's language: link checkers and mail scanners open
links, so a GET never unsubscribes anybody. ``POST /u/{token}`` records the opt-out, whether it comes from that
page's button or from a mail client's one-click unsubscribe (RFC 8058: a POST whose body is
``List-Unsubscribe=One-Click``). Both are idempotent. A malformed or tampered token gets a 400 page; no page
ever shows a stack trace. The pages are Jinja2 templates in ``email_templates/_pages/<language>/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateNotFound
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from engage import db
from engage.rendering.environment import template_environment
from engage.settings import Settings, get_settings
from engage.unsubscribe.tokens import (
    SOURCE_LINK,
    SOURCE_ONE_CLICK,
    BadTokenError,
    check_secret,
    read_token,
    record_opt_out,
)
from models import Contact

__all__ = ["create_app", "serve"]

log = logging.getLogger(__name__)

#: A one-click POST body is 26 bytes; nothing legitimate comes near this.
MAX_BODY_BYTES = 16_384
SECURITY_HEADERS = {
    # The token is in the URL: never cache the page, never send it on as a referrer, never index it.
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


@dataclass(frozen=True)
class _ContactView:
    language: str | None
    email: str
    opted_out: bool


class _Pages:
    """The app's pages, in the configured languages, from `email_templates/_pages/`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.languages = settings.language_list
        self.environment = template_environment(settings.email_templates_dir, autoescape_strings=True)

    def pick(self, *wanted: str | None) -> str:
        """Return the first wanted language the organisation writes in (`fr-CA` is `fr`), else the default."""
        for language in wanted:
            if not language:
                continue
            code = language.strip().lower().replace("_", "-")
            for candidate in (code, code.split("-")[0]):
                if candidate in self.languages:
                    return candidate
        return self.languages[0]

    def from_request(self, request: Request) -> str:
        """Return the visitor's language from Accept-Language, when no contact tells it."""
        header = request.headers.get("accept-language", "")
        return self.pick(*(part.split(";")[0] for part in header.split(",")))

    def response(self, page: str, language: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        context = {
            "language": language,
            "organisation": {"name": self.settings.organisation_name, "address": self.settings.organisation_address},
            **values,
        }
        for candidate in dict.fromkeys((language, self.languages[0])):
            try:
                template = self.environment.get_template(f"_pages/{candidate}/{page}.html")
            except TemplateNotFound:
                continue
            return HTMLResponse(template.render(context), status_code=status, headers=SECURITY_HEADERS)
        # The page files are missing altogether: still answer with the status, in plain words.
        return HTMLResponse(
            f"<!DOCTYPE html><title>{status}</title><p>{page}</p>", status_code=status, headers=SECURITY_HEADERS
        )


def _masked(email: str) -> str:
    """Show enough of an address for its owner to recognise it: `h•••@example.org`."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}•••@{domain}" if domain else ""


async def _small_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            break
    return bytes(body[:MAX_BODY_BYTES])


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the unsubscribe app; refuses to start with a placeholder secret for links that leave this machine."""
    settings = settings or get_settings()
    check_secret(settings)
    pages = _Pages(settings)
    url = settings.database_url

    def find_contact(contact_id: int) -> _ContactView | None:
        with db.session_scope(url, readonly=True) as session:
            contact = session.get(Contact, contact_id)
            if contact is None or contact.erased_at is not None:
                return None
            return _ContactView(contact.language, contact.email, contact.email_opt_out)

    def opt_out(contact_id: int, source: str) -> _ContactView | None:
        with db.session_scope(url) as session:
            contact = record_opt_out(session=session, contact_id=contact_id, source=source)
            if contact is None:
                return None
            return _ContactView(contact.language, contact.email, contact.email_opt_out)

    def contact_id_of(request: Request) -> int | None:
        try:
            return read_token(str(request.path_params["token"]), settings)
        except BadTokenError:
            return None

    async def confirm(request: Request) -> Response:
        contact_id = contact_id_of(request)
        if contact_id is None:
            return pages.response("invalid", pages.from_request(request), status=400)
        contact = await run_in_threadpool(find_contact, contact_id)
        language = pages.pick(contact.language if contact else None, pages.from_request(request))
        if contact is None or contact.opted_out:
            # Nothing (more) to do; an erased contact's link says the same, revealing nothing about them.
            return pages.response("done", language)
        return pages.response("confirm", language, email=_masked(contact.email))

    async def unsubscribe(request: Request) -> Response:
        contact_id = contact_id_of(request)
        if contact_id is None:
            return pages.response("invalid", pages.from_request(request), status=400)
        body = await _small_body(request)
        source = SOURCE_ONE_CLICK if b"One-Click" in body else SOURCE_LINK
        contact = await run_in_threadpool(opt_out, contact_id, source)
        log.info("unsubscribe link of contact %s used (%s)", contact_id, source)
        return pages.response("done", pages.pick(contact.language if contact else None, pages.from_request(request)))

    async def http_error(request: Request, error: Exception) -> Response:
        status = error.status_code if isinstance(error, HTTPException) else 500
        return pages.response("error", pages.from_request(request), status=status, status_code=status)

    async def server_error(request: Request, error: Exception) -> Response:
        # Starlette logs the exception; the visitor gets a page in their language, never a traceback.
        return pages.response("error", pages.from_request(request), status=500, status_code=500)

    return Starlette(
        routes=[
            Route("/u/{token}", confirm, methods=["GET"]),
            Route("/u/{token}", unsubscribe, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Run the app with uvicorn until interrupted; access logs stay off, as every URL holds a token."""
    import uvicorn

    check_secret(settings, serving_host=host)
    db.ensure_schema(settings.database_url)
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, server_header=False, log_level="info")
