"""Keyset pagination of API.md lists: newest first, the cursor is the last id of the page."""

from __future__ import annotations

from datetime import datetime

from tortoise.queryset import QuerySet

from cardcore.errors import ValidationFailed

MAX_ID_DIGITS = 18  # every id of up to 18 digits fits a signed 64-bit column


async def newest_first(query: QuerySet, *, limit: int, cursor: str | None) -> tuple[list, str | None]:
    """One page of ``query`` (ordered by descending id) and the cursor of the next page, if any."""
    query = query.order_by("-id")
    if cursor:
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= MAX_ID_DIGITS):
            raise ValidationFailed("cursor is not one this API gave out")
        query = query.filter(id__lt=int(cursor))
    rows = await query.limit(limit + 1)
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


def matching(query: QuerySet, *, since: datetime | None = None, until: datetime | None = None, **equal) -> QuerySet:
    """``query`` narrowed to rows created in [since, until) whose fields equal the given
    values; a filter given as None is no filter."""
    query = query.filter(**{name: value for name, value in equal.items() if value is not None})
    if since is not None:
        query = query.filter(created_at__gte=since)
    if until is not None:
        query = query.filter(created_at__lt=until)
    return query
