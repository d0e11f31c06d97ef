"""A simulated bounce looks to receipt-driven fallback exactly as a real one (issue #18 items 4 and 5), on SQLite and
PostgreSQL: a person whose registry email is bounced@simulator.invalid and mobile number +447700900001, an
EmailPreferred v1 order asking for fallback, the workers driven with a frozen clock and the development outbox. The
email bounces by its simulated report, the SMS goes to the simulated number and is delivered, once; the outbox (the
configured provider) gets neither."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import select

from tests.recipients.registry_data import load
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.tables import email_notifications, sms_notifications
from varsel.settings import Settings

Auth = Callable[..., dict[str, str]]
NIN = "01017012345"


async def test_a_simulated_bounce_sends_the_sms_to_the_simulated_number_once(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings
) -> None:
    person = {
        "kind": "person",
        "nationalIdentityNumber": NIN,
        "name": "Ola Nordmann",
        "emailAddress": "bounced@simulator.invalid",
        "mobileNumber": "+447700900001",
        "isReserved": False,
    }
    assert (await load(varsel.database, clock, [person])).rejected == []
    body = {
        "notificationChannel": "EmailPreferred",
        "recipients": [{"nationalIdentityNumber": NIN}],
        "emailTemplate": {"subject": "Saken din", "body": "Hei"},
        "smsTemplate": {"body": "Saken din har nytt"},
        "fallbackAfterMinutes": 60,
    }
    response = await client.post("/notifications/api/v1/orders", json=body, headers=auth())
    assert response.status_code == 202, response.text

    for _ in range(4):  # the email and its report; the fallback SMS and its report, 5 s apart
        await varsel.workers.drain()
        clock.advance(timedelta(seconds=5))

    async with varsel.database.read() as conn:
        emails = (await conn.execute(select(email_notifications))).all()
        texts = (await conn.execute(select(sms_notifications))).all()
    assert [(e.email_address, e.status, e.provider) for e in emails] == [
        ("bounced@simulator.invalid", "Failed_Bounced", "simulator")
    ]
    assert [(s.mobile_number, s.status, s.provider, s.fallback_of) for s in texts] == [
        ("+447700900001", "Delivered", "simulator", emails[0].id)
    ]
    outbox = Path(settings.data_dir) / "outbox"
    assert not outbox.exists() or not any(path.is_file() for path in outbox.rglob("*"))
