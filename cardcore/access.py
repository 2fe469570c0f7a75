"""Access management service (SPEC §5): register, approve, disable, credentials, policy.

The signed-request check reads clients through ``client_for_auth``, which keeps a short
Redis copy of each client; every change here deletes that copy, so approval, disabling
and policy changes reach every worker on the next request.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from dataclasses import dataclass

from cardcore import errors
from cardcore.models import Client, ClientKind, ClientStatus
from cardcore.runtime import Runtime

ID_PREFIX = {
    ClientKind.institution: "ins",
    ClientKind.terminal: "trm",
    ClientKind.partner_app: "app",
    ClientKind.admin: "adm",
}

# Functions that an admin can switch off per client. Routes name the one they need.
FUNCTIONS = {
    "cards.register": "register cards at the counter (发码建档)",
    "cards.read": "read card accounts and print their labels",
    "cards.manage": "update, freeze, unfreeze and cancel card accounts",
    "codes.verify": "verify scanned codes",
    "usage.report": "report card usage",
    "terminals.manage": "register the institution's terminals",
    "cashier.orders": "create, read and close payment orders; download bills",
    "cashier.refunds": "refund paid orders",
    "cashier.micropay": "charge combined codes and payment codes at the counter",
    "access.manage": "approve and disable clients (admins)",
}

SCOPES = {
    "identity.full": "see unmasked identity numbers and phones in verification results",
}


def _cache_key(client_id: str) -> str:
    return f"client:{client_id}"


@dataclass(frozen=True)
class AuthClient:
    """What the request check needs to know about a client."""

    client_id: str
    kind: ClientKind
    status: ClientStatus
    institution_id: str | None
    secret: str
    disabled_functions: frozenset[str]
    ip_allowlist: tuple[str, ...]
    scopes: frozenset[str]

    @property
    def active(self) -> bool:
        return self.status is ClientStatus.approved

    def allows_function(self, function: str) -> bool:
        return function not in self.disabled_functions

    def allows_ip(self, ip: str) -> bool:
        if not self.ip_allowlist:
            return True
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(net, strict=False) for net in self.ip_allowlist)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _validated_allowlist(entries: list[str]) -> list[str]:
    cleaned = []
    for entry in entries:
        try:
            cleaned.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            raise errors.ValidationFailed(f"not an IP address or network: {entry!r}") from None
    return cleaned


def _validated_functions(names: list[str]) -> list[str]:
    unknown = sorted(set(names) - FUNCTIONS.keys())
    if unknown:
        raise errors.ValidationFailed(f"unknown functions: {', '.join(unknown)}", details={"known": sorted(FUNCTIONS)})
    return sorted(set(names))


def _validated_scopes(names: list[str]) -> list[str]:
    unknown = sorted(set(names) - SCOPES.keys())
    if unknown:
        raise errors.ValidationFailed(f"unknown scopes: {', '.join(unknown)}", details={"known": sorted(SCOPES)})
    return sorted(set(names))


async def register_client(
    rt: Runtime,
    kind: ClientKind,
    name: str,
    *,
    institution_id: str | None = None,
    ip_allowlist: list[str] | None = None,
    status: ClientStatus = ClientStatus.pending,
    client_id: str | None = None,
    secret: str | None = None,
) -> tuple[Client, str]:
    """Create a client waiting for approval; returns it with its secret (shown once)."""
    if kind is ClientKind.terminal:
        if not institution_id:
            raise errors.ValidationFailed("a terminal belongs to an institution")
        institution = await Client.get_or_none(client_id=institution_id, kind=ClientKind.institution)
        if institution is None:
            raise errors.NotFound("institution not found")
    elif institution_id:
        raise errors.ValidationFailed("only terminals belong to an institution")
    secret = secret or new_secret()
    client = await Client.create(
        client_id=client_id or f"{ID_PREFIX[kind]}_{secrets.token_hex(8)}",
        kind=kind,
        name=name,
        status=status,
        institution_id=institution_id,
        secret_sealed=rt.vault.encrypt_text(secret),
        ip_allowlist=_validated_allowlist(ip_allowlist or []),
    )
    await rt.redis.delete(_cache_key(client.client_id))
    return client, secret


async def get_client(client_id: str, kind: ClientKind | None = None) -> Client:
    query = {"client_id": client_id}
    if kind is not None:
        query["kind"] = kind
    client = await Client.get_or_none(**query)
    if client is None:
        raise errors.NotFound("client not found")
    return client


async def list_clients(
    kind: ClientKind,
    *,
    limit: int,
    cursor: str | None = None,
    status: ClientStatus | None = None,
    institution_id: str | None = None,
) -> tuple[list[Client], str | None]:
    query = Client.filter(kind=kind).order_by("client_id")
    if status is not None:
        query = query.filter(status=status)
    if institution_id is not None:
        query = query.filter(institution_id=institution_id)
    if cursor:
        query = query.filter(client_id__gt=cursor)
    rows = await query.limit(limit + 1)
    next_cursor = rows[limit - 1].client_id if len(rows) > limit else None
    return rows[:limit], next_cursor


async def _changed(rt: Runtime, client: Client) -> Client:
    await client.save()
    await rt.redis.delete(_cache_key(client.client_id))
    return client


async def set_status(rt: Runtime, client_id: str, kind: ClientKind, status: ClientStatus, reason: str = "") -> Client:
    client = await get_client(client_id, kind)
    client.status = status
    client.status_reason = reason
    return await _changed(rt, client)


async def rotate_secret(rt: Runtime, client_id: str, kind: ClientKind) -> tuple[Client, str]:
    client = await get_client(client_id, kind)
    secret = new_secret()
    client.secret_sealed = rt.vault.encrypt_text(secret)
    return await _changed(rt, client), secret


async def update_policy(
    rt: Runtime,
    client_id: str,
    kind: ClientKind,
    *,
    disabled_functions: list[str] | None = None,
    ip_allowlist: list[str] | None = None,
    scopes: list[str] | None = None,
) -> Client:
    client = await get_client(client_id, kind)
    if disabled_functions is not None:
        client.disabled_functions = _validated_functions(disabled_functions)
    if ip_allowlist is not None:
        client.ip_allowlist = _validated_allowlist(ip_allowlist)
    if scopes is not None:
        client.scopes = _validated_scopes(scopes)
    return await _changed(rt, client)


async def client_for_auth(rt: Runtime, client_id: str) -> AuthClient | None:
    """The client behind a signed request, from the Redis copy or the database."""
    if not client_id or len(client_id) > 40:
        return None
    key = _cache_key(client_id)
    cached = await rt.redis.get(key)
    if cached is not None:
        record = json.loads(cached)
        if record is None:
            return None
    else:
        client = await Client.get_or_none(client_id=client_id)
        record = None if client is None else {
            "client_id": client.client_id,
            "kind": client.kind.value,
            "status": client.status.value,
            "institution_id": client.institution_id,
            "secret_sealed": client.secret_sealed,
            "disabled_functions": client.disabled_functions,
            "ip_allowlist": client.ip_allowlist,
            "scopes": client.scopes,
        }
        # Unknown ids are remembered too, so a flood of them does not reach the database.
        await rt.redis.set(key, json.dumps(record), ex=rt.settings.client_cache_ttl_s)
        if record is None:
            return None
    return AuthClient(
        client_id=record["client_id"],
        kind=ClientKind(record["kind"]),
        status=ClientStatus(record["status"]),
        institution_id=record["institution_id"],
        secret=rt.vault.decrypt_text(record["secret_sealed"]),
        disabled_functions=frozenset(record["disabled_functions"]),
        ip_allowlist=tuple(record["ip_allowlist"]),
        scopes=frozenset(record["scopes"]),
    )
