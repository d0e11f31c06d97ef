"""A composed email to a simulated recipient goes through the composed email's whole pipeline, on SQLite and
PostgreSQL: its attachments are fetched from the loopback HTTPS store when it is sent (a store's refusal fails it as
for anyone), then the simulator takes it, and the outbox gets nothing. The store, its TLS and the services are
tests/dispatch/test_attachments_pipeline.py's."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tests.conftest import NOW
from tests.dispatch import test_attachments_pipeline as attachments_pipeline
from tests.dispatch.test_attachments_pipeline import SAS, Make, both, notification, outbox
from tests.tls import HttpsStore
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.orders.drafts import AttachmentSpec, ChainDraft, EmailTemplateSpec, OrderDraft, RecipientSpec
from varsel.orders.vocabulary import EmailContentType, IdempotencyFamily, NotificationChannel, OrderType
from varsel.settings import Settings

# The attachment pipeline's fixtures: its TLS files, HTTPS store, settings allowing the store, and services.
tls = attachments_pipeline.tls
store = attachments_pipeline.store
settings = attachments_pipeline.settings
make = attachments_pipeline.make


async def _composed(varsel: Varsel, address: str, *attachments: tuple[str, str, str]) -> None:
    main = OrderDraft(
        channel=NotificationChannel.EMAIL,
        requested_send_time=NOW,
        recipients=(RecipientSpec(email_address=address),),
        email_template=EmailTemplateSpec("noreply@varsel.example.no", "Vedtak", "Se vedlegg.", EmailContentType.PLAIN),
        order_type=OrderType.COMPOSED,
        attachments=tuple(AttachmentSpec(name, mime_type, url) for name, mime_type, url in attachments),
    )
    await varsel.chains.register("ttd", ChainDraft(uuid.uuid4().hex, main), IdempotencyFamily.COMPOSED)


async def test_the_attachments_are_fetched_then_the_simulator_takes_the_email(
    make: Make, store: HttpsStore, settings: Settings, clock: FrozenClock
) -> None:
    varsel = make()
    await _composed(varsel, "delivered@simulator.invalid", *both(store))
    await varsel.workers.drain()
    assert sorted(path.split("?")[0] for path, _ in store.requests) == ["/files/tall.csv", "/files/vedtak.pdf"]
    row = await notification(varsel)
    assert (row.status, row.provider) == ("Succeeded", "simulator")
    clock.advance(timedelta(seconds=5))
    await varsel.workers.drain()
    assert (await notification(varsel)).status == "Delivered"
    assert outbox(settings) == []


async def test_an_attachment_the_store_refuses_fails_it_before_the_simulator(
    make: Make, store: HttpsStore, settings: Settings
) -> None:
    varsel = make()
    await _composed(varsel, "delivered@simulator.invalid", ("gone.pdf", "application/pdf", store.url(f"/files/x{SAS}")))
    await varsel.workers.drain()
    row = await notification(varsel)
    assert row.status == "Failed_InvalidSasUrl"
    assert outbox(settings) == []
