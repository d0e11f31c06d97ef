"""External identity URNs (reference 1.2): which are accepted, and the one canonical spelling each has."""

from __future__ import annotations

import pytest

from varsel.recipients.identities import (
    ExternalIdentity,
    ExternalIdentityKind,
    canonical_external_identity,
    parse_external_identity,
)

USER = ExternalIdentityKind.USERNAME
EMAIL = ExternalIdentityKind.IDPORTEN_EMAIL


@pytest.mark.parametrize(
    ("urn", "expected"),
    [
        # The three spellings of a self-identified user are one identity, canonically party:username.
        ("urn:altinn:party:username:ola", ExternalIdentity(USER, "ola", "urn:altinn:party:username:ola")),
        ("urn:altinn:username:ola", ExternalIdentity(USER, "ola", "urn:altinn:party:username:ola")),
        ("urn:altinn:person:legacy-selfidentified:ola", ExternalIdentity(USER, "ola", "urn:altinn:party:username:ola")),
        # The value is percent-decoded, and encoded again one way whatever the spelling given.
        ("urn:altinn:username:ola%20n", ExternalIdentity(USER, "ola n", "urn:altinn:party:username:ola%20n")),
        ("urn:altinn:username:%C3%A6r%c3%b8", ExternalIdentity(USER, "ærø", "urn:altinn:party:username:%C3%A6r%C3%B8")),
        ("urn:altinn:party:username:ærø", ExternalIdentity(USER, "ærø", "urn:altinn:party:username:%C3%A6r%C3%B8")),
        ("urn:altinn:username:a%3Ab@c", ExternalIdentity(USER, "a:b@c", "urn:altinn:party:username:a:b@c")),
        ("urn:altinn:username:50%25", ExternalIdentity(USER, "50%", "urn:altinn:party:username:50%25")),
        # An ID-porten email identity is its own address, normalised as an order's address is.
        ("urn:altinn:person:idporten-email:kari@example.com",
         ExternalIdentity(EMAIL, "kari@example.com", "urn:altinn:person:idporten-email:kari@example.com")),
        ("urn:altinn:person:idporten-email:Kari%40Example.COM",
         ExternalIdentity(EMAIL, "Kari@example.com", "urn:altinn:person:idporten-email:Kari@example.com")),
    ],
)  # fmt: skip
def test_accepted_urns_and_their_canonical_form(urn: str, expected: ExternalIdentity) -> None:
    assert parse_external_identity(urn) == expected
    assert canonical_external_identity(urn) == expected.urn
    # The canonical form is itself accepted, and is its own canonical form.
    assert canonical_external_identity(expected.urn) == expected.urn


@pytest.mark.parametrize(
    "urn",
    [
        # The reference's rejected examples.
        "urn:altinn:username:",
        "urn:altinn:person:idporten-email:user@example",
        "urn:altinn:person:wrongprefix:ola",
        # Blank names, also once decoded.
        "urn:altinn:party:username:   ",
        "urn:altinn:person:legacy-selfidentified:%20%09",
        # Prefixes are case-sensitive, and nothing is trimmed.
        "URN:altinn:username:ola",
        "urn:Altinn:party:username:ola",
        "urn:altinn:person:IDPORTEN-EMAIL:kari@example.com",
        " urn:altinn:username:ola",
        # Neither kind, or no value at all.
        "",
        "ola",
        "urn:altinn:person:identifier-no:01017012345",
        "urn:altinn:party:username",
        "urn:altinn:person:idporten-email:",
        "urn:altinn:person:idporten-email:not an address",
        "urn:altinn:person:idporten-email:a@b.no;c@d.no",
        # Invalid escapes, and bytes that are not UTF-8.
        "urn:altinn:username:50%",
        "urn:altinn:username:%zz",
        "urn:altinn:username:%C3",
        # Characters no name or address holds (and PostgreSQL cannot store NUL).
        "urn:altinn:username:ola%00",
        "urn:altinn:username:ola\nnordmann",
        "urn:altinn:username:ola%E2%80%A8",
        "urn:altinn:username:\ud800",
        "urn:altinn:person:idporten-email:kari@example.com%0D%0ABcc:x@example.com",
        # Longer than the columns that hold an identity.
        "urn:altinn:username:" + "x" * 375,
        "urn:altinn:username:" + "%C3%A6" * 100,
    ],
)
def test_refused_urns(urn: str) -> None:
    assert parse_external_identity(urn) is None
    assert canonical_external_identity(urn) is None


def test_the_longest_accepted_name_fills_the_column() -> None:
    name = "x" * (400 - len("urn:altinn:party:username:"))
    assert canonical_external_identity(f"urn:altinn:username:{name}") == f"urn:altinn:party:username:{name}"
    assert canonical_external_identity(f"urn:altinn:username:{name}x") is None
