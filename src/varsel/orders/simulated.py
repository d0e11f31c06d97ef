"""Simulated recipients (issue #18): email addresses and mobile numbers that never reach a provider and end in an
outcome chosen by the address, so that a service owner can test an integration end to end without messaging anyone.

- delivered (`delivered@simulator.invalid`, `+447700900001`): accepted, then a delivery report, Delivered.
- bounced (`bounced@simulator.invalid`, `+447700900002`): accepted, then a report, Failed_Bounced (email) or
  Failed_Undelivered (SMS).
- transient (`transient@simulator.invalid`, `+447700900003`): the first attempt fails transiently and is retried as
  any transient failure is; the next is accepted, then reported Delivered.
- silent (`silent@simulator.invalid`, `+447700900004`): accepted and never reported, so Failed_TTL once it expires,
  as a notification whose report never comes.

`.invalid` is reserved (RFC 2606) and never resolves; +44 7700 900000-900999 is Ofcom's range reserved for drama.
So none of them can be anybody's address, and validation, which refuses both otherwise, accepts exactly these eight.
This module is the vocabulary only (no I/O): validation, the senders (varsel.providers.simulator plays the outcomes)
and usage counting (varsel.support) all read it.
"""

from __future__ import annotations

import re
from enum import StrEnum


class SimulatedOutcome(StrEnum):
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    TRANSIENT = "transient"
    SILENT = "silent"


SIMULATOR_DOMAIN = "simulator.invalid"

# As stored: validation writes them in exactly this form (lower case, E.164), so a stored address is simulated
# exactly when it is a key here, and SQL can match them with IN.
SIMULATED_EMAIL_ADDRESSES: dict[str, SimulatedOutcome] = {
    f"{outcome.value}@{SIMULATOR_DOMAIN}": outcome for outcome in SimulatedOutcome
}
SIMULATED_MOBILE_NUMBERS: dict[str, SimulatedOutcome] = {
    "+447700900001": SimulatedOutcome.DELIVERED,
    "+447700900002": SimulatedOutcome.BOUNCED,
    "+447700900003": SimulatedOutcome.TRANSIENT,
    "+447700900004": SimulatedOutcome.SILENT,
}

# What a mobile number may be written with around its digits (as normalize_mobile_number accepts it).
_NUMBER_SEPARATORS = re.compile(r"[ ()\-]")


def simulated_email(address: str | None) -> SimulatedOutcome | None:
    """The outcome of a stored (normalised) email address, or None for a real one."""
    return SIMULATED_EMAIL_ADDRESSES.get(address) if address else None


def simulated_number(number: str | None) -> SimulatedOutcome | None:
    """The outcome of a stored (E.164) mobile number, or None for a real one."""
    return SIMULATED_MOBILE_NUMBERS.get(number) if number else None


def simulated_email_address(address: str) -> str | None:
    """A simulated address as stored, for an address as written (already stripped): its case does not matter, as a
    domain's never does and these local parts are ours. None when it is not one of them."""
    lowered = address.lower()
    return lowered if lowered in SIMULATED_EMAIL_ADDRESSES else None


def simulated_mobile_number(number: str) -> str | None:
    """A simulated number as stored (E.164), for a number already stripped on the right and with 00 made +, as
    written with the separators normalize_mobile_number allows (+44 7700 900001). None when it is not one of them."""
    if not number.startswith("+"):
        return None  # a leading blank, say: refused as for any number
    compact = _NUMBER_SEPARATORS.sub("", number)
    return compact if compact in SIMULATED_MOBILE_NUMBERS else None
