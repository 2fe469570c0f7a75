"""Card usage reports (用卡数据上报): where and how a card was used, as institutions report it."""

from __future__ import annotations

from datetime import datetime

from cardcore import audit, errors
from cardcore.codes import parse_code_text
from cardcore.models import Card, UsageReport
from cardcore.runtime import Runtime
from cardcore.verify import SCENES


async def report(
    rt: Runtime,
    actor: audit.Actor,
    *,
    health_card_id: str | None,
    qr_code_text: str | None,
    scene: str,
    department: str,
    occurred_at: datetime,
) -> UsageReport:
    if scene not in SCENES:
        raise errors.ValidationFailed(f"scene is one of {', '.join(SCENES)}")
    if qr_code_text:
        # The code was verified (and, if dynamic, spent) already; only its card matters here.
        health_card_id = parse_code_text(qr_code_text).vuid
    if not await Card.exists(health_card_id=health_card_id):
        raise errors.CardNotFound()
    return await UsageReport.create(
        health_card_id=health_card_id,
        scene=scene,
        department=department,
        occurred_at=occurred_at,
        institution_id=actor.institution_id,
        terminal_id=actor.terminal_id,
    )


def report_view(report: UsageReport) -> dict:
    return {
        "id": report.id,
        "health_card_id": report.health_card_id,
        "scene": report.scene,
        "department": report.department,
        "occurred_at": report.occurred_at.isoformat(),
        "institution_id": report.institution_id,
        "terminal_id": report.terminal_id,
        "created_at": report.created_at.isoformat(),
    }
