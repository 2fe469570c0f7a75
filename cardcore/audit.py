"""Who acts (an institution, a terminal, a partner app, a resident channel) and the audit trail."""

from __future__ import annotations

from dataclasses import dataclass, field

from cardcore.models import AuditEvent


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
