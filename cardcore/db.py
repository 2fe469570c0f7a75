"""Database configuration and lifecycle (tortoise-orm on SQLite or PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from tortoise import Tortoise, connections
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.migrations.api import migrate as run_migrations

# Model apps in dependency order; layers above cardcore add theirs (label -> package).
CORE_APPS = {"cardcore": "cardcore"}


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
    # One process-wide context: request tasks are not children of the start-up task.
    await Tortoise.init(config=tortoise_config(database_url, apps), _enable_global_fallback=True)


async def close_db() -> None:
    await Tortoise.close_connections()


async def migrate(database_url: str, apps: dict[str, str] | None = None) -> None:
    """Apply every checked-in migration that the database has not seen yet."""
    try:
        await run_migrations(config=tortoise_config(database_url, apps))
    finally:
        await connections.close_all()


async def ping() -> None:
    await connections.get("default").execute_query("SELECT 1")
