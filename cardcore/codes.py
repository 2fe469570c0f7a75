"""Health card ID (VUID) derivation, the QR text codec, and the sealed VALID field.

Everything here is pure: no database, no clock. The verifier adds the clock (expiry),
the single-use record and the lockouts on top.

QR text (seed 002 §5.1.2.1), fields separated by ASCII ':'::

    VUID:1                      static
    VUID:0:VALID                dynamic
    VUID:0:VALID:TOKEN          combined pay code (二码合一)

each optionally followed by ``:ISSUER``, the issuing card-management system. TOKEN and
ISSUER can both sit in the fourth field, so they are told apart by one rule: an ISSUER is
a domain-style id with at least one '.' (``ehc.sn.gov.cn``, ``SX.EHC``); a TOKEN never
contains a '.'.
"""

from __future__ import annotations

import binascii
import os
import re
import secrets
import struct
from hmac import compare_digest
from typing import Literal, NamedTuple

from cardcore import crypto, errors
from cardcore.keyvault import KeyVault

try:  # the compiled hot path (cardcore/_codec.c), built by `make install` where a C compiler is
    from cardcore import _codec as _compiled
except ImportError:
    _compiled = None

VUID_HEX_LENGTH = 64
VALID_HEX_LENGTH = 32
MAX_CODE_TEXT_LENGTH = 256

STATIC_FLAG = "1"
DYNAMIC_FLAG = "0"

CodeKind = Literal["static", "dynamic", "combined"]

_EMPI_ID = re.compile(r"[0-9A-F]{16}")
_VUID = re.compile(r"[0-9A-F]{64}")
_VALID = re.compile(r"[0-9A-F]{32}")
_TOKEN = re.compile(r"[0-9A-Za-z]{10,64}")
_ISSUER = re.compile(r"(?=.{1,64}\Z)[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+")
# The form nearly every scan has, VUID:0:VALID with nothing after it, read in one match.
_PLAIN_DYNAMIC = re.compile(r"([0-9A-F]{64}):0:([0-9A-F]{32})")

# Bound once: these run several times for every code issued and verified.
_vuid_ok = _VUID.fullmatch
_valid_ok = _VALID.fullmatch
_plain_dynamic = _PLAIN_DYNAMIC.fullmatch

# Builds a named tuple from fields already checked, without its checking constructor.
_tuple_new = tuple.__new__

# Characters a scanner may add around what it read (CR/LF suffixes, padding spaces).
_SCANNER_WHITESPACE = " \t\r\n"


# --- VUID -----------------------------------------------------------------------


def new_empi_id() -> str:
    """A fresh EMPI id: 8 random bytes as 16 uppercase hex characters."""
    return secrets.token_hex(8).upper()


def is_vuid(text: str) -> bool:
    """Whether ``text`` has the shape of a health card ID (64 uppercase hex characters)."""
    return _vuid_ok(text) is not None


def derive_vuid(
    vault: KeyVault, empi_id: str, id_type: str, id_number: str, key_version: int | None = None
) -> str:
    """The health card ID of a person (SPEC §3, seed 002 §5.1.3).

    The security root key is diversified PBOC-style by the EMPI id into a per-person
    user key: SM4_ECB(root, D ‖ ~D) with D the 8 id bytes. The user key then encrypts
    id_type ‖ id_number (0x80-padded to 32 bytes, or its SM3 digest when longer than 31
    bytes) in CBC mode with a zero IV. Deterministic, so a card can always be re-derived;
    pass ``key_version`` to reproduce a VUID issued before the security key rotated.
    """
    if not _EMPI_ID.fullmatch(empi_id):
        raise ValueError("empi_id must be 16 uppercase hex characters")
    if not id_type or not id_number:
        raise ValueError("id_type and id_number must not be empty")
    diversifier = bytes.fromhex(empi_id)
    complement = bytes(b ^ 0xFF for b in diversifier)
    user_key = vault.block_cipher("security", key_version).encrypt(diversifier + complement)

    identity = (id_type + id_number).encode("utf-8")
    if len(identity) <= 31:
        block_data = identity + b"\x80" + bytes(31 - len(identity))
    else:
        block_data = crypto.sm3(identity)
    return crypto.sm4_cbc_encrypt(user_key, bytes(16), block_data).hex().upper()


# --- QR text ----------------------------------------------------------------------


class _CodeFields(NamedTuple):
    vuid: str
    kind: CodeKind
    valid: str | None = None
    token: str | None = None
    issuer: str | None = None


class CodeText(_CodeFields):
    """One QR payload. Constructing it checks every field, so ``format()`` always parses back.

    An immutable value (a named tuple: cheap to build, which the verifier does for every
    scan); two codes are equal when their fields are.
    """

    __slots__ = ()

    def __new__(
        cls,
        vuid: str,
        kind: CodeKind,
        valid: str | None = None,
        token: str | None = None,
        issuer: str | None = None,
    ) -> "CodeText":
        code = _tuple_new(cls, (vuid, kind, valid, token, issuer))
        problem = _field_problem(code)
        if problem:
            raise ValueError(problem)
        return code

    @classmethod
    def _make(cls, iterable) -> "CodeText":  # what _replace() builds with: checked as well
        return cls(*iterable)

    @classmethod
    def static(cls, vuid: str, *, issuer: str | None = None) -> "CodeText":
        return cls(vuid, "static", issuer=issuer)

    @classmethod
    def dynamic(
        cls, vuid: str, valid: str, *, token: str | None = None, issuer: str | None = None
    ) -> "CodeText":
        """A dynamic code, or the combined pay code when a channel payment token is given."""
        if token is None and issuer is None and type(vuid) is str and type(valid) is str:
            # The code every resident's page shows: _field_problem's checks for this form.
            if _vuid_ok(vuid) and _valid_ok(valid):
                return _tuple_new(cls, (vuid, "dynamic", valid, None, None))
        kind = "dynamic" if token is None else "combined"
        return cls(vuid, kind, valid=valid, token=token, issuer=issuer)

    def format(self) -> str:
        vuid, kind, valid, token, issuer = self
        if kind == "dynamic" and issuer is None:
            return f"{vuid}:{DYNAMIC_FLAG}:{valid}"
        if kind == "static":
            fields = [vuid, STATIC_FLAG]
        else:
            fields = [vuid, DYNAMIC_FLAG, valid]
            if kind == "combined":
                fields.append(token)
        if issuer is not None:
            fields.append(issuer)
        return ":".join(fields)


def parse_code_text(text: str) -> CodeText:
    """Read scanned QR text strictly; anything but the forms above raises CodeMalformed.

    Only whitespace a scanner adds at either end is forgiven. The message names what is
    wrong but never echoes the text, which may carry a card ID.
    """
    if _compiled is not None:
        code = _compiled.parse_plain(text)
        if code is not None:  # VUID:0:VALID; anything else is read below
            return code
    if not isinstance(text, str):
        raise errors.CodeMalformed("code text must be a string")
    text = text.strip(_SCANNER_WHITESPACE)
    plain = _plain_dynamic(text)
    if plain is not None:  # VUID:0:VALID, every field already checked by the match
        return _tuple_new(CodeText, (plain[1], "dynamic", plain[2], None, None))
    if not text:
        raise errors.CodeMalformed("code text is empty")
    if len(text) > MAX_CODE_TEXT_LENGTH:
        raise errors.CodeMalformed(f"code text is longer than {MAX_CODE_TEXT_LENGTH} characters")
    if not text.isascii():
        raise errors.CodeMalformed("code text must be ASCII")

    fields = text.split(":")
    if len(fields) < 2:
        raise errors.CodeMalformed("code text needs at least VUID and type flag separated by ':'")
    vuid, flag, rest = fields[0], fields[1], fields[2:]
    if flag == STATIC_FLAG:
        if len(rest) > 1:
            raise errors.CodeMalformed("a static code has at most one field after the type flag (ISSUER)")
        issuer = rest[0] if rest else None
        return _checked(CodeText.static, vuid, issuer=issuer)
    if flag == DYNAMIC_FLAG:
        if not 1 <= len(rest) <= 3:
            raise errors.CodeMalformed("a dynamic code has VALID, then optionally TOKEN and ISSUER")
        valid, extra = rest[0], rest[1:]
        token = issuer = None
        if len(extra) == 2:
            token, issuer = extra
        elif extra and "." in extra[0]:  # an ISSUER has a '.', a TOKEN never does
            issuer = extra[0]
        elif extra:
            token = extra[0]
        return _checked(CodeText.dynamic, vuid, valid, token=token, issuer=issuer)
    raise errors.CodeMalformed("type flag (second field) must be 1 (static) or 0 (dynamic)")


def _checked(build, *fields, **optional_fields) -> CodeText:
    """Build a CodeText from scanned fields, reporting a bad field as CodeMalformed."""
    try:
        return build(*fields, **optional_fields)
    except ValueError as exc:
        raise errors.CodeMalformed(str(exc)) from None


def _field_problem(code: CodeText) -> str | None:
    """What is wrong with a code's fields, in words a terminal integrator can act on."""
    if not isinstance(code.vuid, str) or not _VUID.fullmatch(code.vuid):
        return f"VUID must be exactly {VUID_HEX_LENGTH} uppercase hex characters"
    if code.kind == "static":
        if code.valid is not None or code.token is not None:
            return "a static code carries no VALID or TOKEN"
    elif code.kind in ("dynamic", "combined"):
        if not isinstance(code.valid, str) or not _VALID.fullmatch(code.valid):
            return f"VALID must be exactly {VALID_HEX_LENGTH} uppercase hex characters"
        if code.kind == "dynamic" and code.token is not None:
            return "a dynamic code carries no TOKEN (use kind 'combined')"
        if code.kind == "combined" and (not isinstance(code.token, str) or not _TOKEN.fullmatch(code.token)):
            return "TOKEN must be 10 to 64 letters or digits"
    else:
        return "kind must be 'static', 'dynamic' or 'combined'"
    if code.issuer is not None and (not isinstance(code.issuer, str) or not _ISSUER.fullmatch(code.issuer)):
        return (
            "ISSUER must be a dotted id of letters, digits, '_' or '-', "
            "at most 64 characters (e.g. ehc.sn.gov.cn)"
        )
    return None


# --- VALID: the sealed validity field of dynamic codes ---------------------------------


class ValidInfo(NamedTuple):
    """What an opened VALID says: expiry (unix seconds), its random serial, the key version."""

    expires_at_s: int
    serial: int
    key_version: int


_DOES_NOT_VERIFY = "the dynamic code does not verify for this card"
_TIME_AND_SERIAL = struct.Struct(">II")
_TAG_LENGTH = 8
_HEAD_LENGTH = _TIME_AND_SERIAL.size
_pack_head = _TIME_AND_SERIAL.pack
_unpack_head = _TIME_AND_SERIAL.unpack
_new_sm3 = crypto.new_sm3
_unhex = binascii.a2b_hex  # for text already checked to be hex: half the cost of bytes.fromhex

# Serials come from os.urandom like secrets.token_bytes, but 1024 at a time: one system
# call per code was a fifth of the cost of issuing it. A forked child starts a pool of
# its own so that parent and child never hand out the same serials. next() on the pool
# is one C call, atomic, so threads never share a serial either.
_SERIAL_BATCH = struct.Struct(">1024I")
_serials = iter(())


def _next_serial() -> int:
    serial = next(_serials, None)
    return _refilled_serial() if serial is None else serial


def _refilled_serial() -> int:
    global _serials
    _serials = iter(_SERIAL_BATCH.unpack(os.urandom(_SERIAL_BATCH.size)))
    return next(_serials)


def _forget_serials() -> None:
    global _serials
    _serials = iter(())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_serials)


def seal_valid(vault: KeyVault, vuid: str, expires_at_s: int) -> str:
    """Seal an expiry time into the 32-hex VALID field of a dynamic code for one VUID.

    One SM4 block under the current protection key: expires_at (u32 BE seconds) ‖ a
    random 4-byte serial (so two codes with the same expiry differ and each can be used
    once) ‖ 8 bytes of SM3(vuid ‖ those 8 bytes), which binds the VALID to its VUID.
    """
    if not _vuid_ok(vuid):
        raise ValueError(f"VUID must be exactly {VUID_HEX_LENGTH} uppercase hex characters")
    try:
        head = _pack_head(expires_at_s, _next_serial())
    except struct.error:
        raise ValueError("expires_at_s must fit in an unsigned 32-bit unix time") from None
    tag = _new_sm3()
    tag.update(vuid.encode("ascii") + head)
    return vault.block_cipher("protection").encrypt_block(head + tag.digest()[:_TAG_LENGTH]).hex().upper()


def issue_dynamic(vault: KeyVault, vuid: str, expires_at_s: int, *, token: str | None = None) -> CodeText:
    """A fresh dynamic code for ``vuid`` valid until ``expires_at_s``; the combined pay
    code when a channel payment token is given."""
    if _compiled is not None and token is None:
        return _compiled.issue(vuid, expires_at_s, _next_serial(), vault.block_cipher("protection").encrypt_block)
    valid = seal_valid(vault, vuid, expires_at_s)
    if token is None:  # seal_valid checked the VUID and made the VALID: nothing left to check
        return _tuple_new(CodeText, (vuid, "dynamic", valid, None, None))
    return CodeText.dynamic(vuid, valid, token=token)


def open_valid(vault: KeyVault, vuid: str, valid: str) -> ValidInfo:
    """Unseal a VALID issued for ``vuid``; CodeInvalid if it was tampered with or moved.

    Tries protection key versions newest first, so codes issued just before a rotation
    still open. Expiry is not judged here: the caller holds the clock.
    """
    if _compiled is not None:
        info = _compiled.open(vuid, valid, vault.block_ciphers("protection"))
        if info is not None:  # None: not hex of the right lengths, reported below
            return info
    if not _valid_ok(valid):
        raise errors.CodeMalformed(f"VALID must be exactly {VALID_HEX_LENGTH} uppercase hex characters")
    sealed = _unhex(valid)  # 16 bytes: one block
    vuid_bytes = vuid.encode("ascii")
    for version, cipher in vault.block_ciphers("protection"):
        block = cipher.decrypt_block(sealed)
        head = block[:_HEAD_LENGTH]
        tag = _new_sm3()
        tag.update(vuid_bytes + head)
        if compare_digest(block[_HEAD_LENGTH:], tag.digest()[:_TAG_LENGTH]):
            expires_at_s, serial = _unpack_head(head)
            return _tuple_new(ValidInfo, (expires_at_s, serial, version))
    raise errors.CodeInvalid(_DOES_NOT_VERIFY)


def codec() -> str:
    """Which codec issues and reads dynamic codes here: ``compiled`` or ``pure Python``."""
    return "pure Python" if _compiled is None else "compiled"


if _compiled is not None:
    try:
        _compiled.configure(CodeText, ValidInfo, _new_sm3, errors.CodeInvalid, _DOES_NOT_VERIFY)
    except (AttributeError, TypeError):  # built from another version of _codec.c: `make install` rebuilds it
        _compiled = None
