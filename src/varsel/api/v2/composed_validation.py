"""The rules of POST /future/orders/composed-email (reference 3.2), keyed and worded as the reference has them.

Layer 1 (composed_framework_errors) is ASP.NET's: members that must be present, then [Required] members null or
blank. Layer 2 (ComposedValidator.composed) runs every rule and reports every failure together. The send time, the
condition endpoint and the email settings are judged by the chain endpoint's own rules (ChainValidator), so the two
endpoints cannot drift apart; the attachments' rules are this endpoint's, each step of a chain checked only when the
step before it passed, as the reference does.

Attachment hosts: Azure Blob Storage (`*.blob.core.windows.net`) always, as in the reference, and the hosts the
operator allows (settings.attachments.allowed_hosts: exact names or `*.` suffixes). The SAS checks (se, sp, sr, sig,
read permission, 15 minutes past the send time) apply to Azure Blob URLs only: an operator's S3 or internal store
signs its URLs its own way (X-Amz-Signature, or none at all on an internal name), so those parameters mean nothing
there. Nothing is fetched or resolved here: the sender fetches each attachment when the email goes out, and judges
the addresses a host resolves to then (a `*.` suffix admits public addresses only). Whether a host a suffix admits is
a public DNS name at all is judged here as the sender will, so an order it would always refuse is refused at intake.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from urllib.parse import SplitResult, parse_qsl, urlsplit

from varsel.api.v2.composed_models import ComposedEmailRequestExt, SasFileReferenceExt
from varsel.api.v2.validation import (
    ChainValidator,
    Errors,
    missing_member_errors,
    required_email_settings,
    required_object,
    required_text,
)
from varsel.clock import Clock
from varsel.hostnames import dns_name, is_public_name
from varsel.orders.attachments import AttachmentHosts
from varsel.orders.drafts import AttachmentSpec, ChainDraft, OrderDraft, RecipientSpec
from varsel.orders.vocabulary import NotificationChannel, OrderType, SendingTimePolicy
from varsel.settings import Limits, OrderDefaults

BODY_PARAMETER = "orderRequest"
# The SAS must outlive the send time by this much: the sender fetches the attachments then, and may retry.
SAS_MARGIN = timedelta(minutes=15)
# varsel's own limit (the reference has none): what file systems and mail readers take as a file name.
MAX_FILENAME_CHARS = 255

# The MIME types Azure Communication Services accepts as attachments (reference 3.2, which counts 61 entries and lists
# these 60 distinct types: ACS's table has a row per extension), each found by its lower case and stored as written.
MIME_TYPES: tuple[str, ...] = (
    "video/3gpp", "video/3gpp2", "application/x-7z-compressed", "audio/aac", "video/x-msvideo", "image/bmp",
    "text/csv", "application/msword", "application/vnd.ms-word.document.macroEnabled.12",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "application/vnd.ms-fontobject",
    "application/epub+zip", "image/gif", "application/gzip", "image/vnd.microsoft.icon", "text/calendar",
    "image/jpeg", "application/json", "audio/midi", "audio/mpeg", "video/mp4", "video/mpeg", "audio/ogg",
    "video/ogg", "application/ogg", "application/onenote", "audio/opus", "font/otf", "application/pdf", "image/png",
    "application/vnd.ms-powerpoint.slideshow.macroEnabled.12",
    "application/vnd.openxmlformats-officedocument.presentationml.slideshow", "application/vnd.ms-powerpoint",
    "application/vnd.ms-powerpoint.presentation.macroEnabled.12",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation", "application/vnd.ms-publisher",
    "application/x-rar-compressed", "application/vnd.ms-outlook", "application/rtf", "image/svg+xml",
    "application/x-tar", "image/tiff", "font/ttf", "text/plain", "application/vnd.visio", "audio/wav", "audio/webm",
    "video/webm", "image/webp", "audio/x-ms-wma", "video/x-ms-wmv", "font/woff", "font/woff2",
    "application/vnd.ms-excel", "application/vnd.ms-excel.sheet.binary.macroEnabled.12",
    "application/vnd.ms-excel.sheet.macroEnabled.12",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "application/xml", "text/xml",
    "application/zip",
)  # fmt: skip
_MIME_BY_LOWER = {mime.lower(): mime for mime in MIME_TYPES}


def _has_control(value: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)


# ---------------------------------------------------------------- layer 1: the framework


def composed_framework_errors(request: ComposedEmailRequestExt) -> Errors:
    """What ASP.NET refuses before Altinn's validator runs; empty when the request gets that far."""
    missing = missing_member_errors(request, BODY_PARAMETER)
    if missing:
        return missing
    errors: Errors = defaultdict(list)
    required_text(errors, "IdempotencyId", request.idempotency_id, "IdempotencyId")
    required_object(errors, "Recipient", request.recipient, "Recipient")
    if (recipient := request.recipient) is not None:
        required_text(errors, "Recipient.EmailAddress", recipient.email_address, "EmailAddress")
        required_object(errors, "Recipient.Settings", recipient.email_settings, "Settings")
        required_email_settings(errors, "Recipient.Settings", recipient.email_settings)
        settings = recipient.email_settings
        for index, attachment in enumerate((settings.attachments or []) if settings else []):
            if attachment is None:
                continue  # [Required] does not look into a list's items: the rules name a null one
            key = f"Recipient.Settings.Attachments[{index}]"
            required_text(errors, f"{key}.Filename", attachment.filename, "Filename")
            required_text(errors, f"{key}.MimeType", attachment.mime_type, "MimeType")
            # A Uri in .NET: [Required] refuses only null ("" is a relative URI, refused by the rules).
            required_object(errors, f"{key}.SasUrl", attachment.sas_url, "SasUrl")
    return dict(errors)


# ---------------------------------------------------------------- layer 2: the rules


def _parse_expiry(value: str) -> datetime | None:
    """A SAS's `se` as a UTC time, or None when it is no date and time (one without an offset is UTC, as Azure
    reads it)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    try:
        return parsed.replace(tzinfo=UTC) if parsed.utcoffset() is None else parsed.astimezone(UTC)
    except OverflowError:
        return None


def _expires_too_soon(expiry: datetime, measured_from: datetime) -> bool:
    """Whether the SAS expires less than SAS_MARGIN after `measured_from`. Subtracted from the expiry, not added to the
    send time: a send time in the last 15 minutes of year 9999 plus the margin is past datetime.max."""
    try:
        return expiry - SAS_MARGIN < measured_from
    except OverflowError:
        # An expiry in the first 15 minutes of year 1: less than 15 minutes after any time there is.
        return True


def _query(parts: SplitResult) -> dict[str, str]:
    """The URL's query, decoded, by lower-case name; a name given twice has its values joined by commas (as .NET's
    query parser reads it, so `se=a&se=b` is no date)."""
    found: dict[str, list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        found.setdefault(name.lower(), []).append(value)
    return {name: ",".join(values) for name, values in found.items()}


def host_refusal(hosts: AttachmentHosts, filename: str) -> str:
    if not hosts.listed:
        return f"Attachment '{filename}': sasUrl host must be within Azure Blob Storage (*.blob.core.windows.net)."
    # The operator added hosts: the message names them, or a caller reading it would think only Azure will do.
    return (
        f"Attachment '{filename}': sasUrl host must be within Azure Blob Storage (*.blob.core.windows.net) "
        f"or one of the allowed hosts ({', '.join(hosts.listed)})."
    )


class ComposedValidator(ChainValidator):
    """The chain endpoint's rules for what the two share, and the attachments' own."""

    def __init__(
        self,
        clock: Clock,
        limits: Limits,
        defaults: OrderDefaults,
        condition_allowed_hosts: frozenset[str],
        attachment_hosts: AttachmentHosts,
    ) -> None:
        super().__init__(clock, limits, defaults, condition_allowed_hosts)
        self._hosts = attachment_hosts

    def composed(self, request: ComposedEmailRequestExt) -> ChainDraft | Errors:
        """The order to store (a chain of one Composed order), or every rule it breaks (a request that passed
        composed_framework_errors)."""
        now = self._clock.now()
        errors: Errors = defaultdict(list)
        send_time, condition = self.order_head(errors, request, now)
        recipient = request.recipient
        address = template = None
        attachments: list[AttachmentSpec] = []
        if recipient is None:  # refused by the framework layer first; the rule is the reference's all the same
            errors["Recipient"].extend(["'Recipient' must not be empty.", "Recipient email object cannot be null."])
        else:
            address = self._email_address(errors, "Recipient.EmailAddress", recipient.email_address)
            settings = recipient.email_settings
            if settings is None:
                errors["Recipient.Settings"].append("Recipient email settings cannot be null.")
            else:
                template = self._email_settings(errors, "Recipient.Settings", settings)
                # The 15-minute rule measures from the send time as given, even one the rules above refuse.
                measured_from = self._measured_from(request.requested_send_time, now)
                for index, item in enumerate(settings.attachments or []):
                    spec = self._attachment(errors, f"Recipient.Settings.Attachments[{index}]", item, measured_from)
                    if spec is not None:
                        attachments.append(spec)
        if errors or send_time is None or address is None or template is None or request.idempotency_id is None:
            return dict(errors)
        association = None
        if request.dialogporten_association is not None:
            association = request.dialogporten_association.model_dump(by_alias=True, exclude_none=True)
        order = OrderDraft(
            channel=NotificationChannel.EMAIL,
            requested_send_time=send_time,
            recipients=(RecipientSpec(email_address=address),),
            senders_reference=request.senders_reference,
            condition_endpoint=condition,
            email_template=template,
            order_type=OrderType.COMPOSED,
            sms_sending_time_policy=SendingTimePolicy.ANYTIME,  # an email order: no SMS window applies
            attachments=tuple(attachments),
        )
        return ChainDraft(request.idempotency_id, order, dialogporten_association=association)

    @staticmethod
    def _measured_from(value: datetime | None, now: datetime) -> datetime | None:
        if value is None:
            return now
        try:
            return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)
        except OverflowError:
            return None

    # ------------------------------------------------------------ one attachment

    def _attachment(
        self, errors: Errors, key: str, item: SasFileReferenceExt | None, measured_from: datetime | None
    ) -> AttachmentSpec | None:
        if item is None:
            errors[key].append("Attachment item must not be null.")
            return None
        before = sum(len(v) for v in errors.values())
        name = item.filename or ""
        filename = self._filename(errors, f"{key}.Filename", item.filename)
        url, expiry = self._url(errors, f"{key}.SasUrl", name, item.sas_url)
        mime_type = self._mime_type(errors, f"{key}.MimeType", name, item.mime_type)
        if expiry is not None and measured_from is not None and _expires_too_soon(expiry, measured_from):
            errors[key].append(
                f"Attachment '{name}': sasUrl must be valid for at least 15 minutes after requestedSendTime."
            )
        if sum(len(v) for v in errors.values()) != before or filename is None or url is None or mime_type is None:
            return None
        return AttachmentSpec(filename, mime_type, url)

    @staticmethod
    def _filename(errors: Errors, key: str, filename: str | None) -> str | None:
        if filename is None or not filename.strip():
            errors[key].append("Attachment filename must not be empty.")
            return None
        _, dot, extension = filename.rpartition(".")
        if "/" in filename or "\\" in filename or not dot or not extension:
            errors[key].append(
                f"Attachment '{filename}': filename must not contain path separators, and must include a file "
                "extension."
            )
            return None
        # varsel's rules on top: the name goes into a MIME header, where a line break would start a header of its own.
        if _has_control(filename):
            errors[key].append(f"Attachment '{filename}': filename must not contain control characters.")
            return None
        if len(filename) > MAX_FILENAME_CHARS:
            errors[key].append(f"Attachment filename must be at most {MAX_FILENAME_CHARS} characters long.")
            return None
        return filename

    def _url(self, errors: Errors, key: str, name: str, url: str | None) -> tuple[str | None, datetime | None]:
        """The URL as stored, and the SAS's expiry when it has one to judge (an Azure Blob URL)."""
        if url is None:
            errors[key].append(f"Attachment '{name}': sasUrl must not be null.")
            return None, None
        if len(url) > self._limits.max_url_chars:
            # varsel's rule (the column's width is the service's URL limit); the URL itself is never echoed: it is
            # a credential.
            errors[key].append(f"Attachment '{name}': sasUrl must be at most {self._limits.max_url_chars} characters.")
            return None, None
        parts: SplitResult | None
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            parts = None
        # urlsplit drops tabs and line breaks silently: the host judged here would not be the one fetched.
        if parts is None or parts.scheme.lower() != "https" or not parts.hostname or _has_control(url) or " " in url:
            errors[key].append(f"Attachment '{name}': sasUrl must be an absolute HTTPS URI.")
            return None, None
        try:
            host = dns_name(parts.hostname)
        except ValueError:
            host = ""
        # A host admitted by a suffix (Azure's, an operator's `*.`) is fetched only at a public address of a public
        # name (varsel.outbound): one that is no such name (a..blob.core.windows.net, xn--.blob.core.windows.net)
        # would be accepted here and then always fail at send time. An exact entry is the operator's word as it is.
        if not host or not self._hosts.allows(host) or (host not in self._hosts.exact and not is_public_name(host)):
            errors[key].append(host_refusal(self._hosts, name))
            return None, None
        if not self._hosts.is_azure_blob(host):
            return url, None  # an operator's store: its own signatures, nothing to read here (see the module's doc)
        query = _query(parts)
        if (
            any(not query.get(parameter, "").strip() for parameter in ("se", "sp", "sig"))
            or query.get("sr", "").lower() != "b"  # a blob SAS; a container SAS (sr=c) would open every blob in it
        ):
            errors[key].append(f"Attachment '{name}': sasUrl is missing required SAS parameters (se, sig, sp, sr).")
            return None, None
        expiry = _parse_expiry(query["se"])
        if expiry is None:
            errors[key].append(f"Attachment '{name}': sasUrl has an invalid 'se' (signed expiry) value.")
            return None, None
        if "r" not in query["sp"]:
            errors[key].append(
                f"Attachment '{name}': sasUrl does not grant read permission ('r' must be present in 'sp')."
            )
            return None, expiry
        return url, expiry

    @staticmethod
    def _mime_type(errors: Errors, key: str, name: str, mime_type: str | None) -> str | None:
        if mime_type is None or not mime_type.strip():
            errors[key].append(f"Attachment '{name}': mimeType must not be empty.")
            return None
        known = _MIME_BY_LOWER.get(mime_type.lower())
        if known is None:
            errors[key].append(
                f"Attachment '{name}': mimeType is not supported. Refer to ACS documentation for the list of accepted "
                "MIME types."
            )
        return known
