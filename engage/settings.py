"""One settings object for Engage, read from the environment (prefix ``ENGAGE_``) and an optional ``.env`` file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything Engage can be told; every field is an ``ENGAGE_<NAME>`` environment variable."""

    model_config = SettingsConfigDict(env_prefix="ENGAGE_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///engage.db",
        description="SQLAlchemy URL of the ledger. Default: a SQLite file `engage.db` in the working directory.",
    )
    staff_email: str | None = Field(default=None, description="Who is acting when a command is given no `--as EMAIL`.")
    plan_templates_dir: Path = Field(
        default=PROJECT_ROOT / "plan_templates", description="Folder of plan template YAML files."
    )
    email_templates_dir: Path = Field(
        default=PROJECT_ROOT / "email_templates", description="Folder of Jinja2 email templates."
    )
    inbox_dir: Path = Field(
        default=Path("inbox"), description="Attendee inbox: the folder whose CSV files flows may read."
    )
    outbox_dir: Path = Field(
        default=Path("outbox"), description="Where the local SMTP capture writes each accepted message."
    )
    organisation_name: str = Field(default="No More Homelessness", description="Sender display name.")
    organisation_address: str = Field(
        default="12 rue de la Solidarité, 69001 Lyon, France",
        description="Postal address printed in every email footer.",
    )
    organisation_email: str = Field(
        default="contact@nomorehomelessness.org", description="From address of every email."
    )
    organisation_reply_to: str | None = Field(
        default=None,
        description=(
            "Where answers go when no staff member is behind a plan (else the staff member who applied it); "
            "default: ENGAGE_ORGANISATION_EMAIL."
        ),
    )
    timezone: str = Field(default="Europe/Paris", description="The organisation's time zone, default for new staff.")
    languages: str = Field(
        default="fr,en", description="Languages emails are written in, comma separated; the first is the default."
    )
    smtp_host: str = Field(default="127.0.0.1", description="SMTP relay host.")
    smtp_port: int = Field(default=1025, description="SMTP relay port.")
    smtp_user: str | None = Field(default=None, description="SMTP user name, if the relay wants a login.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password; never logged.")
    smtp_security: Literal["none", "starttls", "ssl"] = Field(
        default="none", description="`none`, `starttls` or `ssl` (implicit TLS)."
    )
    smtp_timeout: float = Field(default=30.0, description="Seconds to wait for the SMTP server.")
    smtp_from: str | None = Field(
        default=None, description="From address of every email; default: ENGAGE_ORGANISATION_EMAIL."
    )
    smtp_password_block: str | None = Field(
        default=None,
        description=(
            "Name of a Prefect Secret block holding the SMTP password, read when a connection logs in; "
            "used when ENGAGE_SMTP_PASSWORD is not set."
        ),
    )
    smtp_ca_file: Path | None = Field(
        default=None,
        description="A PEM file of CA certificates to trust for STARTTLS/SSL, e.g. a private relay's own CA.",
    )
    smtp_rate_per_minute: float | None = Field(
        default=None, gt=0, description="At most this many messages a minute per process, for relays that throttle."
    )
    unsubscribe_secret: SecretStr = Field(
        default=SecretStr("engage-local-development-secret-change-me"),
        description="HMAC key of unsubscribe links. Set a long random value in production.",
    )
    unsubscribe_base_url: str = Field(
        default="http://127.0.0.1:8025", description="Public address of `engage unsubscribe-server`."
    )
    unsubscribe_mailto: str | None = Field(
        default=None,
        description=(
            "An address that processes unsubscribe emails, added to the List-Unsubscribe header next to the link; "
            "none by default (the link alone gives one-click unsubscribe)."
        ),
    )
    prefect_deployments: Literal["auto", "always", "never"] = Field(
        default="auto",
        description=(
            "Whether due times become scheduled `run-due-steps` flow runs: `auto` when the deployment exists on the "
            "Prefect server, `never` in simulations (the flow is then called in-process)."
        ),
    )
    send_retries: int = Field(default=3, ge=0, description="Retries of a batch after a transient SMTP failure.")
    retry_delay_seconds: float | None = Field(
        default=None, description="Fixed delay between retries; default: exponential backoff from 10 seconds."
    )
    batch_size: int = Field(default=200, ge=1, description="Plan steps claimed and run together in one task.")
    send_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description=(
            "Batches one run-due-steps run sends at once, each over its own SMTP connection; a crash can leave at "
            "most one email per connection in doubt (`unknown`)."
        ),
    )
    lease_seconds: int = Field(
        default=600, ge=10, description="How long a claim on a plan step holds before another run may take it."
    )
    call_reminder_minutes: int = Field(
        default=10, ge=0, le=1440, description="How long before a call its calendar invite's reminder rings."
    )
    digest_time: time = Field(
        default=time(7, 0),
        description=(
            "Local time from which a staff member's morning digest goes out: the first staff-digest run at or after "
            "it, on their working days and before their working day ends."
        ),
    )

    @field_validator("languages")
    @classmethod
    def _languages_not_empty(cls, value: str) -> str:
        codes = [code.strip().lower() for code in value.split(",") if code.strip()]
        if not codes:
            raise ValueError("ENGAGE_LANGUAGES needs at least one language code, e.g. 'fr,en'")
        return ",".join(codes)

    @property
    def language_list(self) -> list[str]:
        return self.languages.split(",")

    @property
    def default_language(self) -> str:
        return self.language_list[0]


@lru_cache
def _from_environment() -> Settings:
    return Settings()


_override: Settings | None = None


def get_settings() -> Settings:
    """The settings in force: the environment's (read once per process), or those of `settings_override`."""
    return _override if _override is not None else _from_environment()


#: Read the environment again on the next call (tests change it; a real command is a fresh process).
get_settings.cache_clear = _from_environment.cache_clear  # type: ignore[attr-defined]


@contextmanager
def settings_override(**changes: Any) -> Iterator[Settings]:
    """Run with some settings changed, in this process only (every thread sees them); the environment stays as it is.

    The CLI uses it to point an in-process flow at a file's folder, the simulator at its own SMTP capture.
    """
    global _override
    previous = _override
    unknown = sorted(set(changes) - set(Settings.model_fields))
    if unknown:
        raise TypeError(f"no such settings: {', '.join(unknown)}")
    _override = get_settings().model_copy(update=changes)
    try:
        yield _override
    finally:
        _override = previous
