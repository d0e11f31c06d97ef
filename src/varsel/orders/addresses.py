"""Addresses and endpoints as the domain accepts them: email addresses and mobile numbers normalised (or refused),
and condition endpoints judged. Both API dialects validate with these and word the refusals their own way; the
recipient look-ups check registry addresses with them too."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from varsel.hostnames import dns_name, is_public_name
from varsel.orders.simulated import simulated_email_address, simulated_mobile_number
from varsel.orders.text import has_encoded_word

_PHONE_CHARACTERS = re.compile(r"^\+[0-9 ()\-]+$")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# The common cases, answered without the general parsers (libphonenumber, email-validator), which cost 10-25 µs a
# call: every order by address checks its addresses, and every look-up checks what the registry holds. Each fast
# path accepts only what the general one accepts unchanged, or changed exactly as it would change it (a test
# compares the two on generated input); anything else goes the general way.
_NORWEGIAN_E164_MOBILE = re.compile(r"\+47[49][0-9]{7}")
_PLAIN_EMAIL = re.compile(
    r"(?P<local>[A-Za-z0-9_+\-]+(?:\.[A-Za-z0-9_+\-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+(?P<tld>[A-Za-z]{2,63}))"
)
_SPECIAL_USE_TLDS = frozenset(SPECIAL_USE_DOMAIN_NAMES)
_ROLE_MAILBOXES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


# A refused mobile number of digits alone, not starting 00, was written without its country code (99999999,
# 999 99 999, 4799999999).
_NATIONAL_DIGITS = re.compile(r"(?!00)[0-9][0-9 ]*")
MOBILE_COUNTRY_CODE_HINT = (
    "a mobile number must start with its country code, + or 00 and the code: +47 or 0047 for a Norwegian number "
    "(+4799999999, not 99999999)."
)


def mobile_number_hint(raw: str) -> str | None:
    """What to do about a refused mobile number, when it is clear: one of digits alone lacks its country code."""
    return MOBILE_COUNTRY_CODE_HINT if _NATIONAL_DIGITS.fullmatch(raw.strip()) else None


def normalize_mobile_number(raw: str) -> str | None:
    """A mobile number in E.164 form, or None when it is not one varsel can send to.

    It must carry a country code (+ or 00); Norwegian numbers must be mobiles (8 digits starting 4 or 9);
    other numbers must be valid by libphonenumber. Trailing blanks are trimmed, leading ones are not, as the
    reference does: a number must start with + or 00, and " +4799999999" does not. The four simulated numbers
    (varsel.orders.simulated), in a range libphonenumber does not count as valid, are accepted too.
    """
    value = raw.rstrip()
    if value.startswith("00"):
        value = "+" + value[2:]
    if _NORWEGIAN_E164_MOBILE.fullmatch(value):
        return value
    if (simulated := simulated_mobile_number(value)) is not None:
        return simulated
    return mobile_by_libphonenumber(value)


def mobile_by_libphonenumber(value: str) -> str | None:
    """normalize_mobile_number's general way, for a number already stripped and with 00 made +."""
    if not _PHONE_CHARACTERS.match(value):
        return None
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return None
    national = str(number.national_number)
    if number.country_code == 47:
        if len(national) != 8 or national[0] not in "49" or number.italian_leading_zero:
            return None
        return f"+47{national}"
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalize_email_address(raw: str) -> str | None:
    """The address as it will be stored and sent to, or None when its syntax is invalid (no DNS look-up). The four
    simulated recipients (varsel.orders.simulated) are accepted though their domain is special-use (.invalid)."""
    address = raw.strip()
    if (simulated := simulated_email_address(address)) is not None:
        return simulated
    plain = _PLAIN_EMAIL.fullmatch(address)
    if (
        plain is not None
        and len(address) <= 200
        and len(plain["local"]) <= 64  # RFC 5321's limit; longer ones are left to email-validator to judge
        and "--" not in plain["domain"]  # hyphens in the third and fourth place follow IDNA's rules
        and plain["tld"].lower() not in _SPECIAL_USE_TLDS
        # Role mailboxes (RFC 2142: info, support, postmaster, …) are case-insensitive: email-validator lowers them
        and plain["local"].lower() not in _ROLE_MAILBOXES
    ):
        # What email-validator answers for such an address: the local part as written, the domain in lower case.
        return f"{plain['local']}@{plain['domain'].lower()}"
    return email_by_validator(address)


def normalize_sender_address(raw: str) -> str | None:
    """A sender's (From) address as normalize_email_address has it, but never a simulated recipient's: those are
    accepted only as recipients, and a From address goes to the real provider with every real recipient's message."""
    normalized = normalize_email_address(raw)
    return None if normalized is not None and simulated_email_address(normalized) else normalized


def email_by_validator(address: str) -> str | None:
    """normalize_email_address's general way, for an address already stripped."""
    try:
        normalized: str = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None
    # "=?utf-8?q?a=0D=0ABcc=3A_x=40evil.example?=" is a valid local part, but mail readers decode such encoded words
    # although RFC 2047 forbids them in addresses: into another address, or into line breaks and headers of their own.
    # No provider sends to or from one (providers.mime), so none is accepted.
    return None if has_encoded_word(normalized.rpartition("@")[0]) else normalized


# The caller cannot change this, but can ask whoever runs varsel to: condition services on internal names or
# addresses (and tests on loopback) are allowed host by host.
_ALLOWED_HOSTS_HINT = " (unless the operator of this service lists the host in VARSEL_CONDITIONS__ALLOWED_HOSTS)"


def condition_endpoint_problem(url: str, allowed_hosts: frozenset[str]) -> str | None:
    """Why a condition endpoint is refused, or None. Only public DNS names: varsel calls it from inside."""
    # urlsplit silently drops tabs and line breaks, so the host checked here would not be the host called later
    # (and httpx refuses such a URL outright): a control character anywhere makes the URL invalid.
    if _CONTROL_CHARACTERS.search(url):
        return "The condition endpoint must be a valid URL."
    try:
        parts = urlsplit(url)
        written = parts.hostname or ""
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        return "The condition endpoint must be a valid URL."
    if parts.scheme.lower() not in ("http", "https") or not written.rstrip("."):
        return "The condition endpoint must be a valid absolute http or https URL."
    try:
        # Judged as the resolver and httpx will read it (the dispatcher reads it so too): `printer.local` written
        # with a full-width dot (U+FF0E) is `printer.local`.
        host = dns_name(written)
    except ValueError as error:
        return f"The condition endpoint's host cannot be read as a DNS name: {error}."
    if host in allowed_hosts:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return f"The condition endpoint must name its host by a DNS name, not an IP address{_ALLOWED_HOSTS_HINT}."
    if not is_public_name(host):
        return f"The condition endpoint's host must be a public DNS name with a top-level domain{_ALLOWED_HOSTS_HINT}."
    return None
