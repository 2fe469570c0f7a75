"""SM3, HMAC-SM3 and SM4 primitives on top of OpenSSL (``cryptography``).

Everything cryptographic in the platform goes through this module, so the choice of
backend stays in one place. gmssl is used only as an independent oracle in tests.

SM3 and HMAC-SM3 take Python's own OpenSSL binding (``hashlib``/``hmac``) when that
OpenSSL offers SM3: for the short inputs the platform hashes (a code tag, a request
signature) it costs about half of what a ``cryptography`` context does. Where it does
not (an OpenSSL built without SM3), the same functions fall back to ``cryptography``.
"""

from __future__ import annotations

import hashlib as _hashlib
import hmac as _stdlib_hmac
from functools import lru_cache

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK_SIZE = 16
EMPTY_SM3_HEX = "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b"


# GB/T 32905 example 1: SM3("abc").
_SM3_ABC_HEX = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"


def _stdlib_has_sm3() -> bool:
    try:
        return _hashlib.new("sm3", b"abc").hexdigest() == _SM3_ABC_HEX
    except ValueError:  # this OpenSSL has no SM3
        return False


if _stdlib_has_sm3():
    # Copying a fresh context is cheaper than looking the algorithm up again per call.
    # new_sm3() is a fresh SM3 context: update(data) as often as needed, then digest().
    new_sm3 = _new_sm3 = _hashlib.new("sm3").copy

    def sm3(data: bytes) -> bytes:
        digest = _new_sm3()
        digest.update(data)
        return digest.digest()

    @lru_cache(maxsize=4096)
    def _keyed_hmac_sm3(key: bytes):
        # The same few keys sign every request (client secrets, the index key): keeping each
        # one's HMAC context spares OpenSSL's digest lookup and key schedule per call.
        return _stdlib_hmac.new(key, digestmod="sm3")

    def hmac_sm3(key: bytes, data: bytes) -> bytes:
        mac = _keyed_hmac_sm3(key).copy()
        mac.update(data)
        return mac.digest()

else:
    _new_sm3 = hashes.Hash(hashes.SM3()).copy

    class _SM3Context:
        """``cryptography``'s SM3 context with hashlib's method names."""

        __slots__ = ("update", "digest")

        def __init__(self) -> None:
            context = _new_sm3()
            self.update = context.update
            self.digest = context.finalize

    new_sm3 = _SM3Context

    def sm3(data: bytes) -> bytes:
        digest = _new_sm3()
        digest.update(data)
        return digest.finalize()

    def hmac_sm3(key: bytes, data: bytes) -> bytes:
        mac = hmac.HMAC(key, hashes.SM3())
        mac.update(data)
        return mac.finalize()


def sm3_hex(data: bytes) -> str:
    return sm3(data).hex()


def constant_time_equal(a: bytes | str, b: bytes | str) -> bool:
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return _stdlib_hmac.compare_digest(a, b)


class SM4Block:
    """SM4 in ECB mode over whole 16-byte blocks with one key.

    ECB is stateless, so one encryptor and one decryptor serve every call: building a
    new OpenSSL context per block costs about ten times the encryption itself.
    ``encrypt_block``/``decrypt_block`` are OpenSSL's own update methods, for callers that
    hand over exactly one block they built or checked (the sealed VALID of every dynamic
    code): no Python frame in between. Not thread-safe; each event loop/process keeps its
    own instance.
    """

    __slots__ = ("encrypt_block", "decrypt_block")

    def __init__(self, key: bytes) -> None:
        if len(key) != 16:
            raise ValueError("SM4 keys are 16 bytes")
        cipher = Cipher(algorithms.SM4(key), modes.ECB())
        self.encrypt_block = cipher.encryptor().update
        self.decrypt_block = cipher.decryptor().update

    def encrypt(self, data: bytes) -> bytes:
        if len(data) % BLOCK_SIZE:
            raise ValueError("SM4 ECB input must be whole 16-byte blocks")
        return self.encrypt_block(data)

    def decrypt(self, data: bytes) -> bytes:
        if len(data) % BLOCK_SIZE:
            raise ValueError("SM4 ECB input must be whole 16-byte blocks")
        return self.decrypt_block(data)


def sm4_cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """SM4-CBC over whole blocks (callers pad)."""
    encryptor = Cipher(algorithms.SM4(key), modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def sm4_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.SM4(key), modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def pkcs7_pad(data: bytes) -> bytes:
    n = BLOCK_SIZE - len(data) % BLOCK_SIZE
    return data + bytes([n]) * n


def pkcs7_unpad(data: bytes) -> bytes:
    if not data or len(data) % BLOCK_SIZE:
        raise ValueError("bad padding")
    n = data[-1]
    if not 1 <= n <= BLOCK_SIZE or data[-n:] != bytes([n]) * n:
        raise ValueError("bad padding")
    return data[:-n]
