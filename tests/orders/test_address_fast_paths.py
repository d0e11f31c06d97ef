"""The fast paths of address normalisation answer exactly what the general parsers answer.

normalize_email_address and normalize_mobile_number take common addresses without email-validator and
libphonenumber; these tests hold them to the general parsers' answers on generated input, shaped to hit the fast
paths and their edges (case, hyphens, dots, special-use and numeric top-level domains, lengths, 00 prefixes).
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from varsel.orders.addresses import (
    email_by_validator,
    mobile_by_libphonenumber,
    normalize_email_address,
    normalize_mobile_number,
)


def general_email(raw: str) -> str | None:
    return email_by_validator(raw.strip())


def general_mobile(raw: str) -> str | None:
    # Only trailing blanks are trimmed: a number must start with + or 00, as the reference has it.
    value = raw.rstrip()
    return mobile_by_libphonenumber("+" + value[2:] if value.startswith("00") else value)


_LOCAL_CHARACTERS = st.sampled_from([*"abcXYZ019._+-!#%'~é \"", "..", "\x00"])
_LABEL_CHARACTERS = st.sampled_from([*"abcXYZ019-_.é", "--", "xn--"])
_TLDS = st.sampled_from(["no", "com", "NO", "Org", "test", "local", "onion", "arpa", "invalid", "x", "c0m", "123",
                         "localhost", "museum", "a" * 63, "a" * 64])  # fmt: skip


# Role mailboxes (RFC 2142), which email-validator lowers, in the cases people write them.
_ROLE_MAILBOXES = st.sampled_from(["info", "Info", "SUPPORT", "Postmaster", "webMaster", "www", "noc", "infos"])


@st.composite
def addresses(draw: st.DrawFn) -> str:
    local = draw(st.one_of(_ROLE_MAILBOXES, st.lists(_LOCAL_CHARACTERS, min_size=0, max_size=70).map("".join)))
    labels = [
        "".join(draw(st.lists(_LABEL_CHARACTERS, min_size=0, max_size=64)))
        for _ in range(draw(st.integers(min_value=0, max_value=3)))
    ]
    domain = ".".join([*labels, draw(_TLDS)])
    space = draw(st.sampled_from(["", " ", "\t"]))
    return f"{space}{local}@{domain}{space}"


@settings(max_examples=3000, deadline=None)
@given(addresses())
@example("ola.nordmann@example.com")
@example("Ola.Nordmann+varsel@Example.COM")
@example("Support@Firma.no")
@example("INFO@example.com")
@example("ola@sub-domain.example.no")
@example("ola@ex--ample.no")
@example("ola@xn--bcher-kva.example")
@example("ola@host.test")
@example("ola@host.123")
@example("ola@-host.no")
@example("ola@host-.no")
@example(".ola@host.no")
@example("ola.@host.no")
@example("o..la@host.no")
@example("a" * 64 + "@host.no")
@example("a" * 65 + "@host.no")
@example("ola@" + "a" * 63 + ".no")
@example("ola@" + "a" * 64 + ".no")
@example("ola@" + ".".join(["a" * 60] * 4) + ".no")
def test_an_email_address_is_normalised_as_email_validator_normalises_it(raw: str) -> None:
    assert normalize_email_address(raw) == general_email(raw)


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from(["", " ", "+", "00", "0047", "+47", "+46", "+1", "+4704", "47"]),
    st.text(alphabet="0123456789 -()", max_size=12),
    st.sampled_from(["", " ", "\n"]),
)
@example("+47", "91234567", "")
@example("+47", "41234567", " ")
@example("0047", "91234567", "")
@example("+47", "81234567", "")
@example("+47", "9123456", "")
@example("+47", "912345678", "")
@example("+47", "09123456", "")
@example("+46", "701234567", "")
def test_a_mobile_number_is_normalised_as_libphonenumber_reads_it(prefix: str, digits: str, space: str) -> None:
    raw = f"{space}{prefix}{digits}{space}"
    assert normalize_mobile_number(raw) == general_mobile(raw)


def test_the_fast_paths_answer_the_common_addresses() -> None:
    # Answers worked out by hand, whichever path gives them.
    assert normalize_email_address(" Ola.Nordmann@Example.COM ") == "Ola.Nordmann@example.com"
    assert normalize_email_address("ola@host.test") is None
    assert normalize_email_address("Support@Firma.no") == "support@firma.no"
    assert normalize_mobile_number("004791234567") == "+4791234567"
    assert normalize_mobile_number("+4781234567") is None
