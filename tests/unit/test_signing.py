"""The HMAC-SM3 request signature of API.md, pinned by a fixed vector and checked against gmssl."""

import pytest
from gmssl import func, sm3

from cardcore import signing

SECRET = "demo-secret-0123456789"
METHOD, PATH = "POST", "/inst/v1/codes/verify?trace=1"
TIMESTAMP, NONCE = "1767225600000", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
BODY = '{"qr_code_text":"ABC:1","scene":"registration"}'.encode()

# Computed once and pinned, so any change to the canonical string or the MAC shows up.
EXPECTED_SIGNATURE = "79222d4b7c2047f26eea1e16e3d4e2aebeacb07d414284f304396163d424c177"


def gmssl_sm3(data: bytes) -> bytes:
    return bytes.fromhex(sm3.sm3_hash(func.bytes_to_list(data)))


def gmssl_hmac_sm3(key: bytes, message: bytes) -> bytes:
    """RFC 2104 HMAC over gmssl's SM3: an implementation independent of OpenSSL."""
    block = 64
    if len(key) > block:
        key = gmssl_sm3(key)
    key = key.ljust(block, b"\x00")
    inner = gmssl_sm3(bytes(b ^ 0x36 for b in key) + message)
    return gmssl_sm3(bytes(b ^ 0x5C for b in key) + inner)


def test_string_to_sign_layout():
    body_hash = gmssl_sm3(BODY).hex()
    assert signing.string_to_sign(METHOD, PATH, TIMESTAMP, NONCE, BODY) == (
        f"POST\n/inst/v1/codes/verify?trace=1\n{TIMESTAMP}\n{NONCE}\n{body_hash}".encode()
    )


def test_empty_body_hashes_zero_bytes():
    assert signing.string_to_sign("GET", "/x", "1", "n", b"").endswith(gmssl_sm3(b"").hex().encode())


def test_signature_matches_independent_gmssl_hmac():
    message = signing.string_to_sign(METHOD, PATH, TIMESTAMP, NONCE, BODY)
    expected = gmssl_hmac_sm3(SECRET.encode(), message).hex()
    assert signing.signature(SECRET, METHOD, PATH, TIMESTAMP, NONCE, BODY) == expected


def test_fixed_vector():
    assert signing.signature(SECRET, METHOD, PATH, TIMESTAMP, NONCE, BODY) == EXPECTED_SIGNATURE


def test_long_secret_is_hashed_first_like_any_hmac():
    long_secret = "k" * 100
    message = signing.string_to_sign("GET", "/", "1", NONCE, b"")
    assert signing.signature(long_secret, "GET", "/", "1", NONCE, b"") == gmssl_hmac_sm3(long_secret.encode(), message).hex()


def test_signed_headers_round_trip():
    headers = signing.signed_headers("ins_x", SECRET, METHOD, PATH, BODY, timestamp_ms=int(TIMESTAMP), nonce=NONCE)
    parts = signing.read_signed_parts(headers)
    assert parts.client_id == "ins_x" and parts.timestamp_ms == int(TIMESTAMP)
    assert signing.signature_matches(SECRET, METHOD, PATH, parts, BODY)
    assert not signing.signature_matches(SECRET, METHOD, PATH, parts, BODY + b" ")
    assert not signing.signature_matches(SECRET, METHOD, PATH + "&x=1", parts, BODY)


@pytest.mark.parametrize(
    "header, value",
    [
        # Regression (header fuzz): '²'.isdigit() holds but int('²') raises, which was a 500.
        (signing.HEADER_TIMESTAMP, "²"),
        (signing.HEADER_TIMESTAMP, "١٧٠٠٠٠٠٠٠٠٠٠٠"),
        (signing.HEADER_TIMESTAMP, "1" * 17),
        (signing.HEADER_SIGNATURE, "g" * 64),
        (signing.HEADER_SIGNATURE, "\udcff" * 64),  # undecodable header bytes, as Sanic hands them on
        (signing.HEADER_NONCE, "\udcff" * 16),
    ],
)
def test_malformed_signature_headers_are_refused_by_shape(header, value):
    headers = signing.signed_headers("ins_x", SECRET, METHOD, PATH, BODY, timestamp_ms=int(TIMESTAMP), nonce=NONCE)
    with pytest.raises(signing.MalformedSignatureHeaders, match=header):
        signing.read_signed_parts({**headers, header: value})
