"""The SDK's side of a hospital notification: what ``read_notification`` accepts and refuses."""

import json

import pytest

from cardcore import signing
from openplatform.sdk import NotificationRejected, read_notification

SECRET = "institution-secret"
PATH = "/his/notify?site=1"
BODY = json.dumps({"notification_id": "7", "event": "order.paid", "order_no": "1" * 28}).encode()
NOW_MS = 1_700_000_000_000


def sent(secret=SECRET, client_id=signing.PLATFORM_CLIENT_ID, path=PATH, body=BODY, timestamp_ms=NOW_MS):
    """Headers as the notifier sends them, with names in the case a proxy may give them."""
    headers = signing.signed_headers(client_id, secret, "POST", path, body, timestamp_ms=timestamp_ms)
    return {name.lower(): value for name, value in headers.items()}


def test_a_notification_as_the_platform_signs_it_is_read():
    event = read_notification(SECRET, PATH, sent(), BODY, now_ms=NOW_MS + 1000)
    assert event["event"] == "order.paid" and event["notification_id"] == "7"


@pytest.mark.parametrize(
    "headers, path, body, problem",
    [
        (sent(secret="another-secret"), PATH, BODY, "does not match"),
        (sent(), "/his/notify", BODY, "does not match"),
        (sent(), PATH, BODY.replace(b"order.paid", b"order.paie"), "does not match"),
        (sent(client_id="ins_someone"), PATH, BODY, "not by the platform"),
        (sent(timestamp_ms=NOW_MS - 301_000), PATH, BODY, "window"),
        ({k: v for k, v in sent().items() if k != "x-ehc-signature"}, PATH, BODY, "X-EHC-Signature"),
        (sent(body=b"not json"), PATH, b"not json", "not JSON"),
    ],
)
def test_anything_else_is_refused_with_the_reason(headers, path, body, problem):
    with pytest.raises(NotificationRejected, match=problem):
        read_notification(SECRET, path, headers, body, now_ms=NOW_MS)
