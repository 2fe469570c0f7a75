"""The shared cache: Redis in production, in-process fakeredis as the embedded default.

One-time codes, nonces, rate limits and lockouts live here, so every worker on every
host sees the same state. fakeredis is only correct for a single process; it runs the
Lua scripts below through lupa.

Two tools for the hot paths:

- ``LuaScript``: several reads and writes that must happen together or not at all, in
  one round trip (Redis runs a script atomically).
- ``StampedRecords``: copies of database records (a client, a card) kept in the shared
  cache for a while, each under a random *stamp* that changes with every write. A worker
  keeps the decoded copy in memory (``LocalCopies``) and may act on it only inside a
  script that first checks that the shared cache still holds the same stamp: a change
  made through any worker replaces the stamp, so the very next request anywhere sees it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import unquote

import hiredis
import redis.asyncio as redis
from redis._parsers.base import BaseParser
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError

T = TypeVar("T")

STAMP_LENGTH = 16  # hex characters in front of every stamped record


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def create_redis(redis_url: str) -> redis.Redis:
    """The shared cache: ``redis://`` (or ``rediss://``, ``unix://``) for one server,
    ``redis+sentinel://`` for a primary found and followed through Sentinel, nothing for
    an in-process fake (one process only)."""
    if not redis_url:
        import fakeredis

        return fakeredis.FakeAsyncRedis(decode_responses=False)
    scheme = redis_url.split("://", 1)[0]
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_primary(redis_url)
    connection_class = _FAST_PACKING.get(scheme)
    extra = {"connection_class": connection_class} if connection_class else {}
    return redis.from_url(redis_url, decode_responses=False, health_check_interval=30, **extra)


class _HiredisPacking:
    """Commands serialised by hiredis (C) instead of redis-py's Python packer, which costs
    about eight times as much for a script call with a dozen arguments. Only plain str,
    bytes and int arguments take that path (the other types redis-py formats or refuses
    its own way); whatever hiredis cannot pack goes to redis-py."""

    def pack_command(self, *args):
        # A command name with a space ("SCRIPT LOAD") is split by redis-py's packer.
        if " " not in str(args[0]) and all(type(arg) in _PLAIN for arg in args):
            try:
                return [hiredis.pack_command(args)]
            except (TypeError, UnicodeError):
                pass
        return super().pack_command(*args)


_PLAIN = frozenset((str, bytes, int))


class _Connection(_HiredisPacking, redis.Connection):
    pass


class _SentinelConnection(_HiredisPacking, SentinelManagedConnection):
    pass


_FAST_PACKING = {"redis": _Connection}  # rediss:// keeps redis-py's SSL class (from_url insists)


class SentinelAddress(NamedTuple):
    sentinels: list[tuple[str, int]]
    service: str
    db: int
    password: str | None
    tls: bool


def parse_sentinel_url(url: str) -> SentinelAddress:
    """``redis+sentinel://[:password@]host[:port][,host[:port]...]/service[/db]``; the
    password is the primary's (sentinels without one), ports default to 26379."""
    scheme, _, rest = url.partition("://")
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL ({' or '.join(SENTINEL_SCHEMES)}://)")
    location, _, path = rest.partition("/")
    userinfo, _, hosts = location.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) or None
    sentinels = []
    for host in filter(None, hosts.split(",")):
        name, _, port = host.partition(":")
        if not name or (port and not port.isdigit()):
            raise ValueError(f"bad sentinel address {host!r}")
        sentinels.append((name, int(port or 26379)))
    service, _, db = path.strip("/").partition("/")
    if not sentinels or not service or (db and not db.isdigit()):
        raise ValueError("a Sentinel URL names at least one sentinel and the service: redis+sentinel://host:26379/mymaster/0")
    return SentinelAddress(sentinels, service, int(db or 0), password, scheme.startswith("rediss"))


def _sentinel_primary(url: str) -> redis.Redis:
    from redis.asyncio.sentinel import Sentinel

    address = parse_sentinel_url(url)
    sentinel = Sentinel(
        address.sentinels, password=address.password, db=address.db, ssl=address.tls,
        decode_responses=False, health_check_interval=30,
    )  # fmt: skip
    return sentinel.master_for(address.service, connection_class=_SentinelConnection)


class LuaScript:
    """A Lua script the shared cache runs atomically (EVALSHA; loaded on first use).

    A worker's script calls travel on one connection of their own (``_ScriptChannel``):
    the calls made by concurrent requests in the same turn of the event loop go out in one
    write and their answers come back in order, without a round trip each or redis-py's
    per-command pool, pipeline and retry layers. Each script still runs on its own and
    atomically, in call order.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: redis.Redis, keys: list[str], args: list[Any]) -> Any:
        channel = _channels.get(client)
        if channel is None:
            channel = _channels[client] = _ScriptChannel(client) if pipelines_scripts(client) else _DirectCalls(client)
        try:
            return await channel.call(self.sha, keys, args)
        except NoScriptError:  # a restarted or flushed cache: load the script, then again
            await client.script_load(self.source)
            return await channel.call(self.sha, keys, args)


class _ScriptChannel:
    """Script calls on one connection taken from the client's pool (so authentication, the
    database, TLS and Sentinel's choice of primary are the pool's), pipelined.

    Calls wait for the end of the current event-loop turn and are written together. Once
    the pool has connected it, the connection's transport answers to ``_Replies``, which
    parses what Redis sends (hiredis) and hands each answer to the oldest caller still
    waiting for one, without a reader task or redis-py's per-read machinery. When the
    connection is lost, every call in flight fails with it and the next call takes a fresh
    connection.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client_ref = weakref.ref(client)  # _channels holds this per client, weakly
        self._outgoing: list[tuple[tuple, asyncio.Future]] = []
        self._in_flight: collections.deque[asyncio.Future] = collections.deque()
        self._connection = None
        self._transport: asyncio.Transport | None = None
        self._replies: _Replies | None = None
        self._opening: asyncio.Task | None = None

    def call(self, sha: str, keys: list, args: list) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._outgoing:
            loop.call_soon(self._flush)  # after every task that is ready in this turn
        self._outgoing.append((("EVALSHA", sha, len(keys), *keys, *args), future))
        return future

    def _flush(self) -> None:
        if not self._outgoing:
            return
        transport = self._transport
        if transport is not None and transport.is_closing():
            # Closed, and connection_lost not delivered yet: settle the calls in flight on
            # it now, so that none of them can take an answer from the next connection.
            self._lost(self._replies, None)
            return  # _lost flushes again
        if transport is None:
            if self._opening is None:
                self._opening = asyncio.get_running_loop().create_task(self._open())
            return  # _open flushes once connected
        calls, self._outgoing = self._outgoing, []
        pack = self._connection.pack_command  # hiredis where it can (_HiredisPacking)
        packed: list[bytes] = []
        for command, future in calls:
            try:
                packed += pack(*command)
            except Exception as exc:  # an argument Redis cannot take: that call only
                if not future.done():
                    future.set_exception(exc)
                continue
            self._in_flight.append(future)
        self._write(transport, packed)

    @staticmethod
    def _write(transport: asyncio.Transport, packed: list[bytes]) -> None:
        transport.writelines(packed)

    async def _open(self) -> None:
        try:
            client = self._client_ref()
            if client is None:
                raise RuntimeError("the shared-cache client was closed")
            connection = await client.connection_pool.get_connection()
            transport = connection._writer.transport  # connected, authenticated, database selected
            replies = _Replies(self, transport.get_protocol())
            transport.set_protocol(replies)
            self._connection, self._transport, self._replies = connection, transport, replies
        except BaseException as exc:  # no connection: the calls waiting for one fail
            calls, self._outgoing = self._outgoing, []
            for _, future in calls:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._opening = None
        self._flush()

    def _answer(self, answer: Any) -> None:
        if not self._in_flight:
            return  # nobody asked (cannot happen with a healthy connection)
        future = self._in_flight.popleft()
        if future.done():  # the caller gave up waiting
            return
        if isinstance(answer, Exception):  # a script's own error: its caller's
            future.set_exception(answer)
        else:
            future.set_result(answer)

    def _lost(self, replies: "_Replies", exc: BaseException | None) -> None:
        """The connection closed: fail what is in flight, give the connection back broken."""
        if replies is not self._replies:
            return
        error = RedisConnectionError(f"the shared-cache connection was lost: {exc or 'closed'}")
        waiting, self._in_flight = self._in_flight, collections.deque()
        for future in waiting:
            if not future.done():
                future.set_exception(error)
        connection, self._connection, self._transport, self._replies = self._connection, None, None, None
        loop = asyncio.get_running_loop()
        if connection is not None:
            loop.create_task(self._give_back(connection))
        if self._outgoing:  # calls made since the last write go out on a fresh connection
            loop.call_soon(self._flush)

    async def _give_back(self, connection) -> None:
        await connection.disconnect(nowait=True)
        client = self._client_ref()
        if client is not None:
            with contextlib.suppress(KeyError):  # the pool was reset and forgot it
                await client.connection_pool.release(connection)


class _Replies(asyncio.Protocol):
    """What Redis sends on a script channel's connection, parsed and handed to the channel.

    The stream protocol it replaces hears of the connection's end too, so that redis-py,
    closing the connection it still owns, is not left waiting for it.
    """

    def __init__(self, channel: _ScriptChannel, stream_protocol: asyncio.BaseProtocol) -> None:
        self._channel = channel
        self._stream_protocol = stream_protocol
        # Error replies become redis-py's exceptions (NoScriptError for NOSCRIPT, ...).
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)

    def data_received(self, data: bytes) -> None:
        if self._channel._replies is not self:
            return  # a connection the channel has given up: its answers went with it
        reader, answer = self._reader, self._channel._answer
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            answer(reply)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel._lost(self, exc)
        self._stream_protocol.connection_lost(exc)


class _DirectCalls:
    """The in-process cache's script calls: one EVALSHA each, nothing to save on the way."""

    def __init__(self, client: redis.Redis) -> None:
        self._client_ref = weakref.ref(client)

    def call(self, sha: str, keys: list, args: list) -> Awaitable:
        return self._client_ref().evalsha(sha, len(keys), *keys, *args)


def pipelines_scripts(client: redis.Redis) -> bool:
    """Whether ``client``'s script calls travel on a pipelined connection of their own (a
    Redis server), or each on its own (the in-process fake, which has no connection to
    save)."""
    from fakeredis import FakeAsyncRedis  # asked once per client, when its first script runs

    return not isinstance(client, FakeAsyncRedis)


_channels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_KEYED_COMMAND = LuaScript("return redis.call(ARGV[1], KEYS[1], unpack(ARGV, 2))")


def keyed_command(client: redis.Redis, command: str, key: str, *args: Any) -> Awaitable[Any]:
    """One command on one key (``GET``, ``SET … NX EX``…) sent the way scripts are.

    For the reads and writes of every request: on the script channel a command costs the
    worker a third of what redis-py's own call does (pool checkout, retries, a read per
    answer). Answers as a script's: nil is None, a status such as OK is truthy.
    """
    return _KEYED_COMMAND(client, [key], [command, *args])


# Lua: the stamp checks every script that acts on local copies starts with. KEYS[1..n]
# are the records, ARGV[1..n] their expected stamps; returns the position of the first
# record whose stamp changed (or that is gone), 0 when all are as expected.
STAMPS_CHECK_LUA = f"""
local function changed_record(n)
  for i = 1, n do
    -- Only the stamp, not the record: a missing record reads as '', which no stamp is.
    if redis.call('GETRANGE', KEYS[i], 0, {STAMP_LENGTH - 1}) ~= ARGV[i] then
      return i
    end
  end
  return 0
end
"""


# KEYS[1] a record, ARGV[1] the tombstone read from it, ARGV[2] the payload read from the
# database after, ARGV[3] the record's lifetime: the payload replaces the tombstone, under
# its stamp, unless the record changed again meanwhile.
_FILL_TOMBSTONE = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'EX', ARGV[3])
end
return 0
""")


class Stamped(NamedTuple, Generic[T]):
    """A decoded record and the stamp it was read under."""

    key: str
    stamp: str
    value: T


class LocalCopies:
    """A worker's decoded copies of stamped records, bounded in number and age."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._items: dict[str, tuple[float, Stamped]] = {}

    def get(self, key: str, max_age_s: float) -> Stamped | None:
        item = self._items.get(key)
        if item is None:
            return None
        if time.monotonic() - item[0] > max_age_s:
            self._items.pop(key, None)
            return None
        return item[1]

    def put(self, record: Stamped) -> None:
        items = self._items
        items.pop(record.key, None)
        while len(items) >= self.max_entries:
            items.pop(next(iter(items)))  # the oldest copy goes first
        items[record.key] = (time.monotonic(), record)

    def drop(self, key: str) -> None:
        self._items.pop(key, None)


class StampedRecords(Generic[T]):
    """One kind of stamped record: its key prefix, lifetime, and how it is read and decoded.

    The shared cache holds ``stamp ‖ payload`` for ``ttl_s``. A change writes a tombstone
    (a new stamp, empty payload) instead of deleting, so that a worker still holding data
    it read from the database before the change cannot put it back (it only ever adds a
    record with SET NX); the tombstone lives ``tombstone_s``, longer than any such read.
    """

    def __init__(
        self,
        prefix: str,
        *,
        ttl_s: int | Callable[[Any], int],
        tombstone_s: int = 60,
        read: Callable[[Any, str], Awaitable[bytes]],
        decode: Callable[[Any, bytes], T],
    ) -> None:
        self.prefix = prefix
        self._ttl_s = ttl_s if callable(ttl_s) else (lambda rt: ttl_s)  # seconds, possibly from rt's settings
        self.tombstone_s = tombstone_s
        self._read = read  # (rt, id) -> payload bytes from the database
        self._decode = decode  # (rt, payload) -> the worker's object

    def key(self, record_id: str) -> str:
        return f"{self.prefix}{record_id}"

    def local(self, rt, record_id: str) -> Stamped[T] | None:
        """The worker's copy, without any I/O. Act on it only behind a stamp check."""
        return rt.copies.get(self.key(record_id), self._ttl_s(rt))

    def forget(self, rt, record_id: str) -> None:
        rt.copies.drop(self.key(record_id))

    async def current(self, rt, record_id: str) -> Stamped[T]:
        """The record as the shared cache holds it now (reading the database when it has none)."""
        key, ttl_s = self.key(record_id), self._ttl_s(rt)
        for _ in range(5):
            raw = await keyed_command(rt.redis, "GET", key)
            if raw is not None:
                stamp = raw[:STAMP_LENGTH].decode()
                copy = rt.copies.get(key, ttl_s)
                if copy is not None and copy.stamp == stamp:
                    return copy
                if len(raw) > STAMP_LENGTH:
                    return self._keep(rt, Stamped(key, stamp, self._decode(rt, raw[STAMP_LENGTH:])))
                # A tombstone: the record changed a moment ago. What is read from the
                # database now is at least as new as that change, so it may stand under this
                # stamp, in this worker and (while the tombstone is still there) in the cache.
                payload = await self._read(rt, record_id)
                await _FILL_TOMBSTONE(rt.redis, [key], [raw, payload, ttl_s])
                return self._keep(rt, Stamped(key, stamp, self._decode(rt, payload)))
            payload = await self._read(rt, record_id)
            stamp = secrets.token_hex(STAMP_LENGTH // 2)
            if await keyed_command(rt.redis, "SET", key, stamp.encode() + payload, "NX", "EX", ttl_s):
                return self._keep(rt, Stamped(key, stamp, self._decode(rt, payload)))
            # Another worker stored it (or it changed) meanwhile: read that instead.
        raise RuntimeError(f"record {key} changes faster than it can be read")

    async def cached(self, rt, record_id: str) -> Stamped[T]:
        """The worker's copy when it has one (checked later, atomically), else ``current``."""
        return self.local(rt, record_id) or await self.current(rt, record_id)

    async def changed(self, rt, record_id: str) -> None:
        """Call after a change to the record is committed: every copy anywhere is now stale."""
        key = self.key(record_id)
        rt.copies.drop(key)
        await rt.redis.set(key, secrets.token_hex(STAMP_LENGTH // 2).encode(), ex=self.tombstone_s)

    def _keep(self, rt, record: Stamped[T]) -> Stamped[T]:
        rt.copies.put(record)
        return record
