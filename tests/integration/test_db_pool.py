"""Pooled PostgreSQL connections come back clean without asyncpg's four-statement reset, and
idle ones come back at once (cardcore.pgclient)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from tortoise import connections

from cardcore import pgclient
from cardcore.db import tortoise_config
from tests.conftest import TEST_DATABASE_URL

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="PostgreSQL connection pool only")


async def test_the_platform_pool_uses_the_configured_reset(rt):
    client = connections.get("default")
    async with client.acquire_connection():
        pass  # the pool exists once a connection was taken
    reset = tortoise_config(TEST_DATABASE_URL)["connections"]["default"]["credentials"]["reset"]
    assert client._pool._reset is reset


@pytest.fixture
async def one_connection():
    """The platform's client with a single connection, so that each acquire gets the same one back."""
    credentials = tortoise_config(TEST_DATABASE_URL)["connections"]["default"]["credentials"]
    client = pgclient.Client(connection_name="pool_probe", **{**credentials, "minsize": 1, "maxsize": 1})
    await client.create_connection(with_db=True)
    assert type(client._pool) is pgclient.Pool
    try:
        yield client
    finally:
        await client.close()


async def test_the_platform_engine_is_tortoises_client_on_the_quicker_pool(rt):
    assert tortoise_config(TEST_DATABASE_URL)["connections"]["default"]["engine"] == "cardcore.pgclient"
    client = connections.get("default")
    async with client.acquire_connection():
        pass
    assert type(client._pool) is pgclient.Pool


async def test_a_connection_released_inside_a_transaction_comes_back_rolled_back(one_connection):
    pool = one_connection._pool
    async with pool.acquire() as connection:
        server_pid = connection.get_server_pid()
        await connection.execute("BEGIN")
        await connection.execute("CREATE TEMP TABLE pool_probe (n int)")
        assert connection.is_in_transaction()
    # Released mid-transaction, as a cancelled request leaves it.
    async with pool.acquire() as again:
        assert again.get_server_pid() == server_pid
        assert not again.is_in_transaction()
        # The table existed only inside the rolled-back transaction.
        assert await again.fetchval("SELECT to_regclass('pg_temp.pool_probe')") is None


async def test_an_idle_connection_is_released_at_once_and_only_once(one_connection):
    client = one_connection
    pool = client._pool
    connection = await pool.acquire()
    server_pid = connection.get_server_pid()
    assert await connection.fetchval("SELECT 41 + 1") == 42
    release = pool.release(connection)
    with pytest.raises(StopIteration):  # finished without waiting for anything
        release.send(None)
    with pytest.raises(asyncpg.InterfaceError):  # the caller's handle is detached
        await connection.fetchval("SELECT 1")
    await pool.release(connection)  # a second release changes nothing
    async with pool.acquire() as again:
        assert again.get_server_pid() == server_pid
        assert await again.fetchval("SELECT 1") == 1
    # Tortoise's own path: statements one after another on the single connection.
    for n in range(20):
        assert (await client.execute_query("SELECT $1::int AS n", [n]))[1][0]["n"] == n


async def test_a_connection_whose_statement_was_cancelled_comes_back_usable(one_connection):
    """A request cancelled mid-statement (a client gone, a timeout) releases a connection
    whose cancellation is still under way; the next one to take it can use it."""
    pool = one_connection._pool

    async def slow() -> None:
        async with pool.acquire() as connection:
            await connection.execute("SELECT pg_sleep(10)")

    task = asyncio.ensure_future(slow())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with pool.acquire() as again:
        assert await asyncio.wait_for(again.fetchval("SELECT 7"), 5) == 7
        assert not again.is_in_transaction()


async def test_a_connection_asyncpg_must_replace_is_closed_on_release(one_connection):
    pool = one_connection._pool
    async with pool.acquire() as connection:
        server_pid, underlying = connection.get_server_pid(), connection._con
        await pool.expire_connections()  # as after a failover: connections in use close on release
    assert underlying.is_closed()
    async with pool.acquire() as connection:
        assert connection.get_server_pid() != server_pid


async def test_the_pool_size_comes_from_the_database_url():
    """README: each worker keeps 5 connections unless ``?maxsize=`` says otherwise."""
    for url, size in ((TEST_DATABASE_URL, 5), (f"{TEST_DATABASE_URL}?maxsize=3", 3)):
        credentials = tortoise_config(url)["connections"]["default"]["credentials"]
        client = pgclient.Client(connection_name="pool_probe", **credentials)
        await client.create_connection(with_db=True)
        try:
            assert client._pool.get_max_size() == size
        finally:
            await client.close()


async def test_background_work_keeps_its_own_connections_whatever_the_pool_size():
    """cardcore.db.background_transaction: two connections apart from the requests' pool."""
    from cardcore import db

    reset = tortoise_config(TEST_DATABASE_URL)["connections"]["default"]["credentials"]["reset"]
    for url in (TEST_DATABASE_URL, f"{TEST_DATABASE_URL}?minsize=3&maxsize=8"):
        client = db._background_client(url)
        await client.create_connection(with_db=True)
        try:
            assert client._pool.get_max_size() == db.BACKGROUND_CONNECTIONS == 2
            assert client._pool._reset is reset
            assert type(client._pool) is pgclient.Pool
        finally:
            await client.close()
    assert db._background_client("sqlite://:memory:") is None
