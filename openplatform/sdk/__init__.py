"""Python client for the platform's signed APIs (institutions, terminals, partner apps, admins).

    from openplatform.sdk import PlatformClient
    with PlatformClient("http://127.0.0.1:8000", "ins_demo", "secret") as ehc:
        ehc.post("/inst/v1/cards", {...})

Requests are signed with HMAC-SM3 exactly as API.md describes: the body is serialised
once and those bytes are both hashed and sent.
"""

from __future__ import annotations

import json as _json

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
