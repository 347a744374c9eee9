"""What each calendar still needs to hear about a call. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from engage.vocabulary import (
    DeliveryKind,
    DeliveryState,
)

INVITE_KINDS = (DeliveryKind.INVITE, DeliveryKind.UPDATE, DeliveryKind.CANCEL)


Method = Literal["REQUEST", "CANCEL"]


@dataclass(frozen=True)
class SentInvite:
    """An invite already recorded for a call: its kind, SEQUENCE, recipient and delivery state."""

    kind: str
    sequence: int
    recipient: str
    state: str


@dataclass(frozen=True)
class InviteMessage:
    """One invite to send: `invite` (a REQUEST new to that calendar), `update` (a REQUEST it replaces) or `cancel`."""

    kind: str
    recipient: str
    sequence: int

    @property
    def method(self) -> Method:
        return "CANCEL" if self.kind == DeliveryKind.CANCEL else "REQUEST"


def messages_due(
    *, assignee: str, sequence: int, cancelled: bool, history: Sequence[SentInvite]
) -> tuple[list[InviteMessage], int]:
    """What each calendar still needs to hear about one call, and the call's SEQUENCE once they are sent.

    A calendar holds the call when its last invite that did not fail is a REQUEST. Every calendar but the assignee's
    that holds it gets a CANCEL; the assignee's gets a REQUEST unless it already has this SEQUENCE (or a CANCEL when
    the call is cancelled). A message takes the call's SEQUENCE, or the next one free for its kind (a delivery is
    unique per step, kind and sequence), so every calendar only ever sees higher numbers. A `deferred` message
    never went out: it tells nothing, but its number is taken, so sending it again takes the next one.
    """
    last_any: dict[str, SentInvite] = {}
    last_ok: dict[str, SentInvite] = {}
    for sent in sorted(history, key=lambda h: h.sequence):
        if sent.state == DeliveryState.DEFERRED:
            continue  # nothing went out: that calendar heard nothing (its number stays taken, below)
        key = sent.recipient.strip().lower()
        last_any[key] = sent
        if sent.state != DeliveryState.FAILED:
            last_ok[key] = sent
    used = {(h.kind, h.sequence) for h in history}
    messages: list[InviteMessage] = []

    def add(kind: str, recipient: str) -> None:
        number = sequence
        while (kind, number) in used:
            number += 1
        used.add((kind, number))
        messages.append(InviteMessage(kind=kind, recipient=recipient, sequence=number))

    def holds(key: str) -> bool:
        return key in last_ok and last_ok[key].kind != DeliveryKind.CANCEL

    assignee_key = assignee.strip().lower()
    for key in sorted(last_ok):
        if key != assignee_key and holds(key):
            add(DeliveryKind.CANCEL, last_ok[key].recipient)
    if cancelled:
        if holds(assignee_key):
            add(DeliveryKind.CANCEL, assignee)
    else:
        latest = last_any.get(assignee_key)
        if latest is None or latest.kind == DeliveryKind.CANCEL or latest.sequence < sequence:
            add(DeliveryKind.UPDATE if holds(assignee_key) else DeliveryKind.INVITE, assignee)
    return messages, max([sequence, *(m.sequence for m in messages)])
