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


# Each CR, LF or CRLF in a subject as stored becomes one space, as the reference transforms it.
_STORED_NEWLINE = re.compile(r"\r\n|\r|\n")
# Text for people (subjects, bodies) may hold tabs and, in bodies, line breaks; any other control character (a BEL,
# an ESC from a terminal colour code, DEL, C1 codes from mis-decoded text) is a mistake that would otherwise surface
# later: raw in an email header, which strict mail servers refuse, or in an SMS, which gateways cannot encode.
_CONTROL_IN_SUBJECT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CONTROL_IN_BODY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_NUMERIC_SENDER = re.compile(r"^\+?[0-9]{1,15}$")
_ALPHANUMERIC_SENDER = re.compile(r"^[A-Za-z0-9ÆØÅæøå .\-]{1,11}$")


def stored_subject(text: str) -> str:
    """A subject as it is stored: its CR/LF line breaks as spaces (both APIs)."""
    return _STORED_NEWLINE.sub(" ", text)


def has_control_in_subject(text: str) -> bool:
    return _CONTROL_IN_SUBJECT.search(text) is not None


def has_control_in_body(text: str) -> bool:
    return _CONTROL_IN_BODY.search(text) is not None


def is_sms_sender(text: str) -> bool:
    """A sender SMS gateways take: a number of at most 15 digits, or a name of at most 11 characters."""
    return _NUMERIC_SENDER.match(text) is not None or _ALPHANUMERIC_SENDER.match(text) is not None
