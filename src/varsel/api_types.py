"""Building blocks for the JSON models of the API: camelCase names, lenient enums, strings safe to store."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer, model_validator
from pydantic.alias_generators import to_camel

E = TypeVar("E", bound=StrEnum)


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown properties are ignored, as the reference does.

    Property names match in any case, as ASP.NET's web defaults read them: Altinn's own clients post PascalCase
    bodies ("IdempotencyId", "NotificationChannel") and get them accepted.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    # The wire names (aliases), and each one's lower case to find it by; filled in per class.
    _wire_names: ClassVar[frozenset[str]] = frozenset()
    _by_lower_name: ClassVar[dict[str, str]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        names = {field.alias or name for name, field in cls.model_fields.items()}
        cls._wire_names = frozenset(names)
        cls._by_lower_name = {name.lower(): name for name in names}

    @model_validator(mode="before")
    @classmethod
    def _names_in_any_case(cls, data: Any) -> Any:
        # Nearly every body spells every name as declared: one set comparison, in C, and nothing else.
        if not isinstance(data, dict) or data.keys() <= cls._wire_names:
            return data
        spelled: dict[str, Any] = {}
        for key, value in data.items():
            name = cls._by_lower_name.get(key.lower(), key) if isinstance(key, str) else key
            # The name as declared wins over other spellings of it; among those, the last, as System.Text.Json.
            if key == name or name not in data:
                spelled[name] = value
        return spelled


def _safe_text(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and a NUL in an address or header is never legitimate: refuse it
    # here with a clear answer instead of failing at the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Every string the API accepts: NUL refused (lone surrogates and invalid UTF-8 are refused by the JSON parser).
Text = Annotated[str, AfterValidator(_safe_text)]


def lenient_enum(enum: type[E], numbers: Mapping[int, E] | None = None) -> BeforeValidator:
    """Accept enum values as .NET clients send them: by name in any case ("emailPreferred", "EMAILPREFERRED"), and by
    their integer values (`numbers`; by default the members in declaration order from 0), which the reference's
    integration tests send. Anything else is passed on, to be refused with the field's name."""
    by_lower = {member.value.lower(): member for member in enum}
    by_number = dict(numbers) if numbers is not None else dict(enumerate(enum))

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            return by_lower.get(value.strip().lower(), value)
        if isinstance(value, int) and not isinstance(value, bool):
            return by_number.get(value, value)
        return value

    return BeforeValidator(parse)


# What pydantic would read as seconds since 1970 when it comes as text: "2000000000", "-1", "1.5".
_LONGEST_TIME = 64
_NUMERIC_TEXT = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")


def _require_string(value: Any) -> Any:
    # A number would be read as a Unix timestamp, and so would a number written as a string; an Altinn client
    # always sends ISO 8601 text, so "2000000000" is a mistake to answer, not a time in 2033.
    if isinstance(value, datetime):
        return value
    # The length first: an ISO 8601 time is under 40 characters, and no pattern may be run on 2 MB of digits.
    if not isinstance(value, str) or len(value) > _LONGEST_TIME or _NUMERIC_TEXT.fullmatch(value):
        raise ValueError("must be a date and time in ISO 8601 format with a UTC offset")
    return value


def _utc_iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# A date and time read from a request; naivety is checked by the validators, which name the field.
RequestDateTime = Annotated[datetime, BeforeValidator(_require_string)]
# A date and time written in a response: UTC with a Z.
UtcTimestamp = Annotated[datetime, PlainSerializer(_utc_iso, return_type=str)]
