"""Time as the platform stores and shows it: aware UTC datetimes, ISO 8601 with offset."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def as_utc(value: datetime | None) -> datetime | None:
    """The same moment in UTC. Everything stored is UTC: SQLite compares datetimes as text,
    so a value kept with another offset (a channel's Beijing time) would sort wrongly."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime: the offset is unknown")
    return value.astimezone(timezone.utc)
