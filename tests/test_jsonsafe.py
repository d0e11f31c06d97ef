"""The bounded JSON reader every parser of foreign input uses (#19)."""

from __future__ import annotations

import pytest

from varsel import jsonsafe


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 60_000,
        b"[" * 65 + b"]" * 65,
        b'{"a":' * 65 + b"1" + b"}" * 65,
        b"1" * 5_000,
        b"NaN",
        b'{"retry": Infinity}',
        b"-Infinity",
        b'"\\ud800"',
        b"\xff",
        b"",
        b"[1,]",
    ],
    ids=[
        "60000-brackets",
        "65-lists",
        "65-objects",
        "5000-digits",
        "nan",
        "infinity",
        "-infinity",
        "lone-surrogate",
        "bad-utf8",
        "empty",
        "trailing-comma",
    ],
)
def test_what_varsel_will_not_read_is_one_error(data: bytes) -> None:
    with pytest.raises(jsonsafe.UnreadableJson):
        jsonsafe.loads(data)


def test_documents_up_to_the_limit_are_read() -> None:
    depth = jsonsafe.MAX_DEPTH
    assert jsonsafe.loads(b"[" * depth + b"]" * depth) is not None
    assert jsonsafe.loads('{"name": "Kari Nordmann", "n": [1, 2.5, true, null]}') == {
        "name": "Kari Nordmann",
        "n": [1, 2.5, True, None],
    }
