"""The staff-digest flow: each staff member's morning email of their calls and tasks of the day, the overdue, news."""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run as current_flow_run

from engage import digest
from flows.common import with_send_retries
from models import utcnow


@task(name="send-staff-digests")
def send_staff_digests(now: datetime, to: str | None, flow_run_id: str | None) -> dict[str, int]:
    """Email their digest to each staff member whose morning it is; the ledger skips whoever already had theirs."""
    return digest.send_digests(now=now, only=to, flow_run_id=flow_run_id).as_dict()


def _run_name() -> str:
    now = current_flow_run.parameters.get("now")
    when = now if isinstance(now, datetime) else utcnow()
    return f"staff digest · {when:%Y-%m-%d %H:%M} UTC"


@flow(name="staff-digest", flow_run_name=_run_name, log_prints=False)
def staff_digest(now: datetime | None = None, to: str | None = None) -> dict[str, int]:
    """Email each active staff member, in their morning, their calls and tasks of the day, the overdue and the news."""
    logger = get_run_logger()
    now = now or utcnow()
    counts = with_send_retries(send_staff_digests)(now, to, current_flow_run.id)
    # Counts only: Prefect keeps artifacts after a person is erased.
    logger.info("staff digests: %s", counts)
    create_table_artifact(
        key="staff-digest",
        table=[{"what": key, "count": value} for key, value in counts.items()],
        description=f"Staff digests at {now:%Y-%m-%d %H:%M} UTC",
    )
    return counts


if __name__ == "__main__":
    staff_digest()
