"""Issuing dynamic codes and verifying scanned codes (API.md ``/inst/v1/codes/verify``).

Single use holds across every worker and host: a dynamic code is spent by an atomic
SET NX in the shared cache. Three failed verifications of the same code text lock it
for ``LOCK_S``. Every issuance and every verification, refused or not, is recorded
(through the queue of ``cardcore.codeevents``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from cardcore import audit, codeevents, errors, otp
from cardcore.cards import card_cache_key
from cardcore.codes import CodeText, open_valid, parse_code_text, seal_valid
from cardcore.models import Card, CardStatus
from cardcore.pii import mask_id_number
from cardcore.runtime import Runtime

SCENES = {
    "registration": "挂号",
    "consultation": "就诊",
    "payment": "缴费",
    "pharmacy": "取药",
    "examination": "检查检验",
    "report": "报告打印",
    "admission": "住院登记",
    "record_access": "健康档案调阅",
    "other": "其他",
}
CRITICAL_SCENES = frozenset({"payment", "record_access"})
STATIC_CODE_OTP = "static_code"  # OTP purpose of the static-code second check

MAX_FAILURES = 3
LOCK_S = 600
CARD_CACHE_S = 300
FAILURES_PREFIX = "codefail:"


@dataclass(frozen=True)
class IssuedCode:
    qr_code_text: str
    expires_at: datetime
    refresh_in: int


@dataclass(frozen=True)
class Verification:
    card: dict
    code_type: str

    def view(self, full_identity: bool) -> dict:
        card = self.card
        return {
            "result": "ok",
            "health_card_id": card["health_card_id"],
            "empi_id": card["empi_id"],
            "name": card["name"],
            "gender": card["gender"],
            "id_type": card["id_type"],
            "id_number": card["id_number"] if full_identity else mask_id_number(card["id_number"]),
            "auth_level": card["auth_level"],
            "card_status": card["status"],
            "code_type": self.code_type,
        }


async def _card_facts(rt: Runtime, health_card_id: str) -> dict:
    """What verification needs of a card, from a short-lived cache copy kept sealed."""
    key = card_cache_key(health_card_id)
    cached = await rt.redis.get(key)
    if cached is not None:
        facts = json.loads(cached)
    else:
        card = await Card.get_or_none(health_card_id=health_card_id).prefetch_related("identifier__person")
        if card is None:
            raise errors.CardNotFound()
        person = card.identifier.person
        facts = {
            "health_card_id": card.health_card_id,
            "status": card.status.value,
            "auth_level": card.auth_level.value,
            "empi_id": person.empi_id,
            "name_sealed": person.name_sealed,
            "gender": person.gender,
            "id_type": card.identifier.id_type,
            "number_sealed": card.identifier.number_sealed,
        }
        await rt.redis.set(key, json.dumps(facts), ex=CARD_CACHE_S)
    return facts


def _opened(rt: Runtime, facts: dict) -> dict:
    return {
        **{k: v for k, v in facts.items() if not k.endswith("_sealed")},
        "name": rt.vault.decrypt_text(facts["name_sealed"]),
        "id_number": rt.vault.decrypt_text(facts["number_sealed"]),
    }


async def issue_dynamic_code(rt: Runtime, health_card_id: str, actor: audit.Actor, token: str | None = None) -> IssuedCode:
    facts = await _card_facts(rt, health_card_id)
    if facts["status"] != CardStatus.active.value:
        raise errors.CardInactive()
    ttl = rt.settings.dynamic_code_ttl_s
    expires_at_s = int(time.time()) + ttl
    valid = seal_valid(rt.vault, health_card_id, expires_at_s)
    code = CodeText.dynamic(health_card_id, valid, token=token)
    await _record(rt, "issue", actor, code.kind, "", "ok", health_card_id)
    return IssuedCode(
        qr_code_text=code.format(),
        expires_at=datetime.fromtimestamp(expires_at_s, timezone.utc),
        refresh_in=max(ttl - 10, ttl // 2),
    )


async def verify_code(rt: Runtime, text: str, scene: str, actor: audit.Actor, otp_code: str | None = None) -> Verification:
    if scene not in SCENES:
        raise errors.ValidationFailed(f"scene is one of {', '.join(SCENES)}")
    code: CodeText | None = None
    try:
        code = parse_code_text(text)
        result = await _verify(rt, code, scene, otp_code)
    except errors.PlatformError as exc:
        await _record(rt, "verify", actor, code.kind if code else "", scene, exc.code, code.vuid if code else None)
        raise
    await _record(rt, "verify", actor, code.kind, scene, "ok", code.vuid)
    return result


async def _verify(rt: Runtime, code: CodeText, scene: str, otp_code: str | None) -> Verification:
    if code.issuer is not None and code.issuer != rt.settings.issuer_id:
        raise errors.CodeInvalid(f"code issued by {code.issuer}; cross-domain verification is not configured for it")
    if code.kind == "static":
        facts = await _card_facts(rt, code.vuid)
        _require_active(facts)
        if scene in CRITICAL_SCENES:
            if not otp_code:
                raise errors.SceneRequiresDynamic()
            await otp.check(rt, STATIC_CODE_OTP, code.vuid, otp_code)
        return Verification(_opened(rt, facts), "static")

    failures_key = f"{FAILURES_PREFIX}{code.vuid}:{code.valid}"
    failures = await rt.redis.get(failures_key)
    if failures is not None and int(failures) >= MAX_FAILURES:
        raise errors.CodeLocked()
    try:
        facts = await _card_facts(rt, code.vuid)
        info = open_valid(rt.vault, code.vuid, code.valid)
        now_s = time.time()
        if now_s > info.expires_at_s:
            raise errors.CodeExpired()
        _require_active(facts)
        # Spend the code: exactly one verification anywhere wins the SET NX.
        spent = await rt.redis.set(f"used:{code.vuid}:{code.valid}", b"1", nx=True, ex=int(info.expires_at_s - now_s) + 60)
        if not spent:
            raise errors.CodeUsed()
    except (errors.CodeInvalid, errors.CodeExpired, errors.CodeUsed):
        pipe = rt.redis.pipeline(transaction=True)
        pipe.incr(failures_key)
        pipe.expire(failures_key, LOCK_S)
        await pipe.execute()
        raise
    return Verification(_opened(rt, facts), code.kind)


def _require_active(facts: dict) -> None:
    if facts["status"] != CardStatus.active.value:
        raise errors.CardInactive(f"card is {facts['status']}")


async def _record(rt: Runtime, action: str, actor: audit.Actor, code_type: str, scene: str, result: str, vuid: str | None) -> None:
    await codeevents.enqueue(rt, action, actor, code_type, scene, result, vuid)


async def code_state(rt: Runtime, health_card_id: str, text: str) -> str:
    """``fresh``, ``used`` or ``expired`` for a dynamic code of this card; ``invalid`` otherwise."""
    try:
        code = parse_code_text(text)
        if code.vuid != health_card_id or code.valid is None:
            return "invalid"
        info = open_valid(rt.vault, code.vuid, code.valid)
    except errors.PlatformError:
        return "invalid"
    if await rt.redis.exists(f"used:{code.vuid}:{code.valid}"):
        return "used"
    return "expired" if time.time() > info.expires_at_s else "fresh"


async def lockouts(rt: Runtime, limit: int = 200) -> list[dict]:
    """Codes and second checks locked right now, with the seconds left (for admins)."""
    found: list[dict] = []
    patterns = ((f"{FAILURES_PREFIX}*", "code"), (otp.lock_key_pattern(STATIC_CODE_OTP), "otp"))
    for pattern, kind in patterns:
        async for key in rt.redis.scan_iter(match=pattern, count=500):
            name = key.decode()
            if kind == "code":
                if int(await rt.redis.get(key) or 0) < MAX_FAILURES:
                    continue
                health_card_id = name.removeprefix(FAILURES_PREFIX).split(":")[0]
            else:
                health_card_id = otp.subject_of_lock_key(STATIC_CODE_OTP, name)
            found.append({"kind": kind, "health_card_id": health_card_id, "expires_in": await rt.redis.ttl(key)})
            if len(found) >= limit:
                return found
    return found
