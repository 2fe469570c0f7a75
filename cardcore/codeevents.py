"""The record of every code issued and verified, written through a queue in the shared cache.

An event is appended to a Redis stream in the same step that settles the outcome (for a
dynamic code, inside the script that spends it), so an answered verification always has
its event, even when the worker dies right after answering. Every server worker drains
the stream into the ``code_event`` table in batches (``EventFlusher``); entries leave the
stream only after their rows are committed, so a flusher that dies mid-way loses nothing:
the next one writes the same entries again. Each event carries a ``uid`` given when it is
queued and the table holds it under a unique constraint, so writing an entry twice leaves
one row. Whoever reads the table calls ``flush`` first: an event is queryable as soon as
its verification has been answered.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime, timezone

import ujson
from pypika_tortoise.terms import Parameter

from cardcore.audit import Actor
from cardcore.cache import keyed_command
from cardcore.models import CodeEvent

log = logging.getLogger("ehc.codeevents")

STREAM = "codeevents"
DEAD_STREAM = "codeevents:unreadable"
FLUSH_LOCK = "codeevents:flushing"
BATCH = 1000
MAX_BATCHES_PER_FLUSH = 50


def event_fields(action: str, actor: Actor, code_type: str, scene: str, health_card_id: str | None) -> bytes:
    """Everything an event records except its result, as the queue carries it: a JSON
    array in ``_EVENT_FIELDS`` order (shorter to write, keep and read back than an object,
    once for every verification)."""
    now_ns = time.time_ns()
    return ujson.dumps(
        [
            # A key for writing the row once, not a secret: the time first, so that the
            # unique index grows at its end (random keys cost PostgreSQL 13–17 µs a row
            # against 11, and scatter writes over the index as the table grows), then 64
            # bits from the fast generator, which spares a getrandom() call per event
            # (each process seeds it from the OS, forks reseed).
            f"{now_ns:016x}{random.getrandbits(64):016x}",
            now_ns / 1e9,
            action,
            health_card_id if health_card_id and len(health_card_id) == 64 else None,
            code_type,
            scene,
            actor.client_id,
            actor.institution_id,
            actor.terminal_id,
        ]
    ).encode()


async def enqueue(rt, action: str, actor: Actor, code_type: str, scene: str, result: str, health_card_id: str | None) -> None:
    """Queue one event (scripts that settle an outcome append theirs themselves)."""
    await rt.redis.xadd(STREAM, {"event": event_fields(action, actor, code_type, scene, health_card_id), "result": result})


# The columns a queued event fills, in the order of _row.
_COLUMNS = (
    "uid", "action", "health_card_id", "code_type", "scene", "result",
    "client_id", "institution_id", "terminal_id", "created_at",
)  # fmt: skip
# What event_fields writes, in order; queues written before it wrote arrays hold objects.
_EVENT_FIELDS = (
    "uid", "at", "action", "health_card_id", "code_type", "scene", "client_id", "institution_id", "terminal_id",
)  # fmt: skip


def _row(event_json: bytes, result: bytes) -> tuple:
    event = ujson.loads(event_json)
    if type(event) is dict:
        event = [event[name] for name in _EVENT_FIELDS]
    uid, at, action, health_card_id, code_type, scene, client_id, institution_id, terminal_id = event
    return (
        uid, action, health_card_id, code_type, scene, result.decode(),
        client_id, institution_id, terminal_id, datetime.fromtimestamp(at, timezone.utc),
    )  # fmt: skip


# PostgreSQL's fallback takes a batch as one array per column (unnest), in one statement:
# a row at a time (executemany) cost it about a third more. The arrays' types, in _COLUMNS order:
_POSTGRES_ARRAY_TYPES = tuple("timestamptz" if name == "created_at" else "varchar" for name in _COLUMNS)


def _batch_writer(connection):
    """``write(rows)``: the batch of events written once, in the connection's dialect.

    On PostgreSQL through asyncpg, a binary COPY of the batch: against INSERT … SELECT
    unnest(…) ON CONFLICT DO NOTHING it cost PostgreSQL 10 µs a row instead of 13.5, and
    the worker 1.4 µs instead of 4.9. COPY knows no ON CONFLICT: when some of the batch was
    written before (a flusher stopped before removing its entries, or two flushing at
    once), the COPY fails as a whole and the INSERT writes the rows that are missing.
    Elsewhere that INSERT, or the ORM's bulk-insert statement, fed plain tuples: making a
    model object per event cost three times the insert itself.
    """
    if connection.capabilities.dialect == "postgres":
        from asyncpg import UniqueViolationError

        table = CodeEvent._meta.db_table
        columns = ", ".join(f'"{name}"' for name in _COLUMNS)
        arrays = ", ".join(f"${i + 1}::{kind}[]" for i, kind in enumerate(_POSTGRES_ARRAY_TYPES))
        insert = f'INSERT INTO "{table}" ({columns}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING'

        async def write(rows: list[tuple]) -> None:
            async with connection.acquire_connection() as raw:
                copy = getattr(raw, "copy_records_to_table", None)  # asyncpg's; not every driver has it
                if copy is not None:
                    try:
                        async with raw.transaction():  # a savepoint when the caller's transaction is open
                            await copy(table, records=rows, columns=_COLUMNS)
                        return
                    except UniqueViolationError:
                        pass
            await connection.execute_query(insert, [list(column) for column in zip(*rows)])

        return write
    query = (
        connection.query_class.into(CodeEvent._meta.basetable)
        .columns(*_COLUMNS)
        .insert(*(Parameter(idx=i + 1) for i in range(len(_COLUMNS))))
    )
    sql = query.on_conflict().do_nothing().get_sql()
    return lambda rows: connection.execute_many(sql, rows)


async def flush(rt) -> int:
    """Write queued events to the database; returns how many were written."""
    written = 0
    write = None
    for _ in range(MAX_BATCHES_PER_FLUSH):
        # The entries as Redis sends them, [[id, [b"event", …, b"result", …]], …]: redis-py's
        # own XRANGE turns each into a dict first.
        entries = await keyed_command(rt.redis, "XRANGE", STREAM, "-", "+", "COUNT", BATCH)
        if not entries:
            break
        rows = []
        for entry_id, fields in entries:
            try:
                if len(fields) != 4 or fields[0] != b"event" or fields[2] != b"result":
                    raise ValueError("not an event entry")
                rows.append(_row(fields[1], fields[3]))
            except (KeyError, TypeError, ValueError):
                log.error("unreadable code event set aside", extra={"entry": entry_id.decode()})
                await rt.redis.xadd(DEAD_STREAM, dict(zip(fields[::2], fields[1::2])) or {"entry": entry_id})
        if rows:
            write = write or _batch_writer(CodeEvent._meta.db)
            await write(rows)
        await _remove_through(rt, entries[-1][0])
        written += len(rows)
        if len(entries) < BATCH:
            break
    return written


async def _remove_through(rt, last_id: bytes) -> None:
    """Take the entries up to ``last_id`` off the queue, once their rows are committed.

    Stream ids only grow, so every entry below the next id was in the batch just read
    (or was removed already by a flusher that read it too). Trimming by id drops whole
    blocks of the stream; deleting a thousand ids one by one cost Redis ten times more.
    """
    milliseconds, sequence = last_id.split(b"-")
    await keyed_command(rt.redis, "XTRIM", STREAM, "MINID", b"%s-%d" % (milliseconds, int(sequence) + 1))


async def pending(rt) -> int:
    """Events queued and not yet written."""
    return await rt.redis.xlen(STREAM)


class EventFlusher:
    """Drains the queue every ``interval_s`` in the background of one server worker.

    Workers take turns through a short lock in the shared cache, so one of them writes
    each batch; ``stop`` writes whatever is left.
    """

    def __init__(self, rt, interval_s: float) -> None:
        self._rt = rt
        self._interval_s = interval_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> "EventFlusher":
        self._task = asyncio.get_running_loop().create_task(self._run(), name="code-event-flusher")
        return self

    async def _run(self) -> None:
        lock_ms = max(1, int(self._interval_s * 1000))
        while not self._stopping.is_set():
            try:
                if await self._rt.redis.set(FLUSH_LOCK, b"1", nx=True, px=lock_ms):
                    await flush(self._rt)
            except Exception:  # the database or cache is away: the events wait in the queue
                log.exception("code events could not be written yet")
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        try:
            await flush(self._rt)
        except Exception:
            log.exception("code events left in the queue at shutdown; the next worker writes them")
