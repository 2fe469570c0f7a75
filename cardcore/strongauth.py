"""Strong authentication (L2) of a card: an SMS code to the card's verified phone, or face
verification through a provider (SPEC §2, seed 000 §3.3.2)."""

from __future__ import annotations

from typing import Protocol

from cardcore import audit, otp, ratelimit
from cardcore.cards import CARD_RECORDS
from cardcore.empi import service as empi
from cardcore.models import AuthLevel, Card, ResidentAccount
from cardcore.pii import mask_phone
from cardcore.residents import actor_for, card_for
from cardcore.runtime import Runtime

SMS_PURPOSE = "sms_auth"
# (window seconds, most messages): one a minute, ten a day per phone; twenty a day per account.
PHONE_LIMITS = ((60, 1), (86_400, 10))
ACCOUNT_LIMITS = ((86_400, 20),)


class SmsSender(Protocol):
    async def send(self, phone: str, text: str) -> None: ...


def sms_text(code: str) -> str:
    return f"【电子健康卡】您的验证码是{code}，5分钟内有效，请勿告诉他人。"


async def start_sms(rt: Runtime, account: ResidentAccount, health_card_id: str, sms: SmsSender) -> dict:
    """Send a one-time code to the card's verified phone; returns where it went (masked)."""
    card, _ = await card_for(account, health_card_id)
    phone = empi.open_person(rt, card.identifier)["phone"]
    phone_key = rt.vault.blind_index("phone", phone)
    for window, limit in PHONE_LIMITS:
        await ratelimit.enforce(rt.redis, f"sms:phone:{phone_key}:{window}", limit, window, "too many codes sent to this phone; wait a little")
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
