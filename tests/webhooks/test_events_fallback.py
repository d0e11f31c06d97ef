"""Webhook events of receipt-driven fallback (issue #18 items 2 and 4), on SQLite and PostgreSQL: the second
notification's events say which notification it follows and why (fallbackFor, as the manifest says it), from its
creation on, and the order's end carries both notifications as GET /future/shipment/{id} answers them.

The pipeline is the fallback tests' own (tests/fallback/test_fallback_pipeline.py): a registry with both addresses,
Azure Communication Services and LINK Mobility peers on loopback, reports posted in each provider's format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.fallback import test_fallback_pipeline as fallback_tests
from tests.fallback.test_fallback_pipeline import BOTH, DELIVERED, FUTURE, OLA_EMAIL, OLA_MOBILE, _sent_first
from tests.webhooks.test_events import events_of, steps, subscribe
from varsel.db.engine import Database
from varsel.webhooks.events import NOTIFICATION_STATUS_CHANGED, ORDER_COMPLETED

# The fallback pipeline's fixtures, used here as they are.
settings = fallback_tests.settings
make_pipeline = fallback_tests.make_pipeline


async def test_a_fallback_notification_tells_what_it_follows_from_its_creation_on(
    make_pipeline: Callable[..., Any], database: Database
) -> None:
    async with make_pipeline(enabled=True, window_minutes=30) as p:
        subscription = await subscribe(database)
        order_id = await p.v1_order("EmailPreferred", BOTH)
        email = await _sent_first(p, order_id, "email")
        p.advance(30)
        await p.drain()
        _, sms = await p.notifications(order_id)
        # The email's report comes after all, late (it changes nothing more), then the SMS's.
        await p.report_email(email, "Delivered")
        await p.report_sms(sms, DELIVERED)

        events = await events_of(database, subscription)
        told = steps(events)
        assert told[email.id] == [
            (None, "Email_New"),
            ("Email_New", "Email_Sending"),
            ("Email_Sending", "Email_Succeeded"),
            ("Email_Succeeded", "Email_Delivered"),
        ]
        assert told[sms.id] == [
            (None, "SMS_New"),
            ("SMS_New", "SMS_Sending"),
            ("SMS_Sending", "SMS_Accepted"),
            ("SMS_Accepted", "SMS_Delivered"),
        ]
        first = {"notificationId": email.id, "type": "Email", "reason": "NoDeliveryReport"}
        of_sms = [
            e.data for e in events if e.kind == NOTIFICATION_STATUS_CHANGED and e.data["notificationId"] == sms.id
        ]
        assert {d["destination"] for d in of_sms} == {OLA_MOBILE}
        assert all(d["fallbackFor"] == first and d["nationalIdentityNumber"] == BOTH for d in of_sms)
        of_email = [
            e.data for e in events if e.kind == NOTIFICATION_STATUS_CHANGED and e.data["notificationId"] == email.id
        ]
        assert {d["destination"] for d in of_email} == {OLA_EMAIL}
        assert not any("fallbackFor" in d for d in of_email)

        assert events[-1].kind == ORDER_COMPLETED
        manifest = (await p.client.get(f"{FUTURE}/shipment/{order_id}", headers=p.auth())).json()
        assert events[-1].data == manifest
        assert manifest["recipients"][1]["fallbackFor"] == first
