"""Query and aggregate the record of code issuance and verification (seed 002 §5.1.2)."""

from __future__ import annotations

from datetime import datetime

from tortoise.functions import Count

from cardcore import codeevents
from cardcore.models import CodeEvent
from cardcore.paging import matching, newest_first

GROUP_FIELDS = ("action", "result", "scene", "code_type", "institution_id", "terminal_id")


async def list_code_events(
    rt,
    *,
    limit: int,
    cursor: str | None = None,
    institution_id: str | None = None,
    health_card_id: str | None = None,
    action: str | None = None,
    result: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[CodeEvent], str | None]:
    """Newest first; the cursor is the id of the last event of the previous page."""
    await codeevents.flush(rt)
    query = matching(
        CodeEvent.all(), since=since, until=until,
        institution_id=institution_id, health_card_id=health_card_id, action=action, result=result,
    )  # fmt: skip
    return await newest_first(query, limit=limit, cursor=cursor)


async def code_stats(
    rt,
    group_by: list[str],
    *,
    institution_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict]:
    """Counts of events grouped by any combination of GROUP_FIELDS."""
    await codeevents.flush(rt)
    query = matching(CodeEvent.all(), since=since, until=until, institution_id=institution_id)
    rows = await query.annotate(count=Count("id")).group_by(*group_by).order_by(*group_by).values(*group_by, "count")
    return [dict(row) for row in rows]


def event_view(event: CodeEvent) -> dict:
    return {
        "id": event.id,
        "action": event.action,
        "health_card_id": event.health_card_id,
        "code_type": event.code_type,
        "scene": event.scene,
        "result": event.result,
        "client_id": event.client_id,
        "institution_id": event.institution_id,
        "terminal_id": event.terminal_id,
        "created_at": event.created_at.isoformat(),
    }
