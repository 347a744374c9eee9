"""Unsubscribe links: signed tokens, and the web pages behind them."""

from engage.unsubscribe.app import MAX_BODY_BYTES, SECURITY_HEADERS, create_app, serve
from engage.unsubscribe.tokens import (
    MINIMUM_SECRET_LENGTH,
    PLACEHOLDER_SECRET,
    SOURCE_LINK,
    SOURCE_ONE_CLICK,
    check_secret,
    is_loopback,
    make_token,
    read_token,
    record_opt_out,
    secret_problem,
    unsubscribe_url,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MINIMUM_SECRET_LENGTH",
    "PLACEHOLDER_SECRET",
    "SECURITY_HEADERS",
    "SOURCE_LINK",
    "SOURCE_ONE_CLICK",
    "check_secret",
    "create_app",
    "is_loopback",
    "make_token",
    "read_token",
    "record_opt_out",
    "secret_problem",
    "serve",
    "unsubscribe_url",
]
