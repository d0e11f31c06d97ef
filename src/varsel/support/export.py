"""Usage as files: the daily Parquet exports (reference 7's columns and types) and the monthly summary as CSV.

pyarrow is imported when a file is written, not when varsel starts: it takes a noticeable part of a second to load
and most processes (workers, the CLI) never write one."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from varsel.support.service import EmailUsageRecord, MonthlyUsage, SmsUsageRecord

# The monthly summary's columns, as the reference's HTML table heads them.
USAGE_COLUMNS = (
    "Organization",
    "Total orders",
    "Total email notifications",
    "Successful email notifications",
    "Total SMS notifications",
    "Successful SMS notifications",
    # varsel's: notifications to simulated recipients, which the columns before leave out (issue #18).
    "Simulated email notifications",
    "Simulated SMS notifications",
)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def usage_rows(usage: MonthlyUsage) -> list[tuple[str, int, int, int, int, int, int, int]]:
    return [
        (o.org, o.orders, o.emails, o.successful_emails, o.sms, o.successful_sms, o.simulated_emails, o.simulated_sms)
        for o in usage.orgs
    ]


def usage_csv(usage: MonthlyUsage) -> str:
    """The summary as CSV (a header row, one row per service owner), as Excel and every spreadsheet open it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(USAGE_COLUMNS)
    for row in usage_rows(usage):
        # A name a spreadsheet would read as a formula (=, +, -, @) is written as text.
        org = f"'{row[0]}" if row[0][:1] in ("=", "+", "-", "@") else row[0]
        writer.writerow((org, *row[1:]))
    return out.getvalue()


def _parquet(columns: dict[str, tuple[Any, list[Any]]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field(name, kind, nullable=(name == "ResourceId")) for name, (kind, _) in columns.items()])
    table = pa.Table.from_arrays(
        [pa.array(values, type=kind) for kind, values in columns.values()],
        schema=schema,
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def sms_parquet(records: Sequence[SmsUsageRecord]) -> bytes:
    """Columns SmsId … AltinnSmsCustomBodyLength. SmsId is varsel's notification id, a UUID written as text: varsel has
    no numeric notification id (the reference's is its database's long)."""
    import pyarrow as pa

    text, integer = pa.string(), pa.int32()
    return _parquet(
        {
            "SmsId": (text, [str(r.sms_id) for r in records]),
            "ShipmentId": (text, [str(r.shipment_id) for r in records]),
            "SendersReference": (text, [r.senders_reference for r in records]),
            "RequestedSendTime": (text, [_iso(r.requested_send_time) for r in records]),
            "CreatorName": (text, [r.creator_name for r in records]),
            "ResourceId": (text, [r.resource_id for r in records]),
            "Result": (text, [r.result for r in records]),
            "GatewayReference": (text, [r.gateway_reference for r in records]),
            "Rate": (text, [r.rate for r in records]),
            "MobileNumberPrefix": (text, [r.mobile_number_prefix for r in records]),
            "AltinnSmsCount": (integer, [r.sms_count for r in records]),
            "AltinnSmsBodyLength": (integer, [r.body_length for r in records]),
            "AltinnSmsCustomBodyLength": (integer, [r.custom_body_length for r in records]),
        }
    )


def email_parquet(records: Sequence[EmailUsageRecord]) -> bytes:
    """Columns EmailId … OperationId (the provider's reference, ACS's operation id); EmailId as SmsId above."""
    import pyarrow as pa

    text = pa.string()
    return _parquet(
        {
            "EmailId": (text, [str(r.email_id) for r in records]),
            "ShipmentId": (text, [str(r.shipment_id) for r in records]),
            "SendersReference": (text, [r.senders_reference for r in records]),
            "RequestedSendTime": (text, [_iso(r.requested_send_time) for r in records]),
            "CreatorName": (text, [r.creator_name for r in records]),
            "ResourceId": (text, [r.resource_id for r in records]),
            "Result": (text, [r.result for r in records]),
            "OperationId": (text, [r.operation_id for r in records]),
        }
    )
