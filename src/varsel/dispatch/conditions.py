"""Send conditions: asking the service owner's endpoint whether an order should still be sent.

The endpoint is named by the service owner, and varsel calls it from inside its own network, so it must not be a
way in: the host is resolved here, every address it resolves to must be public, and the request goes to that
checked address (so a second, different DNS answer cannot slip in). Redirects are followed by hand and checked
the same way (varsel.outbound, shared with the attachment fetcher). Hosts an operator allow-lists skip the address
check.

Every check reads the host as the resolver and httpx will (dns_name: UTS #46 and IDNA), at intake as here: written
with ideographic or full-width dots, ``metadata.google。internal`` is ``metadata.google.internal`` to both, so it is
judged as that, and a host that has no such reading is refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urljoin

import httpx

from varsel import jsonsafe
from varsel.outbound import OutboundGuard, RefusedAddress, Resolver

MAX_REDIRECTS = 3
MAX_ANSWER_BYTES = 64 * 1024


class ConditionResult(StrEnum):
    SEND = "send"
    DO_NOT_SEND = "do_not_send"
    FAILED = "failed"  # no usable answer: error, timeout, refused address, non-2xx, or a body without the flag


@dataclass(frozen=True)
class ConditionAnswer:
    result: ConditionResult
    detail: str = ""


class ConditionChecker:
    def __init__(
        self,
        client: httpx.AsyncClient,
        timeout: float,
        allowed_hosts: frozenset[str],
        resolver: Resolver | None = None,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._guard = OutboundGuard(allowed_hosts, resolver)

    async def check(self, url: str) -> ConditionAnswer:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._follow(url)
        except TimeoutError:
            return ConditionAnswer(ConditionResult.FAILED, f"no answer within {self._timeout} s")
        except RefusedAddress as error:
            return ConditionAnswer(ConditionResult.FAILED, str(error))
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            return ConditionAnswer(ConditionResult.FAILED, f"request failed: {error!r}")

    async def _follow(self, url: str) -> ConditionAnswer:
        for _ in range(MAX_REDIRECTS + 1):
            status, location, body = await self._get(url)
            if 300 <= status < 400 and location:
                url = urljoin(url, location)
                continue
            return _interpret(status, body)
        return ConditionAnswer(ConditionResult.FAILED, f"more than {MAX_REDIRECTS} redirects")

    async def _get(self, url: str) -> tuple[int, str | None, bytes]:
        """GET the URL at a checked address: its status, redirect location and (bounded) body."""
        target = await self._guard.target(url)
        headers = {**target.headers, "Accept": "application/json"}
        request = self._client.build_request("GET", target.url, headers=headers, extensions=target.extensions)
        response = await self._client.send(request, follow_redirects=False, stream=True)
        try:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    break  # an answer this large is not a condition answer; what was read decides
        finally:
            await response.aclose()
        return response.status_code, response.headers.get("location"), body[:MAX_ANSWER_BYTES]


def _interpret(status: int, body: bytes) -> ConditionAnswer:
    if not 200 <= status < 300:
        return ConditionAnswer(ConditionResult.FAILED, f"answered HTTP {status}")
    try:
        answer = jsonsafe.loads(body)
    except jsonsafe.UnreadableJson as error:
        # Inconclusive like any other bad body, however hostile: nested thousands of levels deep, say.
        return ConditionAnswer(ConditionResult.FAILED, f"answer is not JSON varsel reads: {str(error)[:200]}")
    flag = answer.get("sendNotification") if isinstance(answer, dict) else None
    if flag is True:
        return ConditionAnswer(ConditionResult.SEND)
    if flag is False:
        return ConditionAnswer(ConditionResult.DO_NOT_SEND)
    return ConditionAnswer(ConditionResult.FAILED, 'answer lacks a boolean "sendNotification"')
