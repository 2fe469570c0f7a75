"""The shared-cache tools of cardcore.cache: stamped records with worker copies, and Lua
scripts sent together. "Another worker" is a second Runtime on the same shared cache."""

import asyncio

import pytest
from redis.exceptions import DataError, RedisError

from cardcore import cache
from cardcore.runtime import Runtime


def records_reading(source: dict, gate: asyncio.Event | None = None) -> cache.StampedRecords:
    async def read(rt, record_id: str) -> bytes:
        value = source[record_id]
        if gate is not None:
            await gate.wait()
        return value

    return cache.StampedRecords("test-record:", ttl_s=60, read=read, decode=lambda rt, payload: payload.decode())


async def test_a_worker_that_read_the_database_before_a_change_cannot_store_what_it_read(rt):
    source = {"a": b"old"}
    gate = asyncio.Event()
    records = records_reading(source, gate)
    await rt.redis.delete(records.key("a"))
    slow_reader = asyncio.create_task(records.current(rt, "a"))
    await asyncio.sleep(0.05)  # it has read "old" and waits
    source["a"] = b"new"
    await records.changed(rt, "a")  # the change commits and replaces the stamp
    gate.set()
    got = await slow_reader
    assert got.value == "new"  # it read again instead of storing what it read first
    assert (await records.current(rt, "a")).value == "new"
    other_worker = Runtime(settings=rt.settings, vault=rt.vault, redis=rt.redis)
    assert (await records.current(other_worker, "a")).value == "new"


async def test_the_first_read_after_a_change_stores_the_record_under_the_changes_stamp(rt):
    source = {"b": b"one"}
    records = records_reading(source)
    await records.current(rt, "b")
    source["b"] = b"two"
    await records.changed(rt, "b")
    tombstone = await rt.redis.get(records.key("b"))
    assert len(tombstone) == cache.STAMP_LENGTH
    first = await records.current(rt, "b")
    assert first.value == "two" and first.stamp == tombstone.decode()
    assert await rt.redis.get(records.key("b")) == tombstone + b"two"
    source["b"] = b"not read again"
    other_worker = Runtime(settings=rt.settings, vault=rt.vault, redis=rt.redis)
    assert (await records.current(other_worker, "b")).value == "two"  # from the shared cache


async def test_local_copies_are_bounded_and_expire(rt):
    copies = cache.LocalCopies(max_entries=3)
    for n in range(5):
        copies.put(cache.Stamped(f"k{n}", "s", n))
    assert [copies.get(f"k{n}", 60) for n in range(5)][:2] == [None, None]
    assert copies.get("k4", 60).value == 4
    assert copies.get("k4", -1) is None  # older than allowed: gone


async def test_scripts_called_together_travel_together_and_survive_a_script_flush(rt, monkeypatch):
    script = cache.LuaScript("return redis.call('INCR', KEYS[1])")
    await rt.redis.delete("test-script-counter")
    await rt.redis.script_flush()
    results = await asyncio.gather(*(script(rt.redis, ["test-script-counter"], []) for _ in range(10)))
    assert sorted(results) == list(range(1, 11))
    if not cache.pipelines_scripts(rt.redis):
        return  # the in-process cache runs each call on its own

    writes = []
    real_write = cache._ScriptChannel._write

    def counting_write(transport, packed):
        writes.append(packed)
        real_write(transport, packed)

    monkeypatch.setattr(cache._ScriptChannel, "_write", staticmethod(counting_write))
    results = await asyncio.gather(*(script(rt.redis, ["test-script-counter"], []) for _ in range(10)))
    assert sorted(results) == list(range(11, 21))
    assert len(writes) == 1  # all ten calls in one write, their answers each to its caller


async def _close_from_our_side(rt, channel) -> None:
    await channel._connection.disconnect()


async def _close_from_redis(rt, channel) -> None:
    host, port = channel._transport.get_extra_info("sockname")[:2]
    assert await rt.redis.client_kill(f"{host}:{port}")


@pytest.mark.parametrize("lose", [_close_from_our_side, _close_from_redis])
async def test_a_lost_connection_fails_or_answers_every_call_and_the_channel_reconnects(rt, lose):
    if not cache.pipelines_scripts(rt.redis):
        pytest.skip("the in-process cache has no connection to lose")
    script = cache.LuaScript("return redis.call('INCR', KEYS[1])")
    await rt.redis.delete("test-script-reconnect")
    assert await script(rt.redis, ["test-script-reconnect"], []) == 1
    await lose(rt, cache._channels[rt.redis])
    calls = (script(rt.redis, ["test-script-reconnect"], []) for _ in range(3))
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=10)
    assert all(isinstance(outcome, (int, RedisError)) for outcome in outcomes), outcomes  # none hangs
    counted = await script(rt.redis, ["test-script-reconnect"], [])
    assert counted == int(await rt.redis.get("test-script-reconnect"))


async def test_calls_queued_as_the_connection_closes_go_out_on_the_next_one(rt):
    if not cache.pipelines_scripts(rt.redis):
        pytest.skip("the in-process cache has no connection to close")
    script = cache.LuaScript("return redis.call('INCR', KEYS[1])")
    await rt.redis.delete("test-script-closing")
    assert await script(rt.redis, ["test-script-closing"], []) == 1
    calls = [asyncio.ensure_future(script(rt.redis, ["test-script-closing"], [])) for _ in range(3)]
    await asyncio.sleep(0)  # the three are queued for this turn's write
    cache._channels[rt.redis]._transport.close()  # closes before that write; connection_lost comes after it
    assert sorted(await asyncio.wait_for(asyncio.gather(*calls), timeout=10)) == [2, 3, 4]


async def test_closing_a_client_with_a_script_channel_does_not_wait_forever(rt):
    if not cache.pipelines_scripts(rt.redis):
        pytest.skip("the in-process cache has no connection to close")
    client = cache.create_redis(rt.settings.redis_url)
    assert await cache.LuaScript("return 7")(client, [], []) == 7
    await asyncio.wait_for(client.aclose(), timeout=5)  # the pool closes the channel's connection too


async def test_a_caller_that_gives_up_does_not_take_the_next_callers_answer(rt):
    script = cache.LuaScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await rt.redis.delete("test-script-order")
    assert await script(rt.redis, ["test-script-order"], [0]) == 0  # loaded
    impatient = asyncio.ensure_future(script(rt.redis, ["test-script-order"], [100]))
    patient = asyncio.ensure_future(script(rt.redis, ["test-script-order"], [1]))
    await asyncio.sleep(0)  # both calls are queued for the same write
    impatient.cancel()
    assert await patient == 101  # the first script still ran; its answer went to nobody
    assert await script(rt.redis, ["test-script-order"], [0]) == 101


async def test_a_call_with_an_argument_redis_cannot_take_fails_alone(rt):
    script = cache.LuaScript("return redis.call('INCR', KEYS[1])")
    await rt.redis.delete("test-script-bad-argument")
    calls = (script(rt.redis, ["test-script-bad-argument"], args) for args in ([], [None], []))
    first, bad, last = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(bad, DataError)
    assert sorted([first, last]) == [1, 2]


async def test_a_script_called_alone_survives_a_script_flush_too(rt):
    script = cache.LuaScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await rt.redis.delete("test-script-alone")
    await rt.redis.script_flush()
    assert await script(rt.redis, ["test-script-alone"], [5]) == 5
    assert await script(rt.redis, ["test-script-alone"], [2]) == 7


async def test_a_keyed_command_answers_as_redis_does(rt):
    key = "test-keyed-command"
    await rt.redis.delete(key)
    value = bytes(range(256))  # any bytes, as stamped records carry
    assert await cache.keyed_command(rt.redis, "GET", key) is None
    assert await cache.keyed_command(rt.redis, "SET", key, value, "NX", "EX", 60)
    assert await cache.keyed_command(rt.redis, "SET", key, b"other", "NX", "EX", 60) is None
    assert await rt.redis.get(key) == value and 0 < await rt.redis.ttl(key) <= 60
    answers = await asyncio.gather(*(cache.keyed_command(rt.redis, "INCR", f"{key}:n") for _ in range(5)))
    assert sorted(answers) == [1, 2, 3, 4, 5]
    assert await cache.keyed_command(rt.redis, "GETDEL", key) == value
    assert await rt.redis.get(key) is None
    await rt.redis.delete(f"{key}:n")
