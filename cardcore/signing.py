"""The HMAC-SM3 request signature of API.md, for every signed call in and out.

    X-EHC-Signature = hex(HMAC-SM3(secret, METHOD \\n PATH_WITH_QUERY \\n TIMESTAMP \\n NONCE \\n hex(SM3(body))))

Inbound checks (stale, replay, client state) live in the web layer; this module only
knows the scheme, so the notifier, the partner SDK and the tests sign the same way.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from cardcore import crypto

HEADER_CLIENT = "X-EHC-Client"
HEADER_TIMESTAMP = "X-EHC-Timestamp"
HEADER_NONCE = "X-EHC-Nonce"
HEADER_SIGNATURE = "X-EHC-Signature"
HEADER_TERMINAL = "X-EHC-Terminal"
SIGNATURE_HEADERS = (HEADER_CLIENT, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)
PLATFORM_CLIENT_ID = "platform"

NONCE_MIN_LENGTH = 16
NONCE_MAX_LENGTH = 64

# ASCII only: str.isdigit() and int() also take other scripts' digits ('²', '١').
_TIMESTAMP = re.compile(r"[0-9]{1,16}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def string_to_sign(method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    body_hash = crypto.EMPTY_SM3_HEX if not body else crypto.sm3_hex(body)
    return "\n".join((method.upper(), path_with_query, timestamp, nonce, body_hash)).encode()


def signature(secret: str, method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes) -> str:
    return crypto.hmac_sm3(secret.encode(), string_to_sign(method, path_with_query, timestamp, nonce, body)).hex()


def new_nonce() -> str:
    return secrets.token_hex(16)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def signed_headers(
    client_id: str,
    secret: str,
    method: str,
    path_with_query: str,
    body: bytes = b"",
    *,
    timestamp_ms: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that authenticate one request; ``path_with_query`` exactly as it goes on the wire."""
    timestamp = str(now_ms() if timestamp_ms is None else timestamp_ms)
    nonce = nonce or new_nonce()
    return {
        HEADER_CLIENT: client_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: signature(secret, method, path_with_query, timestamp, nonce, body),
    }


@dataclass(frozen=True)
class SignedParts:
    """The signature headers of one inbound request, checked for shape only."""

    client_id: str
    timestamp_ms: int
    timestamp: str
    nonce: str
    signature: str


class MalformedSignatureHeaders(ValueError):
    pass


def read_signed_parts(headers) -> SignedParts:
    """Pull the four headers out of a case-insensitive mapping; raise when one is missing or malformed."""
    values = {}
    for name in SIGNATURE_HEADERS:
        value = headers.get(name)
        if not value:
            raise MalformedSignatureHeaders(f"missing {name} header")
        values[name] = value.strip()
    timestamp = values[HEADER_TIMESTAMP]
    if not _TIMESTAMP.fullmatch(timestamp):
        raise MalformedSignatureHeaders(f"{HEADER_TIMESTAMP} must be unix milliseconds")
    nonce = values[HEADER_NONCE]
    if not NONCE_MIN_LENGTH <= len(nonce) <= NONCE_MAX_LENGTH or not nonce.isascii() or not nonce.isprintable():
        raise MalformedSignatureHeaders(f"{HEADER_NONCE} must be {NONCE_MIN_LENGTH}-{NONCE_MAX_LENGTH} printable ASCII characters")
    sig = values[HEADER_SIGNATURE].lower()
    if not _SIGNATURE.fullmatch(sig):
        raise MalformedSignatureHeaders(f"{HEADER_SIGNATURE} must be 64 hex characters")
    return SignedParts(values[HEADER_CLIENT], int(timestamp), timestamp, nonce, sig)


def signed_within(parts: SignedParts, window_s: int, at_ms: int | None = None) -> bool:
    """Whether ``parts`` were signed no more than ``window_s`` seconds before or after
    ``at_ms`` (now when not given)."""
    return abs((now_ms() if at_ms is None else at_ms) - parts.timestamp_ms) <= window_s * 1000


def signature_matches(secret: str, method: str, path_with_query: str, parts: SignedParts, body: bytes) -> bool:
    expected = signature(secret, method, path_with_query, parts.timestamp, parts.nonce, body)
    return crypto.constant_time_equal(expected, parts.signature)
