"""Pooled PostgreSQL connections come back clean without asyncpg's four-statement reset."""

from __future__ import annotations

import asyncpg
import pytest
from tortoise import connections

from cardcore.db import tortoise_config
from tests.conftest import TEST_DATABASE_URL

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="PostgreSQL connection pool only")


async def test_the_platform_pool_uses_the_configured_reset(rt):
    client = connections.get("default")
    async with client.acquire_connection():
        pass  # the pool exists once a connection was taken
    reset = tortoise_config(TEST_DATABASE_URL)["connections"]["default"]["credentials"]["reset"]
    assert client._pool._reset is reset


async def test_a_connection_released_inside_a_transaction_comes_back_rolled_back():
    reset = tortoise_config(TEST_DATABASE_URL)["connections"]["default"]["credentials"]["reset"]
    # One connection, so the second acquire gets the same one back.
    pool = await asyncpg.create_pool(TEST_DATABASE_URL, min_size=1, max_size=1, reset=reset)
    try:
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
    finally:
        await pool.close()


async def test_the_pool_size_comes_from_the_database_url():
    """README: each worker keeps 5 connections unless ``?maxsize=`` says otherwise."""
    from tortoise.backends.asyncpg import AsyncpgDBClient

    for url, size in ((TEST_DATABASE_URL, 5), (f"{TEST_DATABASE_URL}?maxsize=3", 3)):
        credentials = tortoise_config(url)["connections"]["default"]["credentials"]
        client = AsyncpgDBClient(connection_name="pool_probe", **credentials)
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
        finally:
            await client.close()
    assert db._background_client("sqlite://:memory:") is None
