"""The PostgreSQL engine the platform configures: Tortoise's asyncpg client on a pool that
gives back an idle connection at once.

asyncpg's ``Pool.release`` resets the connection in a task it shields, so that a cancelled
request cannot keep a connection out of the pool. With one release per statement, creating
and running that task took 7 % of a worker's CPU in the cashier benchmark (BENCHMARKS.md).
When there is nothing to reset (the connection is open, outside any transaction, not being
cancelled, not due to be replaced, with no listeners left), the release awaits nothing, so
nothing can interrupt it: it is done at once, in the caller, as asyncpg would finish it.
Every other release takes asyncpg's own path.

The attributes read here are asyncpg's (requirements.txt pins its version);
tests/integration/test_db_pool.py checks both paths.
"""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from tortoise.backends.asyncpg import AsyncpgDBClient

ENGINE = __name__


class Pool(asyncpg.Pool):
    __slots__ = ()

    async def release(self, connection, *, timeout=None) -> None:
        if not self._release_idle(connection):
            await super().release(connection, timeout=timeout)

    def _release_idle(self, connection) -> bool:
        """Return ``connection`` now if it needs no reset; False to leave it to asyncpg."""
        if type(connection) is not PoolConnectionProxy or connection._holder._pool is not self:
            return False  # asyncpg's release explains the mistake
        con, holder = connection._con, connection._holder
        if con is None or con.is_closed() or con.is_in_transaction() or con._top_xact is not None:
            return False
        if con._listeners or con._log_listeners or con._protocol._is_cancelling():
            return False
        if con._protocol.queries_count >= holder._max_queries or holder._generation != self._generation:
            return False  # asyncpg replaces it
        self._check_init()
        # What asyncpg's release does after a reset that had nothing to do.
        con._on_release()
        holder._timeout = None
        holder._release()
        holder._setup_inactive_callback()
        return True


class Client(AsyncpgDBClient):
    async def create_pool(self, **kwargs) -> asyncpg.Pool:
        pool = asyncpg.create_pool(None, **kwargs)
        pool.__class__ = Pool  # asyncpg.create_pool takes no pool class; Pool adds no state
        return await pool


client_class = Client
