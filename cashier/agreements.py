"""Residents' payment accounts: an agreement at a channel, signed through the platform's own
merchant account, from which the channel issues payment codes (付款码) on demand. Such a
code travels as TOKEN in the combined code ``VUID:0:VALID:TOKEN`` (二码合一), and any
institution's counter charges it through its own account at that channel.
"""

from __future__ import annotations

from tortoise.exceptions import IntegrityError

from cardcore.clock import iso
from cardcore.runtime import Runtime
from cashier import accounts
from cashier.accounts import PLATFORM_ACCOUNT
from cashier.models import PaymentAgreement

# Channels whose agreements can issue payment codes, in the order a combined code prefers them.
TOKEN_CHANNELS = ("wechat", "alipay", "unionpay")


async def bind(rt: Runtime, account_id: str, channel_code: str) -> PaymentAgreement:
    """Sign (or return the existing) agreement of a resident account at a channel."""
    existing = await PaymentAgreement.get_or_none(account_id=account_id, channel=channel_code)
    if existing is not None:
        return existing
    channel = await accounts.channel_for(rt, PLATFORM_ACCOUNT, channel_code)
    agreement_id = await channel.sign_agreement(account_id)
    try:
        return await PaymentAgreement.create(account_id=account_id, channel=channel_code, agreement_id=agreement_id)
    except IntegrityError:
        return await PaymentAgreement.get(account_id=account_id, channel=channel_code)


async def unbind(account_id: str, channel_code: str) -> bool:
    return bool(await PaymentAgreement.filter(account_id=account_id, channel=channel_code).delete())


async def list_bound(account_id: str) -> list[PaymentAgreement]:
    return await PaymentAgreement.filter(account_id=account_id).order_by("created_at")


async def payment_token(rt: Runtime, account_id: str) -> str | None:
    """A fresh payment code of the account's preferred agreement, or None when none is bound."""
    bound = {a.channel: a for a in await list_bound(account_id)}
    for code in TOKEN_CHANNELS:
        if code in bound:
            channel = await accounts.channel_for(rt, PLATFORM_ACCOUNT, code)
            return await channel.payment_token(bound[code].agreement_id)
    return None


def agreement_view(agreement: PaymentAgreement) -> dict:
    return {
        "channel": agreement.channel,
        "agreement_id": agreement.agreement_id,
        "created_at": iso(agreement.created_at),
    }
