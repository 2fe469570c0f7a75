"""Who acts (an institution, a terminal, a partner app, a resident channel) and the audit trail."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cardcore.clock import iso
from cardcore.models import AuditEvent
from cardcore.paging import matching, newest_first


@dataclass(frozen=True)
class Actor:
    """The caller a service acts for; built by the web layer from a verified request."""

    client_id: str
    institution_id: str | None = None
    terminal_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    def may_see_full_identity(self) -> bool:
        return "identity.full" in self.scopes


async def record(actor: Actor, action: str, subject: str, **detail) -> None:
    await AuditEvent.create(
        actor=actor.client_id, terminal_id=actor.terminal_id, action=action, subject=subject, detail=detail
    )


async def list_events(
    *,
    limit: int,
    cursor: str | None = None,
    subject: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[AuditEvent], str | None]:
    """The audit trail, newest first; ``action`` ending in ``.`` matches every action under it
    (``card.`` finds card.read, card.update, …)."""
    query = matching(AuditEvent.all(), since=since, until=until, subject=subject, actor=actor)
    if action is not None:
        query = query.filter(action__startswith=action) if action.endswith(".") else query.filter(action=action)
    return await newest_first(query, limit=limit, cursor=cursor)


def event_view(event: AuditEvent) -> dict:
    return {
        "id": event.id,
        "actor": event.actor,
        "terminal_id": event.terminal_id,
        "action": event.action,
        "subject": event.subject,
        "detail": event.detail,
        "created_at": iso(event.created_at),
    }
