"""Secrets held outside Engage's settings: the SMTP password in a Prefect Secret block.

The mailer (`engage.mail`) knows nothing of Prefect: it is given a password source, a function it calls once, when a
connection first logs in. Prefect is imported only then.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import Secret, SecretStr

from engage.errors import ConnectionSendError
from engage.settings import Settings

PasswordSource = Callable[[], str]


def read_secret_block(name: str) -> str:
    """Read the SMTP password from the Prefect Secret block ``name``."""
    from prefect.blocks.system import Secret as SecretBlock

    try:
        # Called from synchronous code, load() returns the block itself (not a coroutine).
        block: Any = SecretBlock.load(name)
    # Prefect raises its own, httpx's and pydantic's errors here; each becomes one clear line. The password is not
    # loaded when this fails, so the message cannot contain it.
    except Exception as error:
        raise ConnectionSendError(
            f"cannot read the SMTP password from the Prefect Secret block {name!r}: {type(error).__name__}: {error}"
        ) from None
    # The raw value: Secret.get() would parse a password such as "1234" as JSON and return a number.
    value = block.value.get_secret_value() if isinstance(block.value, SecretStr | Secret) else block.value
    if not isinstance(value, str) or not value:
        raise ConnectionSendError(f"the Prefect Secret block {name!r} must hold a text value (the SMTP password)")
    return value


def smtp_password_source(settings: Settings) -> PasswordSource | None:
    """Where a sender reads the SMTP password when ENGAGE_SMTP_PASSWORD is not set: the block of
    ENGAGE_SMTP_PASSWORD_BLOCK, if one is named."""
    if settings.smtp_password is None and settings.smtp_password_block:
        return partial(read_secret_block, settings.smtp_password_block)
    return None
