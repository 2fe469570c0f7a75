"""Inbound check of signed server-to-server calls (API.md "Conventions", SPEC §5).

Order of checks: header shape, timestamp window, client and signature, client state,
nonce, then what the route needs (client kind, function switch, IP allow-list, terminal).
The nonce is remembered only after the signature verified, so nobody can burn the
nonces of another client. Every refusal is logged with the client id and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import wraps

from sanic import Request
from sanic_ext import openapi

from cardcore import errors, signing
from cardcore.access import AuthClient, client_for_auth
from cardcore.audit import Actor
from cardcore.models import ClientKind
from openplatform.observability import REFUSALS, request_id_of
from openplatform.validation import keep_openapi

log = logging.getLogger("ehc.auth")


@dataclass(frozen=True)
class Caller:
    """Who made a signed request: the client, and the terminal it acts for, if any."""

    client: AuthClient
    terminal: AuthClient | None = None

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def institution_id(self) -> str | None:
        if self.client.kind is ClientKind.institution:
            return self.client.client_id
        return self.client.institution_id

    @property
    def terminal_id(self) -> str | None:
        return self.terminal.client_id if self.terminal else None

    def has_scope(self, scope: str) -> bool:
        return scope in self.client.scopes

    @property
    def actor(self) -> Actor:
        return Actor(
            client_id=self.client_id,
            institution_id=self.institution_id,
            terminal_id=self.terminal_id,
            scopes=self.client.scopes,
        )


def path_with_query(request: Request) -> str:
    return request.raw_url.decode("utf-8", "surrogateescape")


async def _check(request: Request, kinds: tuple[ClientKind, ...], function: str | None) -> Caller:
    rt = request.app.ctx.rt
    settings = rt.settings
    try:
        parts = signing.read_signed_parts(request.headers)
    except signing.MalformedSignatureHeaders as exc:
        raise errors.BadSignature(str(exc)) from None
    request.ctx.client_id = parts.client_id[:40]
    if abs(signing.now_ms() - parts.timestamp_ms) > settings.signature_window_s * 1000:
        raise errors.StaleRequest()
    client = await client_for_auth(rt, parts.client_id)
    if client is None or not signing.signature_matches(
        client.secret, request.method, path_with_query(request), parts, request.body
    ):
        raise errors.BadSignature()
    if not client.active:
        raise errors.ClientDisabled(f"client is {client.status.value}")
    nonce_key = f"nonce:{client.client_id}:{parts.nonce}"
    if not await rt.redis.set(nonce_key, b"1", nx=True, ex=settings.nonce_ttl_s):
        raise errors.ReplayedRequest()
    if client.kind not in kinds:
        raise errors.Forbidden(f"this API is not open to {client.kind.value} clients")
    _check_policy(client, function, request.remote_addr or request.ip)
    terminal = None
    if client.kind is ClientKind.terminal:
        terminal, client = client, await _institution_of(rt, client)
        _check_institution_allows(client, function)
        return Caller(client=client, terminal=terminal)
    terminal_id = request.headers.get(signing.HEADER_TERMINAL)
    if terminal_id:
        terminal = await _terminal_for(rt, client, terminal_id, function)
    return Caller(client=client, terminal=terminal)


def _check_policy(client: AuthClient, function: str | None, ip: str) -> None:
    if function and not client.allows_function(function):
        raise errors.Forbidden(f"function {function} is disabled for this client")
    if not client.allows_ip(ip):
        raise errors.Forbidden("request address is not in the client's IP allow-list")


async def _institution_of(rt, terminal: AuthClient) -> AuthClient:
    institution = await client_for_auth(rt, terminal.institution_id or "")
    if institution is None or not institution.active:
        raise errors.ClientDisabled("the terminal's institution is not approved or is disabled")
    return institution


def _check_institution_allows(institution: AuthClient, function: str | None) -> None:
    # A function switched off for an institution is off for all of its terminals.
    if function and not institution.allows_function(function):
        raise errors.Forbidden(f"function {function} is disabled for this institution")


async def _terminal_for(rt, institution: AuthClient, terminal_id: str, function: str | None) -> AuthClient:
    if institution.kind is not ClientKind.institution:
        raise errors.TerminalNotAllowed("only institutions act for terminals")
    terminal = await client_for_auth(rt, terminal_id)
    if terminal is None or terminal.kind is not ClientKind.terminal or terminal.institution_id != institution.client_id:
        raise errors.TerminalNotAllowed("terminal is not registered to this institution")
    if not terminal.active:
        raise errors.ClientDisabled(f"terminal is {terminal.status.value}")
    if function and not terminal.allows_function(function):
        raise errors.Forbidden(f"function {function} is disabled for this terminal")
    return terminal


async def authenticate(request: Request, kinds: tuple[ClientKind, ...], function: str | None) -> Caller:
    try:
        caller = await _check(request, kinds, function)
    except errors.PlatformError as exc:
        REFUSALS.labels(exc.code).inc()
        log.warning(
            "signed request refused",
            extra={
                "request_id": request_id_of(request),
                "client_id": getattr(request.ctx, "client_id", None),
                "refusal": exc.code,
                "reason": exc.message,
                "method": request.method,
                "path": request.path,
            },
        )
        raise
    request.ctx.caller = caller
    return caller


async def authorise_terminal(request: Request, terminal_id: str, function: str | None) -> Caller:
    """The caller acting for ``terminal_id`` named in a body rather than the header."""
    caller: Caller = request.ctx.caller
    if caller.client.kind is not ClientKind.institution:
        raise errors.TerminalNotAllowed("a terminal signs for itself only")
    terminal = await _terminal_for(request.app.ctx.rt, caller.client, terminal_id, function)
    request.ctx.caller = Caller(client=caller.client, terminal=terminal)
    return request.ctx.caller


def signed(*kinds: ClientKind, function: str | None = None):
    """Route decorator: the request must be signed by an approved client of one of ``kinds``."""

    def decorator(handler):
        @wraps(handler)
        async def wrapper(request: Request, *args, **kwargs):
            await authenticate(request, kinds, function)
            return await handler(request, *args, **kwargs)

        return openapi.secured("ehc_signature")(keep_openapi(wrapper, handler))

    return decorator
