"""Python client for the platform's signed APIs (institutions, terminals, partner apps, admins).

    from openplatform.sdk import PlatformClient
    with PlatformClient("http://127.0.0.1:8000", "ins_demo", "secret") as ehc:
        ehc.post("/inst/v1/cards", {...})

Requests are signed with HMAC-SM3 exactly as API.md describes: the body is serialised
once and those bytes are both hashed and sent.

A hospital's notify_url checks what the platform POSTs to it with ``read_notification``.
"""

from __future__ import annotations

import json as _json
from collections.abc import Mapping

import httpx

from cardcore import signing


def encode_body(payload) -> bytes:
    if payload is None:
        return b""
    return _json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def build_request(
    client_id: str,
    secret: str,
    method: str,
    path_with_query: str,
    payload=None,
    *,
    terminal_id: str | None = None,
    timestamp_ms: int | None = None,
    nonce: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body bytes of one signed request."""
    body = encode_body(payload)
    headers = signing.signed_headers(
        client_id, secret, method, path_with_query, body, timestamp_ms=timestamp_ms, nonce=nonce
    )
    if body:
        headers["Content-Type"] = "application/json"
    if terminal_id:
        headers[signing.HEADER_TERMINAL] = terminal_id
    return headers, body


class PlatformClient:
    def __init__(self, base_url: str, client_id: str, secret: str, *, terminal_id: str | None = None, timeout: float = 10):
        self.client_id = client_id
        self._secret = secret
        self.terminal_id = terminal_id
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def request(self, method: str, path_with_query: str, payload=None) -> httpx.Response:
        headers, body = build_request(
            self.client_id, self._secret, method, path_with_query, payload, terminal_id=self.terminal_id
        )
        return self._http.request(method, path_with_query, content=body, headers=headers)

    def get(self, path_with_query: str) -> httpx.Response:
        return self.request("GET", path_with_query)

    def post(self, path_with_query: str, payload=None) -> httpx.Response:
        return self.request("POST", path_with_query, payload)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PlatformClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NotificationRejected(ValueError):
    """Not a notification the platform sent as it arrived: answer anything but SUCCESS."""


def read_notification(
    secret: str,
    path_with_query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    window_s: int = 300,
    now_ms: int | None = None,
) -> dict:
    """The event of a notification the platform POSTed to a hospital, once it checks out.

    ``secret`` is the institution's own; ``path_with_query`` is the request target exactly
    as it arrived (``/his/notify?x=1``); ``headers`` any mapping (names in any case);
    ``body`` the bytes as received. Refused (NotificationRejected): a signature header
    missing or malformed, a sender other than the platform, a timestamp more than
    ``window_s`` seconds off, a signature that does not match. The same notification may
    come again (a lost answer is retried): the event's ``notification_id`` tells a repeat,
    so the HIS answers SUCCESS again without acting twice.
    """
    try:
        parts = signing.read_signed_parts(httpx.Headers(headers))
    except signing.MalformedSignatureHeaders as exc:
        raise NotificationRejected(str(exc)) from None
    if parts.client_id != signing.PLATFORM_CLIENT_ID:
        raise NotificationRejected(f"sent by {parts.client_id!r}, not by the platform")
    if not signing.signed_within(parts, window_s, now_ms):
        raise NotificationRejected("the timestamp is outside the accepted window")
    if not signing.signature_matches(secret, "POST", path_with_query, parts, body):
        raise NotificationRejected("the signature does not match")
    try:
        return _json.loads(body)
    except ValueError:
        raise NotificationRejected("the body is not JSON") from None
