"""Every rule of reference 3.2 for POST /future/orders/composed-email, with its exact key and message, the framework
layer's answers (reference 0.6), the 61 MIME types, and the operator's attachment hosts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.api_v2.composed_helpers import (
    ACCOUNT,
    COMPOSED,
    COMPOSED_SCOPE,
    OMIT,
    Auth,
    attachment,
    composed,
    post_composed,
    sas_url,
    stored_attachments,
)
from tests.conftest import NOW
from varsel.api.v2.composed_models import ComposedEmailRequestExt
from varsel.api.v2.composed_validation import MIME_TYPES, ComposedValidator
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.orders.attachments import AttachmentHosts
from varsel.settings import Limits, OrderDefaults

PAST = (NOW - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
NS = "Altinn.Notifications.Models"
BODY_REQUIRED = {"orderRequest": ["The orderRequest field is required."]}
A0 = "Recipient.Settings.Attachments[0]"


def _missing(type_name: str, *members: str) -> dict[str, list[str]]:
    listed = ", ".join(f"'{m}'" for m in members)
    return {"$": [f"JSON deserialization for type '{NS}.{type_name}' was missing required properties including: "
                  f"{listed}."], **BODY_REQUIRED}  # fmt: skip


def _with(**settings: Any) -> dict[str, Any]:
    """A request whose email settings have these members (OMIT: left out)."""
    return composed(**settings)


def _one(**fields: Any) -> dict[str, Any]:
    """A request with one attachment whose members are these (OMIT: left out, None: null)."""
    return composed(attachments=[attachment(**fields)])


def _url(**parameters: Any) -> dict[str, Any]:
    return _one(sasUrl=sas_url(**parameters))


F = "Attachment 'contract.pdf'"
CASES: list[tuple[str, Any, dict[str, list[str]]]] = [
    # ---- framework layer: members that must be present, then [Required]
    ("empty body", {}, _missing("ComposedEmailRequestExt", "idempotencyId", "recipient")),
    ("recipient without settings", {"idempotencyId": "k", "recipient": {"emailAddress": "a@example.com"}},
     _missing("Recipient.RecipientComposedEmailExt", "emailSettings")),
    ("settings without subject and body", _with(subject=OMIT, body=OMIT),
     _missing("Email.ComposedEmailSendingOptionsExt", "subject", "body")),
    ("attachment without sasUrl", _one(sasUrl=OMIT), _missing("Files.SasFileReferenceExt", "sasUrl")),
    ("attachment without anything", _with(attachments=[{}]),
     _missing("Files.SasFileReferenceExt", "filename", "mimeType", "sasUrl")),
    ("blank idempotencyId", composed(" "), {"IdempotencyId": ["The IdempotencyId field is required."]}),
    ("null recipient", {"idempotencyId": "k", "recipient": None}, {"Recipient": ["The Recipient field is required."]}),
    ("null email address", composed(address=None), {"Recipient.EmailAddress": ["The EmailAddress field is required."]}),
    ("null settings", {"idempotencyId": "k", "recipient": {"emailAddress": "a@example.com", "emailSettings": None}},
     {"Recipient.Settings": ["The Settings field is required."]}),
    ("empty subject", _with(subject=""), {"Recipient.Settings.Subject": ["The Subject field is required."]}),
    ("blank body", _with(body=" "), {"Recipient.Settings.Body": ["The Body field is required."]}),
    ("empty filename", _one(filename=""), {f"{A0}.Filename": ["The Filename field is required."]}),
    ("blank mime type", _one(mimeType="  "), {f"{A0}.MimeType": ["The MimeType field is required."]}),
    ("null sasUrl", _one(sasUrl=None), {f"{A0}.SasUrl": ["The SasUrl field is required."]}),
    # ---- top level: the chain endpoint's rules
    ("send time without zone", composed(requestedSendTime="2026-03-02T12:00:00"),
     {"RequestedSendTime": ["The requested send time value must have specified a time zone."]}),
    ("send time in the past", composed(requestedSendTime=PAST),
     {"RequestedSendTime": ["RequestedSendTime must be greater than or equal to now."]}),
    ("condition not a URI", composed(conditionEndpoint="not a uri"),
     {"ConditionEndpoint": ["ConditionEndpoint must be a valid absolute URI or null."]}),
    ("condition not http", composed(conditionEndpoint="ftp://example.com/c"),
     {"ConditionEndpoint": ["ConditionEndpoint must use http or https scheme."]}),
    ("condition on a private host (varsel's rule)", composed(conditionEndpoint="http://localhost/c"),
     {"ConditionEndpoint": ["The condition endpoint's host must be a public DNS name with a top-level domain"
                            " (unless the operator of this service lists the host in"
                            " VARSEL_CONDITIONS__ALLOWED_HOSTS)."]}),
    # ---- recipient and email settings: the chain endpoint's rules
    ("invalid email address", composed(address="nope"), {"Recipient.EmailAddress": ["Invalid email address format."]}),
    ("a list of email addresses", composed(address="a@example.com;b@example.com"),
     {"Recipient.EmailAddress": ["Invalid email address format."]}),
    ("empty sender address", _with(senderEmailAddress=""),
     {"Recipient.Settings.SenderEmailAddress": ["The sender email address is not valid."]}),
    ("invalid sender address", _with(senderEmailAddress="x@"),
     {"Recipient.Settings.SenderEmailAddress": ["The sender email address is not valid."]}),
    ("email at daytime", _with(sendingTimePolicy="Daytime"),
     {"Recipient.Settings.SendingTimePolicy": ["Email only supports send time anytime"]}),
    ("email policy 2 (Daytime)", _with(sendingTimePolicy=2),
     {"Recipient.Settings.SendingTimePolicy": ["Email only supports send time anytime"]}),
    ("email content type 5", _with(contentType=5),
     {"Recipient.Settings.ContentType": ["Email content type must be either Plain or HTML."]}),
    # ---- attachments, each chain in its order
    ("null attachment", _with(attachments=[attachment(), None]),
     {"Recipient.Settings.Attachments[1]": ["Attachment item must not be null."]}),
    *[
        (f"filename {name!r}", _one(filename=name),
         {f"{A0}.Filename": [f"Attachment '{name}': filename must not contain path separators, and must include a "
                             "file extension."]})
        for name in ["file.", "noextension", "dir/file.pdf", "dir\\file.pdf", "../x.pdf/"]
    ],
    ("filename with a line break (varsel's rule)", _one(filename="a\r\nBcc: x.pdf"),
     {f"{A0}.Filename": ["Attachment 'a\r\nBcc: x.pdf': filename must not contain control characters."]}),
    *[
        (f"sasUrl {url!r}", _one(sasUrl=url), {f"{A0}.SasUrl": [f"{F}: sasUrl must be an absolute HTTPS URI."]})
        for url in ["", "/container/file.pdf", f"http://{ACCOUNT}/c/f.pdf?se=x", "ftp://x.blob.core.windows.net/f",
                    "https:///nohost", "https://a.blob.core.windows.net:port/f", "https://a.blob.core.windows.net/\tf"]
    ],
    *[
        (f"host {host}", _one(sasUrl=sas_url(host=host)),
         {f"{A0}.SasUrl": [f"{F}: sasUrl host must be within Azure Blob Storage (*.blob.core.windows.net)."]})
        for host in ["example.com", "blob.core.windows.net", "acct.blob.core.windows.net.evil.example", "127.0.0.1",
                     "acct.file.core.windows.net",
                     # Under Azure's suffix, but no name the sender would fetch from (varsel's rule: it refuses them).
                     "a..blob.core.windows.net", "xn--.blob.core.windows.net", "-acct.blob.core.windows.net",
                     "a%20b.blob.core.windows.net", "acct-.blob.core.windows.net"]
    ],
    *[
        (f"SAS {name}", _url(**params),
         {f"{A0}.SasUrl": [f"{F}: sasUrl is missing required SAS parameters (se, sig, sp, sr)."]})
        for name, params in [("without se", {"se": OMIT}), ("without sp", {"sp": OMIT}), ("without sig", {"sig": OMIT}),
                             ("with a blank sig", {"sig": "%20"}), ("without sr", {"sr": OMIT}),
                             ("of a container (sr=c)", {"sr": "c"}), ("sr=bs", {"sr": "bs"})]
    ],
    *[
        (f"se {se!r}", _url(se=se),
         {f"{A0}.SasUrl": [f"{F}: sasUrl has an invalid 'se' (signed expiry) value."]})
        for se in ["tomorrow", "2026-13-01T00:00:00Z", "2026-03-02T12:00:00+00:00"]  # "+" decodes to a space
    ],
    ("se given twice", _one(sasUrl=sas_url() + "&se=2030-01-01T00:00:00Z"),
     {f"{A0}.SasUrl": [f"{F}: sasUrl has an invalid 'se' (signed expiry) value."]}),
    ("sp without r", _url(sp="w"),
     {f"{A0}.SasUrl": [f"{F}: sasUrl does not grant read permission ('r' must be present in 'sp')."]}),
    ("sp with R only", _url(sp="R"),
     {f"{A0}.SasUrl": [f"{F}: sasUrl does not grant read permission ('r' must be present in 'sp')."]}),
    ("unknown mime type", _one(mimeType="application/x-msdownload"),
     {f"{A0}.MimeType": [f"{F}: mimeType is not supported. Refer to ACS documentation for the list of accepted MIME "
                         "types."]}),
    ("expiry 14:59 after the default send time", _url(se=quote((NOW + timedelta(minutes=14, seconds=59)).isoformat())),
     {A0: [f"{F}: sasUrl must be valid for at least 15 minutes after requestedSendTime."]}),
    ("expiry 15 minutes before a later send time",
     composed(requestedSendTime=(NOW + timedelta(hours=2)).isoformat(),
              attachments=[attachment(sasUrl=sas_url(se=quote((NOW + timedelta(hours=2, minutes=14)).isoformat())))]),
     {A0: [f"{F}: sasUrl must be valid for at least 15 minutes after requestedSendTime."]}),
    ("expired and without read permission", _url(se="2026-03-02T09:00:00Z", sp="w"),
     {f"{A0}.SasUrl": [f"{F}: sasUrl does not grant read permission ('r' must be present in 'sp')."],
      A0: [f"{F}: sasUrl must be valid for at least 15 minutes after requestedSendTime."]}),
    ("each chain of an attachment is reported", _one(filename="x", sasUrl=f"http://{ACCOUNT}/f", mimeType="a/b"),
     {f"{A0}.Filename": ["Attachment 'x': filename must not contain path separators, and must include a file "
                         "extension."],
      f"{A0}.SasUrl": ["Attachment 'x': sasUrl must be an absolute HTTPS URI."],
      f"{A0}.MimeType": ["Attachment 'x': mimeType is not supported. Refer to ACS documentation for the list of "
                         "accepted MIME types."]}),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), [(body, expected) for _, body, expected in CASES],
                         ids=[name for name, _, _ in CASES])  # fmt: skip
async def test_rule(client: httpx.AsyncClient, auth: Auth, body: Any, expected: dict[str, list[str]]) -> None:
    response = await post_composed(client, auth, body)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"] == "https://tools.ietf.org/html/rfc9110#section-15.5.1"
    assert problem["title"] == "One or more validation errors occurred."
    assert problem["traceId"].startswith("00-")
    assert problem["errors"] == expected


async def test_every_broken_rule_is_reported_together(client: httpx.AsyncClient, auth: Auth) -> None:
    body = composed(
        requestedSendTime="2020-01-01T00:00:00",
        conditionEndpoint="gopher://example.com/",
        address="nope",
        sendingTimePolicy="Daytime",
        attachments=[attachment(), attachment(filename="b.pdf", mimeType="x/y"), None],
    )
    errors = (await post_composed(client, auth, body)).json()["errors"]
    assert errors == {
        "RequestedSendTime": [
            "The requested send time value must have specified a time zone.",
            "RequestedSendTime must be greater than or equal to now.",
        ],
        "ConditionEndpoint": ["ConditionEndpoint must use http or https scheme."],
        "Recipient.EmailAddress": ["Invalid email address format."],
        "Recipient.Settings.SendingTimePolicy": ["Email only supports send time anytime"],
        # The SAS expires in a day: past 2020-01-01 + 15 minutes, so the send time given is what it is measured from.
        "Recipient.Settings.Attachments[1].MimeType": [
            "Attachment 'b.pdf': mimeType is not supported. Refer to ACS documentation for the list of accepted MIME "
            "types."
        ],
        "Recipient.Settings.Attachments[2]": ["Attachment item must not be null."],
    }


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"idempotencyId": "k", "recipient": ', "$"),
        (composed(requestedSendTime=42), "$.requestedSendTime"),
        (composed(contentType="Markdown"), "$.recipient.emailSettings.contentType"),
        (composed(attachments="all of them"), "$.recipient.emailSettings.attachments"),
        (composed(attachments=[{**attachment(), "sasUrl": 7}]), "$.recipient.emailSettings.attachments[0].sasUrl"),
    ],
    ids=["cut off", "time as a number", "unknown enum name", "attachments not a list", "url as a number"],
)
async def test_bodies_that_do_not_parse_are_keyed_by_json_path(
    client: httpx.AsyncClient, auth: Auth, body: Any, key: str
) -> None:
    if isinstance(body, bytes):
        headers = {**auth(scopes=[COMPOSED_SCOPE]), "Content-Type": "application/json"}
        response = await client.post(COMPOSED, content=body, headers=headers)
    else:
        response = await post_composed(client, auth, body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert key in errors
    assert errors["orderRequest"] == ["The orderRequest field is required."]


# ---------------------------------------------------------------- what is accepted


@pytest.mark.parametrize("mime_type", MIME_TYPES)
async def test_each_allowed_mime_type_is_accepted(client: httpx.AsyncClient, auth: Auth, mime_type: str) -> None:
    response = await post_composed(client, auth, _one(mimeType=mime_type))
    assert response.status_code == 201, response.text


def test_the_allow_list_is_the_reference_s() -> None:
    # The reference says 61 entries and lists 60 distinct types (ACS's table has a row per extension, and two
    # extensions share one type); every one of them is here, each once.
    assert len(MIME_TYPES) == len(set(MIME_TYPES)) == 60
    assert {"application/pdf", "text/xml", "application/vnd.ms-excel.sheet.binary.macroEnabled.12"} <= set(MIME_TYPES)


@pytest.mark.parametrize(
    "item",
    [
        attachment(mimeType="APPLICATION/PDF"),
        attachment(mimeType="Application/Vnd.Ms-Word.Document.MacroEnabled.12"),
        attachment(sasUrl=sas_url(host="Acct.BLOB.Core.Windows.NET")),
        attachment(sasUrl=sas_url(sr="B")),
        attachment(sasUrl=f"https://{ACCOUNT}/letters/contract.pdf?SV=1&SE=2026-03-03T10:00:00Z&Sr=b&SP=r&SIG=x"),
        attachment(sasUrl=sas_url(se=quote("2026-03-02T11:15:00+01:00"))),  # 10:15 UTC: the least that passes
        attachment(sasUrl=sas_url(se="2026-03-02T10:15:00Z")),
        attachment(sasUrl=sas_url(se="2026-03-03")),  # a date alone
        attachment(sasUrl=sas_url(sp="racwd")),
        attachment(sasUrl=sas_url(host=f"{ACCOUNT}.")),  # the root's trailing dot
        attachment(filename=".pdf"),
        attachment(filename="a b æøå.tar.gz", mimeType="application/gzip"),
    ],
    ids=["mime upper", "mime mixed", "host mixed case", "sr=B", "parameter names in any case", "se with an offset",
         "se exactly 15 minutes", "se a date", "sp racwd", "host with a trailing dot", "extension only", "spaces"],
)  # fmt: skip
async def test_accepted_attachments(client: httpx.AsyncClient, auth: Auth, item: dict[str, Any]) -> None:
    response = await post_composed(client, auth, _with(attachments=[item]))
    assert response.status_code == 201, response.text


async def test_mime_types_are_stored_as_the_allow_list_spells_them(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    response = await post_composed(client, auth, _one(mimeType="APPLICATION/VND.MS-EXCEL.SHEET.MACROENABLED.12"))
    assert response.status_code == 201, response.text
    stored = await stored_attachments(varsel, response.json()["notification"]["shipmentId"])
    assert stored[0]["mimeType"] == "application/vnd.ms-excel.sheet.macroEnabled.12"


# ---------------------------------------------------------------- the rules the framework layer answers first


def _validator(hosts: list[str] | None = None) -> ComposedValidator:
    return ComposedValidator(FrozenClock(NOW), Limits(), OrderDefaults(), frozenset(), AttachmentHosts(hosts or []))


@pytest.mark.parametrize(
    ("body", "key", "messages"),
    [
        ({"idempotencyId": "k", "recipient": None}, "Recipient",
         ["'Recipient' must not be empty.", "Recipient email object cannot be null."]),
        ({"idempotencyId": "k", "recipient": {"emailAddress": "a@example.com", "emailSettings": None}},
         "Recipient.Settings", ["Recipient email settings cannot be null."]),
        (_one(filename=" "), f"{A0}.Filename", ["Attachment filename must not be empty."]),
        (_one(mimeType=""), f"{A0}.MimeType", [f"{F}: mimeType must not be empty."]),
        (_one(sasUrl=None), f"{A0}.SasUrl", [f"{F}: sasUrl must not be null."]),
    ],
    ids=["recipient", "settings", "filename", "mime type", "sasUrl"],
)  # fmt: skip
def test_the_rules_behind_the_framework_layer(body: dict[str, Any], key: str, messages: list[str]) -> None:
    """Rules of 3.2 a client never sees, as [Required] answers first (reference 0.6): the rule layer has them too."""
    errors = _validator().composed(ComposedEmailRequestExt.model_validate(body))
    assert isinstance(errors, dict)
    assert errors == {key: messages}


# ---------------------------------------------------------------- times at the ends of the calendar

LAST = "9999-12-31T23:59:59.999999Z"
TOO_SHORT = {A0: [f"{F}: sasUrl must be valid for at least 15 minutes after requestedSendTime."]}
INVALID_SE = {f"{A0}.SasUrl": [f"{F}: sasUrl has an invalid 'se' (signed expiry) value."]}


@pytest.mark.parametrize(
    ("send_time", "se", "expected"),
    [
        # A send time in the last 15 minutes of year 9999: the margin added to it is past datetime.max.
        ("9999-12-31T23:55:00Z", "2026-03-03T10:00:00Z", TOO_SHORT),
        ("9999-12-31T23:55:00Z", LAST, TOO_SHORT),
        ("9999-12-31T23:59:59.999999Z", LAST, TOO_SHORT),
        ("9999-12-31T23:50:00Z", "9999-12-31T23:59:00Z", TOO_SHORT),
        ("9999-12-31T23:55:00+00:00", quote("9999-12-31T23:59:00+00:00"), TOO_SHORT),
        ("9999-12-31T23:40:00Z", LAST, None),
        ("9999-12-31T23:44:59.999999Z", LAST, None),  # exactly 15 minutes
        (OMIT, LAST, None),
        (OMIT, "9999-12-31", None),
        # An expiry at the start of year 1: 15 minutes before it is before datetime.min.
        (OMIT, "0001-01-01T00:00:00Z", TOO_SHORT),
        (OMIT, "0001-01-01T00:05:00Z", TOO_SHORT),
        ("9999-12-31T23:55:00Z", "0001-01-01T00:14:59Z", TOO_SHORT),
        (OMIT, "0001-01-01", TOO_SHORT),
        # Written with an offset that takes it out of the calendar in UTC: no time at all.
        (OMIT, quote("9999-12-31T23:59:59-01:00"), INVALID_SE),
        (OMIT, quote("0001-01-01T00:00:00+01:00"), INVALID_SE),
    ],
    ids=["send time 23:55 of 9999", "both at the end", "both at the last microsecond", "se 9 minutes after",
         "with offsets", "se 20 minutes after", "se exactly 15 minutes after", "se at the end", "se the last day",
         "se at the start", "se 5 minutes in", "send time at the end, se at the start", "se the first day",
         "se past the end in UTC", "se before the start in UTC"],
)  # fmt: skip
async def test_the_15_minute_rule_at_the_ends_of_the_calendar(
    client: httpx.AsyncClient, auth: Auth, send_time: Any, se: str, expected: dict[str, list[str]] | None
) -> None:
    head = {} if send_time is OMIT else {"requestedSendTime": send_time}
    body = composed(**head, attachments=[attachment(sasUrl=sas_url(se=se))])
    response = await post_composed(client, auth, body)
    if expected is None:
        assert response.status_code == 201, response.text
    else:
        assert response.status_code == 400, response.text
        assert response.json()["errors"] == expected


# ---------------------------------------------------------------- hosts a suffix admits are public names


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("intranet", True),  # exact entries are the operator's word, public name or not
        ("files.internal", True),
        ("bucket.s3.example.com", True),
        ("b_1.s3.example.com", True),
        ("a..s3.example.com", False),
        ("xn--.s3.example.com", False),
        ("-b.s3.example.com", False),
        ("files.corp.internal", False),  # *.corp.internal admits no name the sender would call
        ("a..blob.core.windows.net", False),
        ("xn--.blob.core.windows.net", False),
        ("caseletters.blob.core.windows.net", True),
    ],
)
def test_a_host_admitted_by_a_suffix_must_be_a_public_name(host: str, allowed: bool) -> None:
    hosts = ["intranet", "files.internal", "*.s3.example.com", "*.corp.internal"]
    request = ComposedEmailRequestExt.model_validate(_one(sasUrl=sas_url(host=host)))
    answer = _validator(hosts).composed(request)
    if allowed:
        assert not isinstance(answer, dict), answer
    else:
        assert answer == {
            f"{A0}.SasUrl": [
                f"{F}: sasUrl host must be within Azure Blob Storage (*.blob.core.windows.net) or one of the allowed "
                "hosts (intranet, files.internal, *.s3.example.com, *.corp.internal)."
            ]
        }
