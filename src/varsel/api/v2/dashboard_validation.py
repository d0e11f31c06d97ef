"""The support dashboard's request rules (reference 6.2): the identifier header, then `from` and `to`.

Two layers, as the reference: what its framework refuses first (a missing header, a value that is no date-time),
answered alone; then the rules, all together. Keys and messages are the reference's, exactly."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Request

from varsel.problems import ValidationProblem
from varsel.support.service import RecipientIdentifier, RecipientQuery

# Defaults and bounds of the time range: the last 7 days by default, nothing older than 10 years.
DEFAULT_DAYS = 7
MAX_YEARS = 10
_LONGEST_TIME = 64
# "+01:00" arrives as " 01:00" when the caller did not encode the "+" of the query string: read it as meant.
_UNENCODED_PLUS = re.compile(r"^(.*T.*\d) (\d{2}(?::?\d{2})?)$")

Errors = dict[str, list[str]]


@dataclass(frozen=True)
class IdentifierRule:
    header: str
    digits: int
    length_message: str
    kind: RecipientIdentifier


NATIONAL_IDENTITY_NUMBER = IdentifierRule(
    "NationalIdentityNumber",
    11,
    "National identity number must be 11 digits long.",
    RecipientIdentifier.NATIONAL_IDENTITY_NUMBER,
)
ORGANIZATION_NUMBER = IdentifierRule(
    "OrganizationNumber",
    9,
    "Organization number must be 9 digits long.",
    RecipientIdentifier.ORGANIZATION_NUMBER,
)


def _query(request: Request) -> dict[str, str]:
    """The query's parameters by lower-case name, as ASP.NET binds them (in any case; the first value of a name)."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        found.setdefault(name.lower(), value)
    return found


def _parse_time(raw: str) -> datetime | None:
    """The value as a date-time (naive when it has no zone), or None when it is none."""
    text = raw.strip()
    if not text or len(text) > _LONGEST_TIME:
        return None
    unencoded = _UNENCODED_PLUS.match(text)
    if unencoded:
        text = f"{unencoded.group(1)}+{unencoded.group(2)}"
    try:
        value = datetime.fromisoformat(text)
        # An offset that moves the time outside 0001-9999 cannot be held in UTC.
        return value if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _years_ago(now: datetime, years: int) -> datetime:
    try:
        return now.replace(year=now.year - years)
    except ValueError:  # 29 February: .NET's AddYears answers the 28th
        return now.replace(year=now.year - years, day=28)


def recipient_query(request: Request, rule: IdentifierRule, now: datetime, limit: int) -> RecipientQuery:
    """The look-up the request asks for, or a ValidationProblem naming every field that is wrong."""
    value = request.headers.get(rule.header)
    query = _query(request)
    raw_from, raw_to = query.get("from"), query.get("to")

    # Framework layer.
    errors: Errors = {}
    if value is None:
        errors[rule.header] = [f"A value for the '{rule.header}' parameter or property was not provided."]
    start = _parse_time(raw_from) if raw_from is not None else None
    end = _parse_time(raw_to) if raw_to is not None else None
    if raw_from is not None and start is None:
        errors["From"] = [f"The value '{raw_from}' is not valid for From."]
    if raw_to is not None and end is None:
        errors["To"] = [f"The value '{raw_to}' is not valid for To."]
    if errors:
        raise ValidationProblem(errors)
    assert value is not None

    # Rule layer: every rule, all reported together.
    if not value.strip():
        errors.setdefault(rule.header, []).append(f"'{rule.header}' is required and cannot be empty")
    elif not (len(value) == rule.digits and value.isascii() and value.isdigit()):
        errors.setdefault(rule.header, []).append(rule.length_message)

    default_from = now - timedelta(days=DEFAULT_DAYS)
    from_utc = start if start is not None and start.tzinfo is not None else None
    to_utc = end if end is not None and end.tzinfo is not None else None
    if start is not None and from_utc is None:
        errors.setdefault("From", []).append("The 'from' value must be UTC.")
    if end is not None and to_utc is None:
        errors.setdefault("To", []).append("The 'to' value must be UTC.")
    if from_utc is not None:
        if to_utc is not None and from_utc >= to_utc:
            errors.setdefault("From", []).append("'from' must be earlier than 'to'.")
        if from_utc > now:
            errors.setdefault("From", []).append("'from' must not be in the future.")
        if from_utc < _years_ago(now, MAX_YEARS):
            errors.setdefault("From", []).append("'from' must not be earlier than 10 years ago.")
    if to_utc is not None:
        if to_utc > now:
            errors.setdefault("To", []).append("'to' must not be in the future.")
        if start is None and to_utc <= default_from:
            errors.setdefault("To", []).append("'to' must be later than the default 'from' (7 days ago).")
    if errors:
        raise ValidationProblem(errors)
    return RecipientQuery(
        identifier=rule.kind,
        value=value,
        start=from_utc if from_utc is not None else default_from,
        end=to_utc if to_utc is not None else now,
        limit=limit,
    )
