"""Frames: one email rendered once for many contacts, each contact's values put in as the CSS inliner escapes them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import (
    nodes,
)

from engage.rendering.context import RenderedEmail, Variables

#: The values that change from one contact to the next; `subject` is one too, in the HTML, when it names the contact.
_CONTACT_FIELDS = ("first_name", "last_name", "full_name", "email")


_VARYING = frozenset({"contact", "unsubscribe_url", "subject"})


_MAX_FRAMES = 256


_NO_FRAME = object()


_MARKER = re.compile("\ue000(\\d+)\ue001")


#: Values full of what HTML escapes, to check a frame against the plain render before trusting it.
_PROBE = {
    "first_name": 'Zoë & <Léa> "O\'Connor"',
    "last_name": 'Dupont-Moretti & Fils <"l\'aîné">',
    "full_name": 'Zoë & <Léa> "O\'Connor" Dupont-Moretti & Fils <"l\'aîné">',
    "email": "zoe.o'connor&fils@exämple.org",
    "unsubscribe_url": "https://example.org/u/1.a?b=\"c\"&d=<e>'f'",
}


# Characters the HTML parser of the CSS inliner would change (line ends, NUL, controls), or that mark the frame.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ue000\ue001]")


class _Marker:
    """Stands for one contact value in a frame: printed, it writes its marker; tested, it is true."""

    __slots__ = ("token",)

    def __init__(self, index: int) -> None:
        self.token = f"\ue000{index}\ue001"

    def __html__(self) -> str:
        return self.token

    def __str__(self) -> str:
        return self.token

    def __bool__(self) -> bool:
        return True


def _contact_values(context: Mapping[str, Any]) -> dict[str, str] | None:
    """The contact's values of a context (and the unsubscribe link), if they can fill a frame."""
    contact = context.get("contact")
    unsubscribe = context.get("unsubscribe_url")
    if not isinstance(contact, Variables) or not isinstance(unsubscribe, str):
        return None
    values = {field: contact[field] if field in contact else None for field in _CONTACT_FIELDS}
    values["unsubscribe_url"] = unsubscribe
    for value in values.values():
        # A frame holds each value as the templates print it: a run of spaces would be collapsed in the subject.
        if not isinstance(value, str) or _UNSAFE.search(value) or value != " ".join(value.split()):
            return None
    return values  # type: ignore[return-value]


def _with_contact_values(context: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(context)
    result["contact"] = Variables("contact", {field: values[field] for field in _CONTACT_FIELDS})
    result["unsubscribe_url"] = values["unsubscribe_url"]
    return result


def _frozen(value: Any) -> Any:
    if isinstance(value, Variables):
        return tuple((name, _frozen(value[name])) for name in value.names())
    hash(value)
    return value


def _frame_shape(context: Mapping[str, Any], values: Mapping[str, str] | None) -> object | None:
    """What a frame depends on: every value but the contact's, and which of the contact's values are empty."""
    if values is None:
        return None
    try:
        rest = tuple(sorted((name, _frozen(value)) for name, value in context.items() if name not in _VARYING))
    except TypeError:  # an unhashable value: no frame
        return None
    return rest, tuple(bool(value) for value in values.values())


def _escape_text(value: str) -> str:
    """Escape text as the CSS inliner's HTML serialiser writes it (html5ever, the HTML standard's algorithm)."""
    return value.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attribute(value: str) -> str:
    return value.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace('"', "&quot;")


class _Frame:
    """An email rendered with markers for the contact's values: literal pieces, and where each value goes."""

    __slots__ = ("html", "subject", "text")

    def __init__(self, subject: str, text: str, html: str | None) -> None:
        self.subject = _pieces(subject, in_html=False)
        self.text = _pieces(text, in_html=False)
        self.html = _pieces(html, in_html=True) if html is not None else None

    def fill(self, values: Mapping[str, str], language: str) -> RenderedEmail:
        by_index = list(values.values())
        return RenderedEmail(
            subject=_join(self.subject, by_index),
            text=_join(self.text, by_index),
            html=_join(self.html, by_index) if self.html is not None else None,
            language=language,
        )


_Piece = tuple[str, int, Callable[[str], str] | None]


def _pieces(rendered: str, *, in_html: bool) -> list[_Piece]:
    """Split a rendered part at its markers: (literal text before, value index or -1, how to escape the value)."""
    pieces: list[_Piece] = []
    position = 0
    for match in _MARKER.finditer(rendered):
        before = rendered[position : match.start()]
        escape: Callable[[str], str] | None = None
        if in_html:
            # Inside a tag (after its last "<" and before any ">") a value is an attribute's.
            inside_tag = rendered.rfind("<", 0, match.start()) > rendered.rfind(">", 0, match.start())
            escape = _escape_attribute if inside_tag else _escape_text
        pieces.append((before, int(match.group(1)), escape))
        position = match.end()
    pieces.append((rendered[position:], -1, None))
    return pieces


def _join(pieces: list[_Piece], values: list[str]) -> str:
    out = []
    for literal, index, escape in pieces:
        out.append(literal)
        if index >= 0:
            out.append(escape(values[index]) if escape is not None else values[index])
    return "".join(out)


def _is_varying(node: nodes.Node) -> bool:
    """A reference to one of the contact's values: `contact.x`, `contact["x"]`, `unsubscribe_url`, `subject`."""
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        return isinstance(node.node, nodes.Name) and node.node.name == "contact"
    return isinstance(node, nodes.Name) and node.name in _VARYING - {"contact"}


def _plain_uses(node: nodes.Node, position: str | None) -> bool:
    """Whether every contact value under ``node`` is printed or tested as it is, nothing else.

    ``position`` is "output" for an expression whose value is printed, "test" for one whose truth is tested.
    """
    if _is_varying(node):
        return position in ("output", "test")
    if isinstance(node, nodes.Name):
        # `contact` on its own, or a name that hides a contact value (set, for, macro arguments): no frame.
        return node.name not in _VARYING
    if isinstance(node, nodes.Output):
        return all(_plain_uses(child, "output") for child in node.nodes)
    if isinstance(node, nodes.If):
        return (
            _plain_uses(node.test, "test")
            and all(_plain_uses(child, None) for child in node.body + node.else_)
            and all(_plain_uses(branch, None) for branch in node.elif_)
        )
    if isinstance(node, nodes.CondExpr):
        return (
            _plain_uses(node.test, "test")
            and _plain_uses(node.expr1, position)
            and (node.expr2 is None or _plain_uses(node.expr2, position))
        )
    if isinstance(node, nodes.Filter) and node.name in ("e", "escape") and position == "output" and node.node:
        return _plain_uses(node.node, "output") and not (node.args or node.kwargs or node.dyn_args or node.dyn_kwargs)
    if isinstance(node, nodes.Concat) and position == "output":
        return all(_plain_uses(child, "output") for child in node.nodes)
    if isinstance(node, nodes.Not | nodes.And | nodes.Or) and position == "test":
        return all(_plain_uses(child, "test") for child in node.iter_child_nodes())
    return all(_plain_uses(child, None) for child in node.iter_child_nodes())
