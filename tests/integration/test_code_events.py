"""The record of code issuance and verification, written through a queue (cardcore.codeevents)."""

import asyncio
import secrets

import pytest
from tortoise import connections

from cardcore import codeevents
from cardcore.audit import Actor
from cardcore.models import CodeEvent
from tests.factories import resident
from tests.integration.test_access import assert_refused

ACTOR = Actor(client_id="trm_queue", institution_id="ins_queue", terminal_id="trm_queue")


def card_id() -> str:
    return secrets.token_hex(32).upper()


async def queue_events(rt, count: int, result: str = "ok") -> list[str]:
    ids = [card_id() for _ in range(count)]
    for health_card_id in ids:
        await codeevents.enqueue(rt, "verify", ACTOR, "dynamic", "pharmacy", result, health_card_id)
    return ids


async def rows_for(ids: list[str]) -> list[CodeEvent]:
    return await CodeEvent.filter(health_card_id__in=ids).order_by("id")


@pytest.fixture
async def quiet_queue(rt):
    """An empty queue, with the server's own background flusher kept out of the way."""
    await codeevents.flush(rt)
    await rt.redis.set(codeevents.FLUSH_LOCK, b"1", px=60_000)
    yield
    await rt.redis.delete(codeevents.FLUSH_LOCK)


async def test_queued_events_are_written_with_every_field(rt, quiet_queue):
    ids = await queue_events(rt, 3, result="CODE_USED")
    assert await codeevents.pending(rt) == 3
    assert await codeevents.flush(rt) == 3
    assert await codeevents.pending(rt) == 0
    rows = await rows_for(ids)
    assert [r.health_card_id for r in rows] == ids  # in queue order
    first = rows[0]
    assert (first.action, first.code_type, first.scene, first.result) == ("verify", "dynamic", "pharmacy", "CODE_USED")
    assert (first.client_id, first.institution_id, first.terminal_id) == ("trm_queue", "ins_queue", "trm_queue")
    assert first.created_at is not None and len(first.uid) == 32
    assert [r.uid for r in rows] == sorted(r.uid for r in rows)  # keys grow with time: the unique index fills at its end


async def test_a_flusher_that_fails_to_write_loses_nothing(rt, quiet_queue, monkeypatch):
    ids = await queue_events(rt, 5)
    connection = connections.get("default")

    def database_away(*args, **kwargs):
        raise ConnectionError("database went away")

    with monkeypatch.context() as patch:
        # The batch is copied through a connection of the pool (PostgreSQL) or inserted.
        for method in ("acquire_connection", "execute_many", "execute_query"):
            patch.setattr(type(connection), method, database_away)
        with pytest.raises(ConnectionError):
            await codeevents.flush(rt)
    assert await codeevents.pending(rt) == 5
    assert await rows_for(ids) == []
    assert await codeevents.flush(rt) == 5
    assert len(await rows_for(ids)) == 5


async def test_a_flusher_stopped_between_insert_and_removal_writes_no_duplicate(rt, quiet_queue, monkeypatch):
    ids = await queue_events(rt, 4)

    async def stopped(*args, **kwargs):
        raise asyncio.CancelledError()

    with monkeypatch.context() as patch:
        patch.setattr(codeevents, "_remove_through", stopped)
        with pytest.raises(asyncio.CancelledError):
            await codeevents.flush(rt)
    assert len(await rows_for(ids)) == 4  # written, but still queued
    assert await codeevents.pending(rt) == 4
    await codeevents.flush(rt)  # the next flusher writes the same entries again
    assert await codeevents.pending(rt) == 0
    assert len(await rows_for(ids)) == 4


async def test_on_postgresql_a_batch_is_copied_and_inserted_only_when_some_was_written_before(
    rt, quiet_queue, monkeypatch
):
    connection = connections.get("default")
    if connection.capabilities.dialect != "postgres":
        pytest.skip("COPY is PostgreSQL's")
    inserts = []
    insert = type(connection).execute_query  # the ORM's reads go through it as well

    async def counted_insert(self, sql, values=None):
        if sql.startswith("INSERT"):
            inserts.append(sql)
        return await insert(self, sql, values)

    monkeypatch.setattr(type(connection), "execute_query", counted_insert)
    ids = await queue_events(rt, 6)
    assert await codeevents.flush(rt) == 6
    assert inserts == []  # copied
    assert len(await rows_for(ids)) == 6

    # Three of the next batch are in the table already (a flusher stopped before removing
    # them): the COPY of the whole batch fails and leaves nothing, the INSERT adds the rest.
    more = await queue_events(rt, 3)
    entries = await rt.redis.xrange(codeevents.STREAM)
    written = [codeevents._row(fields[b"event"], fields[b"result"]) for _, fields in entries]
    await codeevents._batch_writer(connection)(written)
    assert len(inserts) == 0 and len(await rows_for(more)) == 3
    newest = await queue_events(rt, 2)
    assert await codeevents.flush(rt) == 5
    assert len(inserts) == 1 and inserts[0].startswith('INSERT INTO "code_event"')
    rows = await rows_for(more + newest)
    assert sorted(r.health_card_id for r in rows) == sorted(more + newest)


async def test_concurrent_flushers_write_each_event_once(rt, quiet_queue):
    ids = await queue_events(rt, 30)
    await asyncio.gather(*(codeevents.flush(rt) for _ in range(4)))
    rows = await rows_for(ids)
    assert sorted(r.health_card_id for r in rows) == sorted(ids)
    assert len({r.uid for r in rows}) == 30


async def test_an_unreadable_entry_is_set_aside_and_blocks_nothing(rt, quiet_queue):
    await rt.redis.xadd(codeevents.STREAM, {"event": b"{not json", "result": b"ok"})
    ids = await queue_events(rt, 2)
    assert await codeevents.flush(rt) == 2
    assert await codeevents.pending(rt) == 0
    assert len(await rows_for(ids)) == 2
    assert any(fields[b"event"] == b"{not json" for _, fields in await rt.redis.xrange(codeevents.DEAD_STREAM))


async def test_events_queued_as_objects_before_an_upgrade_are_written_too(rt, quiet_queue):
    import ujson

    older = card_id()
    event = {
        "uid": secrets.token_hex(16), "at": 1_790_000_000.5, "action": "verify", "health_card_id": older,
        "code_type": "static", "scene": "pharmacy", "client_id": "trm_old", "institution_id": "ins_old", "terminal_id": None,
    }  # fmt: skip
    await rt.redis.xadd(codeevents.STREAM, {"event": ujson.dumps(event), "result": b"CARD_INACTIVE"})
    newer = await queue_events(rt, 1)
    assert await codeevents.flush(rt) == 2
    [row] = await rows_for([older])
    assert (row.uid, row.code_type, row.result, row.client_id, row.terminal_id) == (
        event["uid"], "static", "CARD_INACTIVE", "trm_old", None
    )
    assert row.created_at.timestamp() == 1_790_000_000.5
    assert len(await rows_for(newer)) == 1


async def test_an_entry_of_another_shape_is_set_aside(rt, quiet_queue):
    await rt.redis.xadd(codeevents.STREAM, {"result": b"ok", "event": b"[]"})
    await rt.redis.xadd(codeevents.STREAM, {"event": b'["uid", 1]', "result": b"ok"})
    ids = await queue_events(rt, 1)
    assert await codeevents.flush(rt) == 1
    assert await codeevents.pending(rt) == 0
    assert len(await rows_for(ids)) == 1
    assert len(await rt.redis.xrange(codeevents.DEAD_STREAM)) >= 2


async def test_the_background_flusher_writes_on_its_own_and_the_rest_when_stopped(rt, quiet_queue):
    await rt.redis.delete(codeevents.FLUSH_LOCK)
    flusher = codeevents.EventFlusher(rt, interval_s=0.02).start()
    try:
        ids = await queue_events(rt, 3)
        for _ in range(250):
            if len(await rows_for(ids)) == 3:
                break
            await asyncio.sleep(0.02)
        assert len(await rows_for(ids)) == 3
    finally:
        await flusher.stop()
    await rt.redis.set(codeevents.FLUSH_LOCK, b"1", px=60_000)  # keep the server's flusher off
    late = [card_id()]
    await codeevents.enqueue(rt, "issue", ACTOR, "dynamic", "", "ok", late[0])
    stopping = codeevents.EventFlusher(rt, interval_s=60)  # never ran: stop() still writes the queue
    await stopping.stop()
    assert len(await rows_for(late)) == 1


async def test_events_are_queryable_right_after_the_answer(rt, quiet_queue, institution, terminal):
    card = (await terminal.post("/inst/v1/cards", resident())).json()
    reply = await terminal.post("/inst/v1/codes/verify", {"qr_code_text": card["qr_code_text"], "scene": "registration"})
    assert reply.status_code == 200
    assert await codeevents.pending(rt) >= 1  # answered before it was written
    events = (await institution.get(f"/inst/v1/code-events?health_card_id={card['health_card_id']}")).json()["items"]
    assert [(e["action"], e["result"], e["terminal_id"]) for e in events] == [("verify", "ok", terminal.client_id)]


async def test_a_refused_verification_is_recorded_as_well(rt, quiet_queue, institution, terminal):
    assert_refused(
        await terminal.post("/inst/v1/codes/verify", {"qr_code_text": "F" * 64 + ":1", "scene": "registration"}),
        404,
        "CARD_NOT_FOUND",
    )
    events = (await institution.get(f"/inst/v1/code-events?health_card_id={'F' * 64}&limit=1")).json()["items"]
    assert events[0]["result"] == "CARD_NOT_FOUND" and events[0]["terminal_id"] == terminal.client_id
