"""Order use cases. Each method owns its one transaction; no network I/O happens while it is open."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, sms_notifications
from varsel.ids import new_id
from varsel.notifications import repository as notification_repository
from varsel.notifications.repository import ChannelCounts, NotificationRow
from varsel.notifications.statuses import OrderStatus
from varsel.observability import Telemetry
from varsel.orders import repository
from varsel.orders.drafts import OrderDraft
from varsel.orders.intake import OrderWriter
from varsel.orders.repository import StoredOrder
from varsel.problems import Problem
from varsel.recipients.lookup import LookupResult, LookupSummary, Medium, RecipientLookup
from varsel.shipments import repository as feed_repository

# An order can be cancelled only while its send time is further away than this: closer to it, a worker may
# already be preparing it.
CANCEL_MARGIN_MINUTES = 5


class OrderNotFound(Problem):
    def __init__(self) -> None:
        super().__init__(404, "Order not found", "No order with that id exists for this service owner.")


class OrderNotCancellable(Problem):
    def __init__(self, status: OrderStatus) -> None:
        super().__init__(
            409,
            "The order can no longer be cancelled",
            f"The order is {status.value}. An order can be cancelled only while it is Registered and its requested "
            f"send time is more than {CANCEL_MARGIN_MINUTES} minutes away.",
            code="VARSEL-ORDER-NOT-CANCELLABLE",
        )


@dataclass(frozen=True)
class OrderStatusView:
    order: StoredOrder
    email: ChannelCounts
    sms: ChannelCounts


class OrderService:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        lookup: RecipientLookup,
        telemetry: Telemetry,
        on_registered: Callable[[], None] = lambda: None,
        wake_within: float = 2.0,
    ) -> None:
        self._db = database
        # Orders arriving together are committed together (see varsel.orders.intake).
        self._writer = OrderWriter(database, on_batch=telemetry.intake_batch_size.observe)
        self._clock = clock
        self._lookup = lookup
        self._telemetry = telemetry
        self._on_registered = on_registered
        # Orders due sooner than the workers' longest sleep wake them; later ones are found by their next poll.
        self._wake_within = timedelta(seconds=wake_within)

    async def look_up(self, draft: OrderDraft) -> LookupResult:
        return await self._lookup.resolve(
            draft.recipients,
            draft.channel,
            ignore_reservation=bool(draft.ignore_reservation),
            resource_id=draft.resource_id,
            resource_action=draft.resource_action,
            use_stale_contact_information=draft.use_stale_contact_information,
        )

    async def register(self, creator: str, draft: OrderDraft) -> tuple[UUID, LookupSummary | None]:
        """Store the order; answer its id and what the registries say of its recipients now.

        The look-up happens before the transaction opens (a registry may be remote). It only informs the caller:
        recipients are looked up again at send time, and an order is accepted even if nobody can be reached yet.
        """
        lookup = await self.look_up(draft)
        order_id = new_id()
        now = self._clock.now()
        due_soon = draft.requested_send_time <= now + self._wake_within
        await self._writer.write(
            repository.order_row(order_id, creator, draft, now),
            repository.recipient_rows(order_id, draft),
            due_soon=due_soon,
        )
        self._telemetry.orders_accepted.labels(draft.channel.value).inc()
        self._telemetry.transition("order", order_id, None, OrderStatus.REGISTERED.value, creator=creator)
        if due_soon:
            self._on_registered()  # committed and due: wake this process's order worker rather than let it poll
        return order_id, lookup.summary()

    async def get(self, creator: str, order_id: UUID) -> StoredOrder:
        async with self._db.read() as conn:
            order = await repository.get_order(conn, order_id, creator)
        if order is None:
            raise OrderNotFound()
        return order

    async def find(self, creator: str, senders_reference: str, limit: int) -> list[StoredOrder]:
        async with self._db.read() as conn:
            return await repository.find_orders(conn, creator, senders_reference, limit)

    async def status(self, creator: str, order_id: UUID) -> OrderStatusView:
        async with self._db.read() as conn:
            order = await repository.get_order(conn, order_id, creator, with_recipients=False)
            if order is None:
                raise OrderNotFound()
            email, sms = await notification_repository.channel_counts(conn, order_id)
        return OrderStatusView(order, email, sms)

    async def cancel(self, creator: str, order_id: UUID) -> OrderStatusView:
        now = self._clock.now()
        async with self._db.transaction() as conn:
            cancelled = await repository.cancel_order(
                conn, order_id, creator, now, now + timedelta(minutes=CANCEL_MARGIN_MINUTES)
            )
            order = await repository.get_order(conn, order_id, creator, with_recipients=False)
            if order is None:
                raise OrderNotFound()
            if not cancelled and order.status is not OrderStatus.CANCELLED:
                raise OrderNotCancellable(order.status)
            email, sms = await notification_repository.channel_counts(conn, order_id)
            if cancelled:
                # Unlike the reference, a cancelled order has its status feed entry (Order_Cancelled). Last: the
                # feed's lock is held until commit.
                await feed_repository.write_feed_entries(conn, [order_id], now)
        if cancelled:
            self._telemetry.transition("order", order_id, OrderStatus.REGISTERED.value, OrderStatus.CANCELLED.value)
        return OrderStatusView(order, email, sms)

    async def notifications(
        self, creator: str, order_id: UUID, channel: str
    ) -> tuple[StoredOrder, list[NotificationRow]]:
        async with self._db.read() as conn:
            order = await repository.get_order(conn, order_id, creator, with_recipients=False)
            if order is None:
                raise OrderNotFound()
            table = email_notifications if channel is Medium.EMAIL else sms_notifications
            rows = await notification_repository.notifications_of(conn, table, order_id)
        return order, rows
