"""Strong authentication (L2) of a card: an SMS code to the card's verified phone, or face
verification through a provider (SPEC §2, seed 000 §3.3.2); and the SMS code of a static
code's second check in a critical scene (静态二维码二次校验)."""

from __future__ import annotations

from typing import Protocol

from cardcore import audit, errors, otp, ratelimit
from cardcore.cards import CARD_RECORDS, get_card
from cardcore.codes import parse_code_text
from cardcore.empi import service as empi
from cardcore.models import AuthLevel, Card, CardStatus, ResidentAccount
from cardcore.pii import mask_phone
from cardcore.residents import actor_for, card_for
from cardcore.runtime import Runtime
from cardcore.verify import CRITICAL_SCENES, SCENES, STATIC_CODE_OTP

SMS_PURPOSE = "sms_auth"
# (window seconds, most messages): one a minute, ten a day per phone; twenty a day per account.
PHONE_LIMITS = ((60, 1), (86_400, 10))
ACCOUNT_LIMITS = ((86_400, 20),)


class SmsSender(Protocol):
    async def send(self, phone: str, text: str) -> None: ...


def sms_text(code: str) -> str:
    return f"【电子健康卡】您的验证码是{code}，5分钟内有效，请勿告诉他人。"


def second_check_text(code: str, scene: str) -> str:
    return f"【电子健康卡】您正在{SCENES[scene]}窗口使用健康卡静态码，验证码{code}，5分钟内有效。如非本人使用请勿告诉他人。"


async def _limit_phone(rt: Runtime, purpose: str, phone: str) -> None:
    phone_key = rt.vault.blind_index("phone", phone)
    for window, limit in PHONE_LIMITS:
        await ratelimit.enforce(rt.redis, f"sms:{purpose}:{phone_key}:{window}", limit, window, "too many codes sent to this phone; wait a little")


async def start_sms(rt: Runtime, account: ResidentAccount, health_card_id: str, sms: SmsSender) -> dict:
    """Send a one-time code to the card's verified phone; returns where it went (masked)."""
    card, _ = await card_for(account, health_card_id)
    phone = empi.open_person(rt, card.identifier)["phone"]
    await _limit_phone(rt, "phone", phone)
    for window, limit in ACCOUNT_LIMITS:
        await ratelimit.enforce(rt.redis, f"sms:account:{account.account_id}:{window}", limit, window, "too many codes requested by this account today")
    code = await otp.issue(rt, SMS_PURPOSE, health_card_id)
    await sms.send(phone, sms_text(code))
    await audit.record(actor_for(account), "auth.sms.sent", health_card_id)
    return {"phone": mask_phone(phone), "expires_in": otp.OTP_TTL_S}


async def finish_sms(rt: Runtime, account: ResidentAccount, health_card_id: str, code: str) -> Card:
    await card_for(account, health_card_id)
    await otp.check(rt, SMS_PURPOSE, health_card_id, code)
    return await mark_strong(rt, account, health_card_id, "sms")


async def mark_strong(rt: Runtime, account: ResidentAccount, health_card_id: str, method: str) -> Card:
    await Card.filter(health_card_id=health_card_id).update(auth_level=AuthLevel.strong)
    await CARD_RECORDS.changed(rt, health_card_id)
    await audit.record(actor_for(account), "auth.strong", health_card_id, method=method)
    card, _ = await card_for(account, health_card_id)
    return card


async def send_second_check(rt: Runtime, text: str, scene: str, actor: audit.Actor, sms: SmsSender) -> dict:
    """Text the holder of a scanned static code the one-time code of its second check.

    A static code alone is refused in a critical scene; the terminal asks for this SMS, the
    resident reads the code out at the counter, and the terminal verifies again with it as
    ``otp``. Returns where the code went (masked).
    """
    if scene not in SCENES:
        raise errors.ValidationFailed(f"scene is one of {', '.join(SCENES)}")
    if scene not in CRITICAL_SCENES:
        raise errors.ValidationFailed(f"a static code needs no second check in {scene}; verify it directly")
    code = parse_code_text(text)
    if code.kind != "static":
        raise errors.ValidationFailed("only a static code needs a second check; verify this code directly")
    if code.issuer is not None and code.issuer != rt.settings.issuer_id:
        raise errors.CodeInvalid(f"code issued by {code.issuer}; cross-domain verification is not configured for it")
    card = await get_card(code.vuid)
    if card.status is not CardStatus.active:
        raise errors.CardInactive(f"card is {card.status.value}")
    phone = empi.open_person(rt, card.identifier)["phone"]
    if not phone:
        raise errors.Conflict("the card has no verified phone for a second check", code="NO_VERIFIED_PHONE")
    await _limit_phone(rt, "second-check", phone)
    one_time = await otp.issue(rt, STATIC_CODE_OTP, code.vuid)
    await sms.send(phone, second_check_text(one_time, scene))
    await audit.record(actor, "code.second_check.sent", code.vuid, scene=scene)
    return {"phone": mask_phone(phone), "expires_in": otp.OTP_TTL_S}
