"""What operators see of the pipeline: Prometheus metrics, and one structured log line per status transition.

Counters and histograms count what this process did (scrape every process; sum in Prometheus). The queue gauges
are read from the database at scrape time, so any one process shows the whole queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Transitions have a logger of their own so operators can route or silence them apart from everything else.
transitions_log = logging.getLogger("varsel.transitions")

# Provider calls and claims: from a millisecond on loopback to the 30 s provider timeout.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _logfmt(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class Telemetry:
    """The metrics of one varsel process, and the transition log that feeds its counters."""

    def __init__(self) -> None:
        # A registry per instance, not prometheus_client's global one: tests build many varsels in one process.
        self.registry = CollectorRegistry()
        self.orders_accepted = Counter(
            "varsel_orders_accepted",
            "Orders accepted with 202, by notification channel.",
            ["channel"],
            registry=self.registry,
        )
        self.intake_batch_size = Histogram(
            "varsel_intake_batch_orders",
            "Orders committed together in one intake transaction (group commit: more under load).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.transitions = Counter(
            "varsel_status_transitions",
            "Status transitions made by this process: entity is order, email or sms; status is the new status.",
            ["entity", "status"],
            registry=self.registry,
        )
        self.claim_seconds = Histogram(
            "varsel_claim_seconds",
            "Time to claim one batch of work (the claiming transaction).",
            ["work"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.outcome_group_size = Histogram(
            "varsel_outcome_group_size",
            "Send outcomes written together in one transaction, by channel (group commit: more under load).",
            ["channel"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.outcome_write_seconds = Histogram(
            "varsel_outcome_write_seconds",
            "Time to write one group of send outcomes (the recording transaction), by channel.",
            ["channel"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.provider_seconds = Histogram(
            "varsel_provider_call_seconds",
            "Time of one provider call, by channel, provider and outcome (accepted, transient, permanent, error).",
            ["channel", "provider", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "varsel_queue_depth",
            "Work due now and not yet finished: orders Registered or Processing, notifications New or Sending.",
            ["work"],
            registry=self.registry,
        )
        self.oldest_due_age = Gauge(
            "varsel_oldest_due_age_seconds",
            "How long the longest-waiting due item has been due (0 when nothing is due).",
            ["work"],
            registry=self.registry,
        )
        self.reports = Counter(
            "varsel_delivery_reports",
            "Delivery reports received or retried, by what became of them (applied, duplicate, late, superseded, "
            "pending, dead).",
            ["channel", "state"],
            registry=self.registry,
        )
        self.awaiting_report = Gauge(
            "varsel_notifications_awaiting_report",
            "Notifications handed to the provider and waiting for its delivery report (Succeeded / Accepted).",
            ["channel"],
            registry=self.registry,
        )

        self.webhook_attempts = Counter(
            "varsel_webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered: a 2xx answer; failed: anything else).",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_attempt_seconds = Histogram(
            "varsel_webhook_attempt_seconds",
            "Time of one webhook delivery attempt (address check, POST, answer), by outcome.",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def transition(self, entity: str, entity_id: UUID | str, old: str | None, new: str, **fields: object) -> None:
        """Log and count one status move of an order ("order") or a notification ("email", "sms")."""
        self.transitions.labels(entity, new).inc()
        if not transitions_log.isEnabledFor(logging.INFO):
            return
        extra = "".join(f" {key}={_logfmt(value)}" for key, value in fields.items() if value is not None)
        transitions_log.info(
            "transition entity=%s id=%s from=%s to=%s%s",
            entity,
            entity_id,
            old or "-",
            new,
            extra,
            extra={"entity": entity, "entity_id": str(entity_id), "from_status": old, "to_status": new, **fields},
        )

    def transitions_of(
        self, entity: str, ids: Iterable[UUID | str], old: str | None, new: str, **fields: object
    ) -> None:
        for entity_id in ids:
            self.transition(entity, entity_id, old, new, **fields)

    def set_queue(self, work: str, depth: int, oldest_due: datetime | None, now: datetime) -> None:
        self.queue_depth.labels(work).set(depth)
        age = 0.0 if oldest_due is None else max(0.0, (now - oldest_due).total_seconds())
        self.oldest_due_age.labels(work).set(age)

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))
