"""The one way Engage makes a Jinja2 environment: for the emails, the staff digest and the unsubscribe pages."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Undefined, select_autoescape

from engage.rendering.context import _long_date_filter


def template_environment(
    directory: Path,
    *,
    undefined: type[Undefined] = StrictUndefined,
    autoescape_strings: bool = False,
    keep_trailing_newline: bool = False,
    long_date: bool = False,
) -> Environment:
    """An environment over a folder of templates: `.html` autoescaped, every variable strict, blocks trimmed.

    What differs from one use to the next is an option here: ``undefined`` (the emails name a misspelt variable
    with a suggestion), ``autoescape_strings`` (templates made from strings are escaped too: the web pages),
    ``keep_trailing_newline`` (the digest's text ends as written; the emails end with one line break of their own)
    and ``long_date``, the filter that writes a date in words in the template's ``language``.
    """
    environment = Environment(
        loader=FileSystemLoader(str(directory)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=autoescape_strings),
        undefined=undefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=keep_trailing_newline,
    )
    if long_date:
        environment.filters["long_date"] = _long_date_filter
    return environment
