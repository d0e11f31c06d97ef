"""External identities: recipients known by a URN rather than a national identity or organisation number.

Two kinds (reference 1.2, "Accepted external-identity URNs"):

- a self-identified user, named by `urn:altinn:person:legacy-selfidentified:{name}`, `urn:altinn:username:{name}` or
  `urn:altinn:party:username:{name}`: three spellings of one identity, whose canonical form is the last. Its contact
  details are in the registry (registry_external_identities, keyed by the canonical form);
- an ID-porten email identity, `urn:altinn:person:idporten-email:{email}`, which is its own email address.

The rules live here once, below both the API (which refuses an identity that is none of these with its own message)
and the registry import and look-up (which key and find users by the canonical form).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, unquote

from varsel.orders.addresses import normalize_email_address

USERNAME_PREFIX = "urn:altinn:party:username:"  # the canonical spelling of a self-identified user
IDPORTEN_EMAIL_PREFIX = "urn:altinn:person:idporten-email:"
# Matched case-sensitively, as the reference does; the longest first is not needed, as none is a prefix of another.
_USERNAME_PREFIXES = ("urn:altinn:person:legacy-selfidentified:", "urn:altinn:username:", USERNAME_PREFIX)

# As wide as the columns that hold an identity (order_recipients, notifications, registry_external_identities).
MAX_IDENTITY_LENGTH = 400

# What a URN's value may keep unencoded in the canonical form: RFC 3986's unreserved characters (quote's default),
# its sub-delimiters, ':' and '@' (RFC 8141's NSS); everything else is percent-encoded, in upper-case hex.
_URN_SAFE = "!$&'()*+,;=:@"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class ExternalIdentityKind(StrEnum):
    USERNAME = "username"  # a self-identified user, looked up in the registry
    IDPORTEN_EMAIL = "idporten-email"  # its own email address


@dataclass(frozen=True)
class ExternalIdentity:
    kind: ExternalIdentityKind
    # The user name, or the email address normalised as it will be sent to.
    value: str
    # The identity's one spelling: urn:altinn:party:username:{name} for every user-name URN, and the ID-porten email
    # URN with its address normalised; the value percent-encoded the same way whatever the spelling given.
    urn: str


def _decoded(encoded: str) -> str | None:
    """The URN value percent-decoded (UTF-8), or None when its escapes are not valid."""
    if _BAD_ESCAPE.search(encoded):
        return None
    try:
        return unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        return None


def _storable(value: str) -> bool:
    # A value that no database column can hold (NUL on PostgreSQL, lone surrogates) or that is never part of a name or
    # address (control characters, line and paragraph separators).
    return not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in value)


def parse_external_identity(urn: str) -> ExternalIdentity | None:
    """The identity a URN names, or None when it is not an accepted external identity URN.

    Accepted: the three user-name spellings with a name that is not blank, and the ID-porten email URN with an address
    that passes the email rules (normalize_email_address); the value after the prefix is percent-decoded before it is
    judged. Refused beyond the reference: invalid percent escapes, a value with control characters, and an identity
    whose canonical form is longer than MAX_IDENTITY_LENGTH (the columns that hold it).
    """
    if len(urn) > 4 * MAX_IDENTITY_LENGTH:  # cheap bound before any decoding: no accepted URN is this long
        return None
    if urn.startswith(IDPORTEN_EMAIL_PREFIX):
        raw = _decoded(urn[len(IDPORTEN_EMAIL_PREFIX) :])
        if raw is None or not _storable(raw):
            return None
        email = normalize_email_address(raw)
        if email is None:
            return None
        identity = ExternalIdentity(
            ExternalIdentityKind.IDPORTEN_EMAIL, email, IDPORTEN_EMAIL_PREFIX + quote(email, safe=_URN_SAFE)
        )
    else:
        prefix = next((p for p in _USERNAME_PREFIXES if urn.startswith(p)), None)
        if prefix is None:
            return None
        name = _decoded(urn[len(prefix) :])
        if name is None or not name.strip() or not _storable(name):
            return None
        identity = ExternalIdentity(ExternalIdentityKind.USERNAME, name, USERNAME_PREFIX + quote(name, safe=_URN_SAFE))
    return identity if len(identity.urn) <= MAX_IDENTITY_LENGTH else None


def canonical_external_identity(urn: str) -> str | None:
    """The canonical spelling of an accepted external identity URN, or None when it is not one."""
    identity = parse_external_identity(urn)
    return identity.urn if identity is not None else None


RESOURCE_URN_PREFIX = "urn:altinn:resource:"


def bare_resource_id(resource_id: str) -> str:
    """A resource id without the `urn:altinn:resource:` prefix, as authorisations are kept and as the reference asks
    its authorisation service: v2 requires the prefix, v1 takes the id with or without it."""
    return resource_id.removeprefix(RESOURCE_URN_PREFIX)
