"""Fault points: places where a test may hold a process still, to kill it there with SIGKILL.

Off unless `ENGAGE_FAULT_PAUSE=<point>:<n>` is set: the n-th time this process reaches ``point`` it writes its pid
to `ENGAGE_FAULT_DIR/paused-<point>` and sleeps until killed. The crash-recovery tests use it to kill a flow run
between the SMTP server's answer and the ledger write, which no outside timing could hit reliably.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_SPEC = os.environ.get("ENGAGE_FAULT_PAUSE", "")
_POINT, _, _AT = _SPEC.partition(":")
_counts: dict[str, int] = {}

POINTS = ("before_send", "after_accept", "during_ledger_write")


def pause_here(point: str) -> None:
    """Hold this process forever at ``point`` when a test asked for it; otherwise return at once."""
    if point != _POINT:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != int(_AT or 1):
        return
    folder = Path(os.environ.get("ENGAGE_FAULT_DIR", "."))
    marker = folder / f"paused-{point}"
    marker.write_text(str(os.getpid()), encoding="utf-8")
    while True:
        time.sleep(60)
