"""Issuing dynamic codes and verifying scanned codes (API.md ``/inst/v1/codes/verify``).

Single use holds across every worker and host: a dynamic code is spent by an atomic
SET NX in the shared cache. Three failed verifications of the same code text lock it
for ``LOCK_S``. Every issuance and every verification, refused or not, is recorded
(through the queue of ``cardcore.codeevents``).

A dynamic code is settled in one script (one round trip to the shared cache): it
confirms that the card and client records the decision was made on are unchanged, claims
the request's nonce when the caller left that to it, reads the lock, spends the code and
queues the event, all atomically. What needs no shared state (parsing, opening VALID,
expiry, card status) is decided before, on the worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from cardcore import access, audit, codeevents, errors, otp
from cardcore.cache import LuaScript, Stamped
from cardcore.cards import CARD_RECORDS
from cardcore.codes import CodeText, issue_dynamic, open_valid, parse_code_text
from cardcore.models import CardStatus
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
FAILURES_PREFIX = "codefail:"
USED_PREFIX = "used:"
NO_NONCE_KEY = "nonce:-"  # stands in KEYS when the request's nonce is settled already

# The outcomes a dynamic code can have besides "ok", by API code.
_REFUSALS = {
    cls.code: cls
    for cls in (
        errors.CardNotFound, errors.CodeInvalid, errors.CodeExpired, errors.CardInactive, errors.CodeUsed, errors.CodeLocked
    )
}


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
    """What verification needs of a card, as the shared cache holds it now."""
    facts = (await CARD_RECORDS.current(rt, health_card_id)).value
    if facts is None:
        raise errors.CardNotFound()
    return facts


async def issue_dynamic_code(rt: Runtime, health_card_id: str, actor: audit.Actor, token: str | None = None) -> IssuedCode:
    facts = await _card_facts(rt, health_card_id)
    if facts["status"] != CardStatus.active.value:
        raise errors.CardInactive()
    ttl = rt.settings.dynamic_code_ttl_s
    expires_at_s = int(time.time()) + ttl
    code = issue_dynamic(rt.vault, health_card_id, expires_at_s, token=token)
    await codeevents.enqueue(rt, "issue", actor, code.kind, "", "ok", health_card_id)
    return IssuedCode(
        qr_code_text=code.format(),
        expires_at=datetime.fromtimestamp(expires_at_s, timezone.utc),
        refresh_in=max(ttl - 10, ttl // 2),
    )


async def verify_code(
    rt: Runtime,
    text: str,
    scene: str,
    actor: audit.Actor,
    otp_code: str | None = None,
    guard: access.RequestGuard | None = None,
) -> Verification:
    """Verify scanned code text for a scene.

    ``guard``: a signed request whose nonce the caller left unclaimed; it is claimed
    here, before anything is recorded.
    """
    if scene not in SCENES:
        raise errors.ValidationFailed(f"scene is one of {', '.join(SCENES)}")
    if guard is not None and guard.claimed:
        guard = None
    code: CodeText | None = None
    try:
        code = parse_code_text(text)
        if code.kind != "static" and (code.issuer is None or code.issuer == rt.settings.issuer_id):
            return await _verify_dynamic(rt, code, scene, actor, guard)
        if guard is not None:
            await access.claim(rt, guard)
        result = await _verify_static_or_foreign(rt, code, scene, otp_code)
    except errors.PlatformError as exc:
        if not _recorded(exc):
            if guard is not None and not guard.claimed:
                await access.claim(rt, guard)
            await codeevents.enqueue(rt, "verify", actor, code.kind if code else "", scene, exc.code, code.vuid if code else None)
        raise
    await codeevents.enqueue(rt, "verify", actor, code.kind, scene, "ok", code.vuid)
    return result


def _recorded(exc: errors.PlatformError) -> bool:
    """Refusals the spending script recorded already, or that are about the request, not the code."""
    return getattr(exc, "recorded", False) or isinstance(exc, errors.ReplayedRequest)


async def _verify_static_or_foreign(rt: Runtime, code: CodeText, scene: str, otp_code: str | None) -> Verification:
    if code.issuer is not None and code.issuer != rt.settings.issuer_id:
        raise errors.CodeInvalid(f"code issued by {code.issuer}; cross-domain verification is not configured for it")
    facts = await _card_facts(rt, code.vuid)
    _require_active(facts)
    if scene in CRITICAL_SCENES:
        if not otp_code:
            raise errors.SceneRequiresDynamic()
        await otp.check(rt, STATIC_CODE_OTP, code.vuid, otp_code)
    return Verification(facts, "static")


def _require_active(facts: dict) -> None:
    if facts["status"] != CardStatus.active.value:
        raise errors.CardInactive(f"card is {facts['status']}")


def _verdict(rt: Runtime, code: CodeText, facts: dict | None) -> tuple[str, int]:
    """The outcome as far as the worker can tell (before lock and single use), and how long
    a spent code must stay remembered."""
    if facts is None:
        return errors.CardNotFound.code, 0
    try:
        info = open_valid(rt.vault, code.vuid, code.valid)
    except errors.CodeInvalid:
        return errors.CodeInvalid.code, 0
    now_s = time.time()
    if now_s > info.expires_at_s:
        return errors.CodeExpired.code, 0
    if facts["status"] != CardStatus.active.value:
        return errors.CardInactive.code, 0
    return "ok", int(info.expires_at_s - now_s) + 60


async def _verify_dynamic(
    rt: Runtime, code: CodeText, scene: str, actor: audit.Actor, guard: access.RequestGuard | None
) -> Verification:
    event = codeevents.event_fields("verify", actor, code.kind, scene, code.vuid)
    for attempt in range(4):
        # This worker's copy of the card first; the script tells when it is out of date.
        card: Stamped = await (CARD_RECORDS.current if attempt else CARD_RECORDS.cached)(rt, code.vuid)
        verdict, used_ttl_s = _verdict(rt, code, card.value)
        if guard is not None:
            keys, args = guard.guard_keys(extra=[card])
        else:
            keys, args = [card.key, NO_NONCE_KEY], [card.stamp, ""]
        keys += [f"{FAILURES_PREFIX}{code.vuid}:{code.valid}", f"{USED_PREFIX}{code.vuid}:{code.valid}", codeevents.STREAM]
        args += [verdict, MAX_FAILURES, LOCK_S, used_ttl_s, event]
        outcome = await _SETTLE_DYNAMIC(rt.redis, keys, args)
        if isinstance(outcome, int):
            if outcome == len(keys) - 4:  # the card record (last before the nonce) changed
                CARD_RECORDS.forget(rt, code.vuid)
                continue
            if guard is None:
                raise RuntimeError(f"unexpected answer {outcome} from the code settling script")
            guard.settle(rt, outcome)  # a client record changed (StaleGuard) or a replayed nonce
        if guard is not None:
            guard.claimed = True
        result = outcome.decode()
        if result == "ok":
            return Verification(card.value, code.kind)
        refusal = _REFUSALS[result]()
        if result == errors.CardInactive.code:
            refusal = errors.CardInactive(f"card is {card.value['status']}")
        refusal.recorded = True
        raise refusal
    raise errors.PlatformError("the card keeps changing; try again", status=503, code="SERVICE_UNAVAILABLE")


# KEYS: records 1..n (the request's client records, then the card), the nonce, the
# failure counter, the spent-code marker, the event stream. ARGV: their stamps, the
# nonce lifetime ('' when the nonce is not ours to claim), the worker's verdict, most
# failures, lock seconds, how long a spent code is remembered, the event.
# Returns a number (a changed record's position, -1 for a used nonce) or the outcome.
_SETTLE_DYNAMIC = LuaScript(
    access.CLAIM_LUA
    + """
local n = #KEYS - 4
local settled
if ARGV[n + 1] == '' then
  settled = changed_record(n)
else
  settled = claim_request(n)
end
if settled ~= 0 then
  return settled
end
local failures, used = KEYS[n + 2], KEYS[n + 3]
local result = ARGV[n + 2]
if tonumber(redis.call('GET', failures) or '0') >= tonumber(ARGV[n + 3]) then
  result = 'CODE_LOCKED'
elseif result == 'ok' and not redis.call('SET', used, '1', 'NX', 'EX', ARGV[n + 5]) then
  result = 'CODE_USED'
end
if result == 'CODE_INVALID' or result == 'CODE_EXPIRED' or result == 'CODE_USED' then
  redis.call('INCR', failures)
  redis.call('EXPIRE', failures, ARGV[n + 4])
end
redis.call('XADD', KEYS[n + 4], '*', 'event', ARGV[n + 6], 'result', result)
return result
"""
)


async def code_state(rt: Runtime, health_card_id: str, text: str) -> str:
    """``fresh``, ``used`` or ``expired`` for a dynamic code of this card; ``invalid`` otherwise."""
    try:
        code = parse_code_text(text)
        if code.vuid != health_card_id or code.valid is None:
            return "invalid"
        info = open_valid(rt.vault, code.vuid, code.valid)
    except errors.PlatformError:
        return "invalid"
    if await rt.redis.exists(f"{USED_PREFIX}{code.vuid}:{code.valid}"):
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
