"""Reading JSON that others send: providers' answers and delivery reports, condition answers, registry records.

Python's own reader recurses once per level of nesting and so raises RecursionError on a body a few thousand
levels deep, and refuses integers of more than 4,300 digits with a ValueError that is no JSONDecodeError: neither
is what its callers catch. This reader (pydantic-core's, which stops at 200 levels without recursing in Python)
refuses both, and anything nested deeper than any document varsel reads, with the one error UnreadableJson.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import from_json

# Deeper than any document varsel reads (a delivery report or a provider's answer is four or five levels deep).
MAX_DEPTH = 64


class UnreadableJson(ValueError):
    """Not JSON, nested deeper than MAX_DEPTH, or holding a number Python refuses; str() says which and where."""


def loads(data: bytes | str) -> Any:
    """The JSON document in `data`; UnreadableJson when there is none varsel will read."""
    try:
        # Text as UTF-8 first: a str with a lone surrogate is refused here as bytes with one are by the reader.
        document = from_json(data.encode("utf-8") if isinstance(data, str) else data, allow_inf_nan=False)
    except ValueError as error:
        raise UnreadableJson(str(error)) from None
    _check_depth(document)
    return document


def _check_depth(document: Any) -> None:
    # Level by level, not recursively: the check must not itself be what a deep document breaks.
    level = [document] if isinstance(document, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise UnreadableJson(f"nested deeper than {MAX_DEPTH} levels")
        inner: list[Any] = []
        for container in level:
            values = container.values() if isinstance(container, dict) else container
            inner.extend(value for value in values if isinstance(value, dict | list))
        level = inner
