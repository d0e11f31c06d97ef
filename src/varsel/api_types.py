"""Building blocks for the JSON models of the API: camelCase names, lenient enums, strings safe to store."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer
from pydantic.alias_generators import to_camel

E = TypeVar("E", bound=StrEnum)


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown properties are ignored, as the reference does."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


def _safe_text(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and a NUL in an address or header is never legitimate: refuse it
    # here with a clear answer instead of failing at the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Every string the API accepts: NUL refused (lone surrogates and invalid UTF-8 are refused by the JSON parser).
Text = Annotated[str, AfterValidator(_safe_text)]


def lenient_enum(enum: type[E]) -> BeforeValidator:
    """Accept enum values case-insensitively ("emailPreferred" as well as "EmailPreferred")."""
    by_lower = {member.value.lower(): member for member in enum}

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            return by_lower.get(value.strip().lower(), value)
        return value

    return BeforeValidator(parse)


# What pydantic would read as seconds since 1970 when it comes as text: "2000000000", "-1", "1.5".
_NUMERIC_TEXT = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")


def _require_string(value: Any) -> Any:
    # A number would be read as a Unix timestamp, and so would a number written as a string; an Altinn client
    # always sends ISO 8601 text, so "2000000000" is a mistake to answer, not a time in 2033.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _NUMERIC_TEXT.fullmatch(value):
        raise ValueError("must be a date and time in ISO 8601 format with a UTC offset")
    return value


def _utc_iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# A date and time read from a request; naivety is checked by the validators, which name the field.
RequestDateTime = Annotated[datetime, BeforeValidator(_require_string)]
# A date and time written in a response: UTC with a Z.
UtcTimestamp = Annotated[datetime, PlainSerializer(_utc_iso, return_type=str)]
