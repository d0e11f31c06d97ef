"""Rules for the text of a message that every provider and both APIs share: what a subject line is, and what a mail
reader might take for an RFC 2047 encoded word."""

from __future__ import annotations

import re

# "=?charset?encoding?text?=" anywhere, roughly: what a lenient reader might try to decode.
_ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)


def subject_line(text: str) -> str:
    """The subject on one line: its lines joined by single spaces.

    Lines as ``str.splitlines`` finds them: CR, LF and CRLF, but also U+2028, U+2029, U+0085, VT, FF and
    U+001C-U+001E, which some mail software (and Python's email package) takes for line breaks. Every provider sends
    this same line.
    """
    return " ".join(text.splitlines())


def has_encoded_word(text: str) -> bool:
    """Whether text holds something a lenient reader may decode as an encoded word (``=?…?=``)."""
    return "=?" in text and _ENCODED_WORD.search(text) is not None
