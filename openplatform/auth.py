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

from cardcore import access, errors, signing
from cardcore.access import AuthClient
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


async def _check(request: Request, kinds: tuple[ClientKind, ...], function: str | None, defer: bool) -> Caller:
    rt = request.app.ctx.rt
    settings = rt.settings
    try:
        parts = signing.read_signed_parts(request.headers)
    except signing.MalformedSignatureHeaders as exc:
        raise errors.BadSignature(str(exc)) from None
    request.ctx.client_id = parts.client_id[:40]
    if not signing.signed_within(parts, settings.signature_window_s):
        raise errors.StaleRequest()
    # First on this worker's copies of the client records; when one of them turns out to
    # have changed, or the request is to be refused, again on the records as they are now.
    for attempt in range(4):
        guard = access.RequestGuard(f"nonce:{parts.client_id}:{parts.nonce}", settings.nonce_ttl_s)
        try:
            return await _decide(request, rt, parts, kinds, function, guard, current=attempt > 0, defer=defer)
        except access.StaleGuard:
            continue
    raise errors.PlatformError("client records keep changing; try again", status=503, code="SERVICE_UNAVAILABLE")


async def _decide(
    request: Request,
    rt,
    parts: signing.SignedParts,
    kinds: tuple[ClientKind, ...],
    function: str | None,
    guard: access.RequestGuard,
    *,
    current: bool,
    defer: bool,
) -> Caller:
    client = await guard.client(rt, parts.client_id, current=current)
    if client is None or not signing.signature_matches(
        client.secret, request.method, path_with_query(request), parts, request.body
    ):
        _refuse(errors.BadSignature(), current)
    if not client.active:
        _refuse(errors.ClientDisabled(f"client is {client.status.value}"), current)
    # From here on a refusal comes after the nonce: the request has used it up.
    try:
        caller = await _caller_for(request, rt, client, kinds, function, guard, current)
    except errors.PlatformError:
        await access.claim(rt, guard)
        raise
    request.ctx.guard = guard
    if not defer:
        await access.claim(rt, guard)
    return caller


def _refuse(exc: errors.PlatformError, current: bool):
    """Refuse on current records only: a worker's copy may be a moment old."""
    if not current:
        raise access.StaleGuard()
    raise exc


async def _caller_for(
    request: Request,
    rt,
    client: AuthClient,
    kinds: tuple[ClientKind, ...],
    function: str | None,
    guard: access.RequestGuard,
    current: bool,
) -> Caller:
    if client.kind not in kinds:
        raise errors.Forbidden(f"this API is not open to {client.kind.value} clients")
    _check_policy(client, function, request)
    if client.kind is ClientKind.terminal:
        institution = await guard.client(rt, client.institution_id or "", current=current)
        if institution is None or not institution.active:
            raise errors.ClientDisabled("the terminal's institution is not approved or is disabled")
        _check_institution_allows(institution, function)
        return Caller(client=institution, terminal=client)
    terminal_id = request.headers.get(signing.HEADER_TERMINAL)
    terminal = None
    if terminal_id:
        terminal = _terminal_allowed(client, await guard.client(rt, terminal_id, current=current), function)
    return Caller(client=client, terminal=terminal)


def _check_policy(client: AuthClient, function: str | None, request: Request) -> None:
    if function and not client.allows_function(function):
        raise errors.Forbidden(f"function {function} is disabled for this client")
    # The address is worked out (proxy headers parsed) only for clients with an allow-list.
    if client.ip_allowlist and not client.allows_ip(request.remote_addr or request.ip):
        raise errors.Forbidden("request address is not in the client's IP allow-list")


def _check_institution_allows(institution: AuthClient, function: str | None) -> None:
    # A function switched off for an institution is off for all of its terminals.
    if function and not institution.allows_function(function):
        raise errors.Forbidden(f"function {function} is disabled for this institution")


def _terminal_allowed(institution: AuthClient, terminal: AuthClient | None, function: str | None) -> AuthClient:
    if institution.kind is not ClientKind.institution:
        raise errors.TerminalNotAllowed("only institutions act for terminals")
    if terminal is None or terminal.kind is not ClientKind.terminal or terminal.institution_id != institution.client_id:
        raise errors.TerminalNotAllowed("terminal is not registered to this institution")
    if not terminal.active:
        raise errors.ClientDisabled(f"terminal is {terminal.status.value}")
    if function and not terminal.allows_function(function):
        raise errors.Forbidden(f"function {function} is disabled for this terminal")
    return terminal


def _log_refusal(request: Request, exc: errors.PlatformError) -> None:
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


async def authenticate(
    request: Request, kinds: tuple[ClientKind, ...], function: str | None, *, defer: bool = False
) -> Caller:
    """Check a signed request; with ``defer`` its nonce is left for the service to claim."""
    try:
        caller = await _check(request, kinds, function, defer)
    except errors.PlatformError as exc:
        _log_refusal(request, exc)
        raise
    request.ctx.caller = caller
    return caller


async def authorise_terminal(request: Request, terminal_id: str, function: str | None) -> Caller:
    """The caller acting for ``terminal_id`` named in a body rather than the header."""
    caller: Caller = request.ctx.caller
    if caller.client.kind is not ClientKind.institution:
        raise errors.TerminalNotAllowed("a terminal signs for itself only")
    rt = request.app.ctx.rt
    guard: access.RequestGuard = request.ctx.guard
    if not guard.claimed:
        await access.claim(rt, guard)  # the terminal is read as it is now, after the nonce
    terminal = _terminal_allowed(caller.client, await access.client_for_auth(rt, terminal_id), function)
    request.ctx.caller = Caller(client=caller.client, terminal=terminal)
    return request.ctx.caller


def signed(*kinds: ClientKind, function: str | None = None, defer_nonce: bool = False):
    """Route decorator: the request must be signed by an approved client of one of ``kinds``.

    With ``defer_nonce`` the handler's service claims the request's nonce itself, in the
    same atomic step as its own first effect (``request.ctx.guard``, see access.RequestGuard):
    one round trip to the shared cache instead of two. Whatever the handler raises before
    that, the nonce is claimed first, so refusals come in the usual order.
    """

    def decorator(handler):
        @wraps(handler)
        async def wrapper(request: Request, *args, **kwargs):
            if defer_nonce:
                try:
                    return await _with_deferred_nonce(request, handler, kinds, function, args, kwargs)
                except access.StaleGuard:
                    pass  # nothing took effect: check again on the current records, nonce first
            await authenticate(request, kinds, function)
            return await handler(request, *args, **kwargs)

        return openapi.secured("ehc_signature")(keep_openapi(wrapper, handler))

    return decorator


async def _with_deferred_nonce(request: Request, handler, kinds, function, args, kwargs):
    await authenticate(request, kinds, function, defer=True)
    guard: access.RequestGuard = request.ctx.guard
    try:
        response = await handler(request, *args, **kwargs)
    except access.StaleGuard:
        raise
    except Exception:
        if not guard.claimed:  # also when the service found the nonce used: refused and logged here
            await _claim(request, guard)
        raise
    if not guard.claimed:
        raise RuntimeError(f"{handler.__name__} answered without claiming the request's nonce")
    return response


async def _claim(request: Request, guard: access.RequestGuard) -> None:
    try:
        await access.claim(request.app.ctx.rt, guard)
    except errors.ReplayedRequest as exc:
        _log_refusal(request, exc)
        raise
