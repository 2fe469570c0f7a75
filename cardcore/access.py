"""Access management service (SPEC §5): register, approve, disable, credentials, policy.

The signed-request check reads clients as stamped records (``cardcore.cache``): a short
copy in the shared cache, decoded once per worker. Every change here replaces the stamp,
and a request acts only after confirming, in the same atomic step that claims its nonce
(``claim``, or inside the script of the service that acts), that the records it was
checked against still carry the stamps it read. So approval, disabling, a new secret and
policy changes hold from the very next request on every worker.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from dataclasses import dataclass, field

from cardcore import errors
from cardcore.cache import STAMPS_CHECK_LUA, LuaScript, Stamped, StampedRecords
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
    # Prefixed so it never starts with "-": integrators pass secrets as command-line
    # arguments, where a leading dash reads as an option (one plain token in 64 did).
    return "sec_" + secrets.token_urlsafe(32)


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
    await CLIENT_RECORDS.changed(rt, client.client_id)
    return client, secret


async def get_client(client_id: str, kind: ClientKind | None = None) -> Client:
    if not _valid_client_id(client_id):
        raise errors.NotFound("client not found")
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
        if not _valid_client_id(cursor):
            raise errors.ValidationFailed("cursor is not one this API gave out")
        query = query.filter(client_id__gt=cursor)
    rows = await query.limit(limit + 1)
    next_cursor = rows[limit - 1].client_id if len(rows) > limit else None
    return rows[:limit], next_cursor


async def _changed(rt: Runtime, client: Client) -> Client:
    await client.save()
    await CLIENT_RECORDS.changed(rt, client.client_id)
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


async def _read_client(rt: Runtime, client_id: str) -> bytes:
    client = await Client.get_or_none(client_id=client_id)
    # Unknown ids are remembered too, so a flood of them does not reach the database.
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
    return json.dumps(record).encode()


def _decode_client(rt: Runtime, payload: bytes) -> AuthClient | None:
    record = json.loads(payload)
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


CLIENT_RECORDS: StampedRecords[AuthClient | None] = StampedRecords(
    "client:", ttl_s=lambda rt: rt.settings.client_cache_ttl_s, read=_read_client, decode=_decode_client
)


def _valid_client_id(client_id: str) -> bool:
    # The ids handed out are short printable ASCII. Anything else names no client, and a
    # header's undecodable bytes (surrogates) could not even be a cache key.
    return bool(client_id) and len(client_id) <= 40 and client_id.isascii() and client_id.isprintable()


async def client_for_auth(rt: Runtime, client_id: str) -> AuthClient | None:
    """The client behind a signed request as the shared cache holds it now."""
    if not _valid_client_id(client_id):
        return None
    return (await CLIENT_RECORDS.current(rt, client_id)).value


# --- the guard of a signed request ---------------------------------------------------------


class StaleGuard(Exception):
    """A record a request was checked against changed before the request took effect.

    Nothing happened yet: the caller checks the request again on current records.
    Not a PlatformError: it never reaches a client.
    """


@dataclass
class RequestGuard:
    """What a signed request was accepted on, confirmed atomically with its first effect.

    ``records`` are the stamped client records the checks read (possibly this worker's
    copies); ``claim`` (or a service's own script, see ``guard_keys``) confirms their stamps
    and takes the nonce in one step.
    """

    nonce_key: str
    nonce_ttl_s: int
    records: list[Stamped] = field(default_factory=list)
    claimed: bool = False

    async def client(self, rt: Runtime, client_id: str, *, current: bool) -> AuthClient | None:
        """A client record, remembered as one the request depends on."""
        if not _valid_client_id(client_id):
            return None
        read = CLIENT_RECORDS.current if current else CLIENT_RECORDS.cached
        record = await read(rt, client_id)
        self.records.append(record)
        return record.value

    def guard_keys(self, extra: list[Stamped] = ()) -> tuple[list, list]:
        """KEYS and ARGV for CLAIM_LUA's claim_request(n): the records (then ``extra``
        records a service checks along), then the nonce."""
        records = [*self.records, *extra]
        return [r.key for r in records] + [self.nonce_key], [r.stamp for r in records] + [self.nonce_ttl_s]

    def settle(self, rt: Runtime, outcome: int) -> None:
        """Act on claim_request's answer: stale record, replayed nonce, or claimed."""
        if outcome > 0:
            rt.copies.drop(self.records[outcome - 1].key)
            raise StaleGuard(self.records[outcome - 1].key)
        if outcome < 0:
            raise errors.ReplayedRequest()
        self.claimed = True


# Lua: claim_request(n): KEYS[1..n] records with expected stamps ARGV[1..n], KEYS[n+1] the
# nonce, ARGV[n+1] its lifetime in seconds. Returns the position of a changed record, -1 for
# a nonce already used, 0 when the nonce is now taken.
CLAIM_LUA = STAMPS_CHECK_LUA + """
local function claim_request(n)
  local stale = changed_record(n)
  if stale > 0 then
    return stale
  end
  if not redis.call('SET', KEYS[n + 1], '1', 'NX', 'EX', ARGV[n + 1]) then
    return -1
  end
  return 0
end
"""

_CLAIM = LuaScript(CLAIM_LUA + "return claim_request(#KEYS - 1)\n")


async def claim(rt: Runtime, guard: RequestGuard) -> None:
    """Confirm the records and take the nonce (StaleGuard / ReplayedRequest otherwise)."""
    keys, args = guard.guard_keys()
    guard.settle(rt, int(await _CLAIM(rt.redis, keys, args)))
