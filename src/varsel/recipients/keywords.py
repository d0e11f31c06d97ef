"""Keywords in templates: $recipientName$ and $recipientNumber$ (case-sensitive), rendered per recipient."""

from __future__ import annotations

import html

NAME = "$recipientName$"
NUMBER = "$recipientNumber$"


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
    return text.replace(NAME, shown_name).replace(NUMBER, number or "")
