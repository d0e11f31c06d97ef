"""The simulator: plays the simulated recipients (varsel.orders.simulated) where a provider would be called.

The senders hand a message for a simulated address or number to the simulator instead of the provider, whichever
provider is configured (outbox, SMTP, Azure Communication Services, LINK Mobility), and past the provider's guard:
no provider is called, so neither its rate limit, its concurrency cap nor its breaker is spent or moved by them.
Everything else is the pipeline's own: the order worker, generation, the sender's claim and lease, its outcome
write, retries, the send window for Daytime SMS, the expiry sweeper.

The delivery report a simulated outcome calls for is handed to the same delivery-report service that takes a real
provider's report requests (varsel.reports.service.DeliveryReports.receive), with the provider name "simulator", and
written there durably before the simulator answers the sender. At that moment the sender has not yet recorded the
hand-over, so the report is stored pending, exactly as a fast provider's report that overtakes our own write, and the
reports worker applies it on its next try (VARSEL_REPORTS__RETRY_SECONDS, 5 s by default) once the notification is
Succeeded / Accepted. A process that stops after the report is written loses nothing: the report waits in the
database, and a notification whose hand-over was never recorded is handed over again when its lease runs out (which
writes another report; the second to match is a duplicate). A process that stops before it is like a provider call
cut off: the lease brings the notification back. So a simulated report is never lost where a real one would not be.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

from varsel.clock import Clock
from varsel.notifications.statuses import EmailStatus, SmsStatus
from varsel.orders.simulated import SimulatedOutcome, simulated_email, simulated_number
from varsel.providers.base import Accepted, DeliveryReport, EmailMessage, SmsMessage, TransientProviderError
from varsel.providers.outbox import render_eml

SIMULATOR = "simulator"

# Stores and applies delivery reports as a provider's report request does: DeliveryReports.receive(channel,
# provider, reports).
ReportSink = Callable[[str, str, Sequence[DeliveryReport]], Awaitable[object]]

_EMAIL_REPORTS: dict[SimulatedOutcome, EmailStatus] = {
    SimulatedOutcome.DELIVERED: EmailStatus.DELIVERED,
    SimulatedOutcome.BOUNCED: EmailStatus.FAILED_BOUNCED,
    SimulatedOutcome.TRANSIENT: EmailStatus.DELIVERED,
}
_SMS_REPORTS: dict[SimulatedOutcome, SmsStatus] = {
    SimulatedOutcome.DELIVERED: SmsStatus.DELIVERED,
    SimulatedOutcome.BOUNCED: SmsStatus.FAILED_UNDELIVERED,
    SimulatedOutcome.TRANSIENT: SmsStatus.DELIVERED,
}


class Simulator:
    name = SIMULATOR

    def __init__(self, reports: ReportSink, clock: Clock) -> None:
        self._reports = reports
        self._clock = clock

    @staticmethod
    def simulates_email(address: str | None) -> bool:
        return simulated_email(address) is not None

    @staticmethod
    def simulates_sms(number: str | None) -> bool:
        return simulated_number(number) is not None

    async def send_email(self, message: EmailMessage, attempt: int) -> Accepted:
        """Take an email to a simulated address, on the notification's `attempt`th try (1 the first)."""
        outcome = simulated_email(message.to_address)
        if outcome is None:
            raise ValueError(f"{message.to_address!r} is no simulated address")
        # Written as the outbox writes a message, and discarded: an email no provider could be given (a body that
        # is no UTF-8) fails as it would at a real provider, with the same refusal.
        render_eml(message, self._clock.now())
        return await self._take("email", message.notification_id, outcome, attempt, _EMAIL_REPORTS.get(outcome))

    async def send_sms(self, message: SmsMessage, attempt: int) -> Accepted:
        """Take an SMS to a simulated number, on the notification's `attempt`th try (1 the first)."""
        outcome = simulated_number(message.to_number)
        if outcome is None:
            raise ValueError(f"{message.to_number!r} is no simulated number")
        return await self._take("sms", message.notification_id, outcome, attempt, _SMS_REPORTS.get(outcome))

    async def _take(
        self,
        channel: str,
        notification_id: UUID,
        outcome: SimulatedOutcome,
        attempt: int,
        report: EmailStatus | SmsStatus | None,
    ) -> Accepted:
        if outcome is SimulatedOutcome.TRANSIENT and attempt <= 1:
            raise TransientProviderError(f"{SIMULATOR}: a simulated transient failure (the first attempt only)")
        reference = f"{SIMULATOR}-{notification_id}"
        if report is not None:
            # Durable before the sender hears of the hand-over (see the module's docstring).
            await self._reports(
                channel,
                SIMULATOR,
                [
                    DeliveryReport(
                        notification_id=str(notification_id),
                        status=report,
                        provider_reference=reference,
                        detail=f"simulated recipient: {outcome.value}",
                        occurred=self._clock.now(),
                    )
                ],
            )
        return Accepted(reference=reference)
