"""One-time codes for a card (SMS second factor, static-code second check).

A code is 6 digits, valid 5 minutes, single use; three wrong answers lock the challenge
for a while (seed 002 §5.1.2.3). Only a keyed hash of the code is kept, in the shared cache.
"""

from __future__ import annotations

import secrets

from cardcore import errors
from cardcore.crypto import constant_time_equal
from cardcore.runtime import Runtime

OTP_TTL_S = 300
MAX_WRONG_ANSWERS = 3
LOCK_S = 900


class OtpInvalid(errors.PlatformError):
    code, status, message = "OTP_INVALID", 422, "the one-time code is wrong or has expired"


class OtpLocked(errors.PlatformError):
    code, status, message = "OTP_LOCKED", 423, "too many wrong one-time codes; try again later"


def _keys(purpose: str, subject: str) -> tuple[str, str, str]:
    base = f"otp:{purpose}:{subject}"
    return base, f"{base}:wrong", f"{base}:locked"


def lock_key_pattern(purpose: str) -> str:
    return f"otp:{purpose}:*:locked"


def subject_of_lock_key(purpose: str, key: str) -> str:
    return key.removeprefix(f"otp:{purpose}:").removesuffix(":locked")


def _digest(rt: Runtime, purpose: str, subject: str, code: str) -> str:
    return rt.vault.mac("index", f"otp\x00{purpose}\x00{subject}\x00{code}".encode()).hex()


async def issue(rt: Runtime, purpose: str, subject: str) -> str:
    """A fresh code for ``subject`` (a health card id); replaces any earlier one."""
    key, wrong_key, lock_key = _keys(purpose, subject)
    if await rt.redis.exists(lock_key):
        raise OtpLocked()
    code = f"{secrets.randbelow(1_000_000):06d}"
    pipe = rt.redis.pipeline(transaction=True)
    pipe.set(key, _digest(rt, purpose, subject, code), ex=OTP_TTL_S)
    pipe.delete(wrong_key)
    await pipe.execute()
    return code


async def check(rt: Runtime, purpose: str, subject: str, code: str) -> None:
    """Accept a code once; count wrong ones and lock after three."""
    key, wrong_key, lock_key = _keys(purpose, subject)
    if await rt.redis.exists(lock_key):
        raise OtpLocked()
    expected = await rt.redis.get(key)
    if expected is not None and constant_time_equal(expected, _digest(rt, purpose, subject, code.strip())):
        # GETDEL-style consumption: only the caller that deletes it wins a race.
        if await rt.redis.delete(key):
            await rt.redis.delete(wrong_key)
            return
    wrong = await rt.redis.incr(wrong_key)
    await rt.redis.expire(wrong_key, OTP_TTL_S)
    if wrong >= MAX_WRONG_ANSWERS:
        pipe = rt.redis.pipeline(transaction=True)
        pipe.set(lock_key, b"1", ex=LOCK_S)
        pipe.delete(key, wrong_key)
        await pipe.execute()
        raise OtpLocked()
    raise OtpInvalid()
