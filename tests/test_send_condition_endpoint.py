"""GET /tests/sendcondition (#15, reference 8): a send condition for test orders to point at."""

from __future__ import annotations

import httpx
import pytest

PATH = "/notifications/api/v1/tests/sendcondition"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?conditionMet=true", True),
        ("?conditionMet=True", True),
        ("?conditionmet=TRUE", True),  # names and values in any case, as ASP.NET binds them
        ("?other=true", False),
        ("?conditionMet=false", False),
        ("?conditionMet=yes", False),
        ("", False),
    ],
)
async def test_the_condition_is_what_the_query_says(client: httpx.AsyncClient, query: str, expected: bool) -> None:
    answer = await client.get(PATH + query)  # no token: it is anonymous
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"sendNotification": expected}


async def test_a_non_json_content_type_is_415(client: httpx.AsyncClient) -> None:
    answer = await client.get(PATH + "?conditionMet=true", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 415
    assert answer.headers["content-type"] == "application/problem+json"
    ok = await client.get(PATH + "?conditionMet=true", headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.json() == {"sendNotification": True}
