"""Resident sessions: bearer tokens for the mini-program, signed HttpOnly cookies for H5.

The session lives in the shared cache (so any worker can serve the next request) and
expires by itself; the cookie carries the token plus a MAC, so a forged cookie is
refused without a cache lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from functools import wraps

from sanic import Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from cardcore import errors
from cardcore.cache import keyed_command
from cardcore.crypto import constant_time_equal
from cardcore.models import ResidentAccount
from openplatform.validation import keep_openapi

SESSION_TTL_S = 7200
COOKIE_NAME = "ehc_session"

# What the platform hands out as tokens (secrets.token_urlsafe) and what the cookie's MAC
# is; anything else names no session, and a header's undecodable bytes (surrogates) could
# not be hashed or be part of a cache key.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
_COOKIE_MAC = re.compile(r"[0-9a-f]{32}")


def token_shaped(text: str) -> bool:
    """Whether ``text`` could be a token the platform issued (a session, an OAuth state)."""
    return _TOKEN.fullmatch(text) is not None


class Unauthenticated(errors.PlatformError):
    code, status, message = "UNAUTHENTICATED", 401, "log in first"


def _key(token: str) -> str:
    return "sess:" + hashlib.sha256(token.encode()).hexdigest()


async def create(rt, account: ResidentAccount) -> str:
    token = secrets.token_urlsafe(32)
    await rt.redis.set(_key(token), account.account_id.encode(), ex=SESSION_TTL_S)
    return token


async def end(rt, token: str) -> None:
    await rt.redis.delete(_key(token))


async def account_of(rt, token: str) -> ResidentAccount | None:
    account_id = await keyed_command(rt.redis, "GET", _key(token))
    if account_id is None:
        return None
    return await ResidentAccount.get_or_none(account_id=account_id.decode())


def _cookie_mac(rt, token: str) -> str:
    return rt.vault.mac("index", b"h5-session\x00" + token.encode()).hex()[:32]


def cookie_value(rt, token: str) -> str:
    return f"{token}.{_cookie_mac(rt, token)}"


def token_from_cookie(rt, value: str) -> str | None:
    token, _, mac = value.rpartition(".")
    if token_shaped(token) and _COOKIE_MAC.fullmatch(mac) and constant_time_equal(mac, _cookie_mac(rt, token)):
        return token
    return None


def set_cookie(request: Request, response: HTTPResponse, token: str) -> None:
    response.add_cookie(
        COOKIE_NAME,
        cookie_value(request.app.ctx.rt, token),
        httponly=True,
        samesite="Lax",  # the WeChat/Alipay OAuth redirect back must carry it
        secure=request.app.ctx.rt.settings.base_url.startswith("https:"),
        max_age=SESSION_TTL_S,
        path="/",
    )


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
H5_HEADER = "X-EHC-H5"


def request_token(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = header.removeprefix("Bearer ").strip()
        return token if token_shaped(token) else None
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        # A cookie rides along on cross-site form posts too; our pages add a header no form can.
        if request.method not in SAFE_METHODS and request.headers.get(H5_HEADER) != "1":
            return None
        return token_from_cookie(request.app.ctx.rt, cookie)
    return None


async def current_account(request: Request) -> ResidentAccount | None:
    token = request_token(request)
    if token is None:
        return None
    return await account_of(request.app.ctx.rt, token)


def resident_required(handler):
    """Route decorator: a logged-in resident (bearer token or H5 cookie) as ``request.ctx.account``."""

    @wraps(handler)
    async def wrapper(request: Request, *args, **kwargs):
        account = await current_account(request)
        if account is None:
            raise Unauthenticated()
        request.ctx.account = account
        return await handler(request, *args, **kwargs)

    return openapi.secured("resident_session")(keep_openapi(wrapper, handler))
