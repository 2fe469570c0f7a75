"""Database configuration and lifecycle (tortoise-orm on SQLite or PostgreSQL)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tortoise import Tortoise, connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.exceptions import ValidationError
from tortoise.migrations.api import migrate as run_migrations
from tortoise.models import Model
from tortoise.transactions import in_transaction

from cardcore import pgclient

# Model apps in dependency order; layers above cardcore add theirs (label -> package).
CORE_APPS = {"cardcore": "cardcore"}
# PostgreSQL connections each process keeps for its background work, besides the pool that
# serves requests: the delivery loop claims while at most one write of attempts is under way.
BACKGROUND_CONNECTIONS = 2

# This process's client for background work (None on SQLite, whose one connection serves all).
_background: BaseDBAsyncClient | None = None


def tortoise_config(database_url: str, apps: dict[str, str] | None = None) -> dict:
    apps = apps or CORE_APPS
    return {
        "connections": {"default": _connection(database_url)},
        "apps": {
            label: {
                "models": [f"{package}.models"],
                "migrations": f"{package}.migrations",
                "default_connection": "default",
            }
            for label, package in apps.items()
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def _connection(url: str) -> dict:
    connection = expand_db_url(_normalise_url(url))
    if connection["engine"] == "tortoise.backends.asyncpg":
        connection["engine"] = pgclient.ENGINE
        connection["credentials"]["reset"] = _rollback_if_in_transaction
    return connection


async def _rollback_if_in_transaction(connection) -> None:
    """Reset of a pooled PostgreSQL connection on release.

    asyncpg's default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`` on every release, a round trip per query. The platform takes no advisory locks,
    keeps no cursors or listeners and changes no session settings, so only an open
    transaction (a cancelled request) needs undoing.
    """
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


def _normalise_url(url: str) -> str:
    if url.startswith("postgresql://"):
        url = "postgres://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite://") and url != "sqlite://:memory:":
        Path(url.removeprefix("sqlite://")).parent.mkdir(parents=True, exist_ok=True)
    return url


async def init_db(database_url: str, apps: dict[str, str] | None = None) -> None:
    global _background
    # One process-wide context: request tasks are not children of the start-up task.
    await Tortoise.init(config=tortoise_config(database_url, apps), _enable_global_fallback=True)
    _background = _background_client(database_url)


def _background_client(url: str) -> BaseDBAsyncClient | None:
    connection = _connection(url)
    if connection["engine"] != pgclient.ENGINE:
        return None
    credentials = {**connection["credentials"], "minsize": 1, "maxsize": BACKGROUND_CONNECTIONS}
    return pgclient.Client(connection_name="background", **credentials)  # its pool opens on first use


def background_transaction():
    """A transaction for a process's background work (claiming hospital notifications,
    recording their delivery), on connections that requests do not use.

    Under load, requests keep every connection of the main pool busy and a queue waits for
    them; background statements in that queue made each delivery hold its slot for hundreds
    of milliseconds, and notifications fell seconds behind payments (BENCHMARKS.md).
    """
    return _background._in_transaction() if _background is not None else in_transaction()


async def close_db() -> None:
    global _background
    if _background is not None:
        client, _background = _background, None
        await client.close()
    await Tortoise.close_connections()


async def migrate(database_url: str, apps: dict[str, str] | None = None) -> None:
    """Apply every checked-in migration that the database has not seen yet."""
    try:
        await run_migrations(config=tortoise_config(database_url, apps))
    finally:
        await connections.close_all()


async def ping() -> None:
    await connections.get("default").execute_query("SELECT 1")


# Stand-ins by kind of argument: in no real value, and within any column's checks (text:
# one character of Unicode's private use area; numbers: within a small integer's range).
_STAND_INS: dict[str, Callable[[int], Any]] = {
    "text": lambda n: chr(0xE000 + n),
    "number": lambda n: -31_000 - n,
    "datetime": lambda n: datetime(1901, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=n),
}


def _kind_of(arg: Any) -> str:
    if type(arg) is str:
        return "text"
    if type(arg) is int:
        return "number"
    if type(arg) is datetime and arg.tzinfo is not None:
        return "datetime"
    raise TypeError(f"a prepared query takes text, whole numbers and aware datetimes, not {arg!r}")


@dataclass(frozen=True)
class _UpdateThenInsert:
    sql: str
    fields: tuple[str, ...]  # the inserted model's fields, in the order of the insert's parameters


def _update_then_insert(
    db: BaseDBAsyncClient, update_sql: str, update_parameters: int, model: type[Model]
) -> _UpdateThenInsert:
    """PostgreSQL: one statement inserting a ``model`` row only if ``update_sql`` changed a row.
    The row's fields are those the ORM's own insert writes (its executor's ``regular_columns``)."""
    meta = model._meta
    if meta.db_default_db_columns:
        raise TypeError(f"{model.__name__} has database defaults: insert it with save()")
    fields = tuple(db.executor_class(model=model, db=db).regular_columns)
    names = ", ".join(f'"{meta.fields_db_projection[name]}"' for name in fields)
    parameters = ", ".join(f"${update_parameters + n}" for n in range(1, len(fields) + 1))
    return _UpdateThenInsert(
        sql=(
            f"WITH changed AS ({update_sql} RETURNING 1) "
            f'INSERT INTO "{meta.db_table}" ({names}) SELECT {parameters} FROM changed RETURNING "{meta.db_pk_column}"'
        ),
        fields=fields,
    )


class PreparedQuery:
    """A hot query whose SQL the ORM builds once, then sends with each call's values.

    Turning a query into SQL costs a worker more than sending it and reading the answer
    (bench/orm_statements.py: an order read by its number 257 µs of CPU when built each time,
    137 µs prepared). ``build(*args)`` returns the query (a QuerySet, or its ``update``)
    as the ORM would run it. It is built once per database with a stand-in for each argument;
    each call sends that SQL with its own arguments where the stand-ins went. Arguments are
    text, whole numbers or aware datetimes, which the ORM sends as they are, so each stand-in
    is found among the built parameters; each call passes the kinds the first one did. The
    ORM's field checks do not see a call's arguments: pass values the platform made or checked.
    Arguments may be named as ``build`` names its parameters, so that a call with many of them
    cannot mix up their order.
    """

    def __init__(self, model: type[Model], build: Callable[..., Any]) -> None:
        self._model, self._build = model, build
        self._parameters = tuple(inspect.signature(build).parameters)
        self._built: dict[str, tuple[str, list, list[int], tuple[str, ...]]] = {}
        self._then_insert: dict[tuple[str, type[Model]], _UpdateThenInsert] = {}

    def _arguments(self, args: tuple, named: dict[str, Any]) -> tuple:
        """The arguments in ``build``'s order, those given by name included."""
        if not named:
            return args
        rest = self._parameters[len(args) :]
        unknown = sorted(set(named) - set(rest))
        missing = [name for name in rest if name not in named]
        if unknown or missing:
            raise TypeError(
                f"this prepared query takes {', '.join(self._parameters)}: unknown {unknown}, missing {missing}"
            )
        return (*args, *(named[name] for name in rest))

    def _sql(self, db: BaseDBAsyncClient, args: tuple) -> tuple[str, list]:
        kinds = tuple(_kind_of(arg) for arg in args)
        built = self._built.get(db.connection_name)
        if built is None:
            stand_ins = [_STAND_INS[kind](n) for n, kind in enumerate(kinds)]
            query = self._build(*stand_ins)
            query._db = db
            try:
                query._make_query()
            except ValidationError as exc:
                raise TypeError(f"a column of this prepared query refuses a stand-in: {exc}") from exc
            sql, params = query.query.get_parameterized_sql()
            slots = [[i for i, param in enumerate(params) if param == stand_in] for stand_in in stand_ins]
            if any(len(places) != 1 for places in slots):
                raise TypeError("each argument of a prepared query must be one parameter of it, unchanged")
            built = self._built[db.connection_name] = (sql, list(params), [places[0] for places in slots], kinds)
        sql, params, slots, built_kinds = built
        if kinds != built_kinds:
            raise TypeError(f"this prepared query takes {built_kinds}, not {kinds}")
        values = list(params)
        for slot, arg in zip(slots, args):
            values[slot] = arg
        return sql, values

    async def fetch(self, *args: Any, using_db: BaseDBAsyncClient | None = None, **named: Any) -> list[Model]:
        """The rows of a QuerySet, as models."""
        db = using_db or self._model._meta.db
        sql, values = self._sql(db, self._arguments(args, named))
        return await db.executor_class(model=self._model, db=db).execute_select(sql, values)

    async def execute(self, *args: Any, using_db: BaseDBAsyncClient | None = None, **named: Any) -> int:
        """Run an update; how many rows it changed."""
        db = using_db or self._model._meta.db
        sql, values = self._sql(db, self._arguments(args, named))
        return (await db.execute_query(sql, values))[0]

    async def execute_then_insert(self, row: Model | None, *args: Any, **named: Any) -> int:
        """Run an update and, only if it changed a row, insert ``row`` (a new model instance,
        or None for nothing to insert): both or neither. Returns how many rows the update
        changed, 0 or 1: the update must name one row by a unique key, as the insert stands
        for one row changed.

        On PostgreSQL this is one statement: the insert selects from the update's
        ``RETURNING``. A transaction's BEGIN and COMMIT and the insert's own round trip were
        three of the 8.6 statements a paid order cost (BENCHMARKS.md). Elsewhere (SQLite)
        the two statements run in a transaction. The model's save signals do not run.
        """
        if row is None:
            return await self.execute(*args, **named)
        db = self._model._meta.db
        sql, values = self._sql(db, self._arguments(args, named))
        if db.capabilities.dialect != "postgres":
            async with in_transaction(db.connection_name) as conn:
                changed = (await conn.execute_query(sql, values))[0]
                if changed:
                    await row.save(using_db=conn, force_create=True)
                return changed
        model = type(row)
        key = (db.connection_name, model)
        combined = self._then_insert.get(key)
        if combined is None:
            combined = self._then_insert[key] = _update_then_insert(db, sql, len(values), model)
        fields = model._meta.fields_map
        inserted_values = [fields[name].to_db_value(getattr(row, name), row) for name in combined.fields]
        inserted = (await db.execute_query(combined.sql, [*values, *inserted_values]))[1]
        if inserted:
            row.pk = inserted[0][model._meta.db_pk_column]
            row._saved_in_db = True
        return len(inserted)
