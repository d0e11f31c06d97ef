"""Usage counts simulated recipients apart, on SQLite and PostgreSQL: the reference's figures (emails, SMS segments,
the successful ones) and the daily billing exports leave them out; the summary counts them in columns of their own
(usage_days.simulated_emails / simulated_sms, migration 0013), per channel. Orders are counted as ever."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx

from tests.conftest import NOW
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.orders.simulated import SIMULATED_EMAIL_ADDRESSES, SIMULATED_MOBILE_NUMBERS
from varsel.support.service import OrgUsage, UsageMonth

V1 = "/notifications/api/v1"
Auth = Callable[..., dict[str, str]]


async def _orders(client: httpx.AsyncClient, auth: Auth) -> None:
    emails = ["kari@example.com", *SIMULATED_EMAIL_ADDRESSES]
    body = {"subject": "S", "body": "B", "recipients": [{"emailAddress": a} for a in emails]}
    assert (await client.post(f"{V1}/orders/email", json=body, headers=auth())).status_code == 202
    numbers = ["+4799999999", *SIMULATED_MOBILE_NUMBERS]
    body = {"body": "B", "recipients": [{"mobileNumber": n} for n in numbers]}
    assert (await client.post(f"{V1}/orders/sms", json=body, headers=auth())).status_code == 202


async def test_the_monthly_summary_counts_simulated_recipients_apart(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    await _orders(client, auth)
    for _ in range(3):
        await varsel.workers.drain()
        clock.advance(timedelta(seconds=5))

    usage = await varsel.usage.monthly(UsageMonth(2026, 3))
    # Two orders; of each channel one real notification (delivered by the outbox), and four simulated ones.
    assert usage.orgs == (
        OrgUsage("ttd", orders=2, emails=1, successful_emails=1, sms=1, successful_sms=1, simulated_emails=4,
                 simulated_sms=4),
    )  # fmt: skip

    response = await client.get(f"{V1}/metrics/usage", params={"month": "3", "year": "2026"})
    assert response.status_code == 200, response.text
    [figures] = response.json()["metrics"]
    assert figures["emailNotificationsCreated"] == 1
    assert figures["smsNotificationsCreated"] == 1
    assert (figures["simulatedEmailNotifications"], figures["simulatedSmsNotifications"]) == (4, 4)
    csv = await client.get(f"{V1}/metrics/usage", params={"month": "3", "year": "2026", "format": "csv"})
    assert csv.text.splitlines()[1] == "ttd,2,1,1,1,1,4,4"


async def test_the_daily_exports_leave_simulated_recipients_out(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    await _orders(client, auth)
    for _ in range(3):
        await varsel.workers.drain()
        clock.advance(timedelta(seconds=5))
    # The real ones, delivered at once, and the delivered, bounced and transient simulated ones have their final
    # status of that day; the exports list the real ones only.
    day = NOW.date()
    assert [record.result for record in await varsel.usage.final_emails(day)] == ["Delivered"]
    assert [record.result for record in await varsel.usage.final_sms(day)] == ["Delivered"]
