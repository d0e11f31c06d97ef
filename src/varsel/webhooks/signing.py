"""Standard Webhooks signatures (https://www.standardwebhooks.com): the headers every delivery carries.

`webhook-id` is the event's id (the same on every attempt and replay: receivers de-duplicate on it),
`webhook-timestamp` the attempt's time in whole seconds, and `webhook-signature` one `v1,<base64 HMAC-SHA256>` of
"<id>.<timestamp>.<body>" per secret that signs: during a rotation's grace period both the new and the previous
secret sign, space-separated, so a receiver holding either verifies the delivery.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """`whsec_` and the base64 of 32 random bytes, as Standard Webhooks' libraries take it."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signed_headers(event_id: str, at: datetime, body: str, signing_secrets: Sequence[str]) -> dict[str, str]:
    """The three Standard Webhooks headers for `body` sent at `at`, signed with each of `signing_secrets`."""
    signatures = " ".join(Webhook(secret).sign(event_id, at, body) for secret in signing_secrets)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }
