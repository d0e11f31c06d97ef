"""Keywords in templates: $recipientName$ and $recipientNumber$ (case-sensitive), rendered per recipient."""

from __future__ import annotations

import html
import re

from varsel.orders.text import subject_line

NAME = "$recipientName$"
NUMBER = "$recipientNumber$"
_KEYWORD = re.compile(re.escape(NAME) + "|" + re.escape(NUMBER))


def has_keywords(text: str) -> bool:
    return NAME in text or NUMBER in text


def render(text: str, *, name: str | None, number: str | None, html_body: bool = False) -> str:
    """The text with the recipient's name and organisation number filled in.

    In an HTML body the name is escaped: a registry name like "Smith & Sons <AS>" must show as written and can never
    inject markup. The number is digits only, or empty for persons and plain addresses.
    """
    if not has_keywords(text):
        return text
    shown_name = name or ""
    if html_body:
        shown_name = html.escape(shown_name, quote=True)
    values = {NAME: shown_name, NUMBER: number or ""}
    # One pass: a name that itself reads "$recipientNumber$" is shown as written, not expanded again.
    return _KEYWORD.sub(lambda match: values[match.group(0)], text)


def render_subject(text: str, *, name: str | None, number: str | None) -> str:
    """A subject with keywords filled in, on one line whatever the registry's name holds (the line every email
    provider sends). Whatever else the name holds, "=?…?=" included, is text: the providers encode it as such."""
    return subject_line(render(text, name=name, number=number))
