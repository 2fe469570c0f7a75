"""Small helpers shared by the mocks: the shared cache, settings, ids and times."""

from __future__ import annotations

import json
import random
import string
from datetime import datetime, timezone

from sanic import Request

from cardcore.cache import LuaScript

_ALPHANUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
URLSAFE = _ALPHANUM + "-_"


def cache(request: Request):
    """The shared cache (redis.asyncio, bytes answers); mock keys start with ``mock:``."""
    return request.app.ctx.rt.redis


_APPEND_EXPIRING = LuaScript(
    "redis.call('RPUSH', KEYS[1], ARGV[1]) return redis.call('EXPIRE', KEYS[1], ARGV[2])"
)


async def append_expiring(request: Request, key: str, value: str, ttl_s: int) -> None:
    """Append ``value`` to the list ``key`` and keep the list ``ttl_s`` longer (one round trip)."""
    await _APPEND_EXPIRING(cache(request), [key], [value, ttl_s])


def settings_of(request: Request):
    return request.app.ctx.settings


def token(length: int = 32, alphabet: str = _ALPHANUM) -> str:
    """A random id for a mock's records and answers. They must differ, not resist guessing:
    the process's generator (reseeded in a forked child) spares a system call per character,
    which the mocks' share of a benchmark's CPU would otherwise carry."""
    return "".join(random.choices(alphabet, k=length))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def loads(raw: bytes | str | None):
    """A stored JSON value; None when there is none (a script answers a missing key as '')."""
    return None if not raw else json.loads(raw)


def is_form(request: Request) -> bool:
    """A browser form post (and not a JSON object sent without a content type, as curl -d does)."""
    form_type = request.content_type.startswith("application/x-www-form-urlencoded")
    return form_type and not request.body.lstrip().startswith(b"{")


def body_of(request: Request) -> dict:
    """The JSON object sent, or the form fields; ``{}`` for anything else."""
    if is_form(request):
        return {k: v[0] for k, v in request.form.items()}
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:  # the mocks answer in their provider's style, never with our envelope
        return {}
    return body if isinstance(body, dict) else {}
