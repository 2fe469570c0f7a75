"""Database configuration and lifecycle (tortoise-orm on SQLite or PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from tortoise import Tortoise, connections
from tortoise.migrations.api import migrate as run_migrations

# Model apps in dependency order; layers above cardcore add theirs (label -> package).
CORE_APPS = {"cardcore": "cardcore"}


def tortoise_config(database_url: str, apps: dict[str, str] | None = None) -> dict:
    apps = apps or CORE_APPS
    return {
        "connections": {"default": _normalise_url(database_url)},
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
