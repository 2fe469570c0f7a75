"""Merchant accounts of institutions at the payment channels, and the channel objects built
from them. Keys are stored sealed under the vault's data key and opened only here.

The institution id ``platform`` holds the platform's own accounts: they sign residents'
payment agreements and issue the payment codes carried in combined codes.
"""

from __future__ import annotations

import json

from cardcore.clock import iso
from cardcore.runtime import Runtime
from cashier import channels
from cashier.channels.base import Channel, MerchantConfig
from cashier.errors import ChannelNotAvailable
from cashier.models import ChannelAccount

PLATFORM_ACCOUNT = "platform"

# Built channels by account id, rebuilt when the account row changes (every worker sees
# an admin's change on the next payment, since the row is read each time).
_built: dict[int, tuple[object, Channel]] = {}


async def save_account(rt: Runtime, institution_id: str, config: MerchantConfig, enabled: bool = True) -> ChannelAccount:
    """Create or replace an institution's account at ``config.channel``."""
    channels.channel_class(config.channel)  # refuses an unknown channel code
    sealed = rt.vault.encrypt_text(json.dumps(config.secrets, ensure_ascii=False))
    account, _ = await ChannelAccount.update_or_create(
        institution_id=institution_id,
        channel=config.channel,
        defaults={
            "app_id": config.app_id,
            "merchant_id": config.merchant_id,
            "sub_merchant_id": config.sub_merchant_id,
            "gateway": config.gateway,
            "secrets_sealed": sealed,
            "enabled": enabled,
        },
    )
    return account


def _config_of(rt: Runtime, account: ChannelAccount) -> MerchantConfig:
    return MerchantConfig(
        channel=account.channel,
        app_id=account.app_id,
        merchant_id=account.merchant_id,
        secrets=json.loads(rt.vault.decrypt_text(account.secrets_sealed)),
        gateway=account.gateway,
        sub_merchant_id=account.sub_merchant_id,
    )


def _channel_of(rt: Runtime, account: ChannelAccount) -> Channel:
    cached = _built.get(account.id)
    if cached is not None and cached[0] == account.updated_at:
        return cached[1]
    channel = channels.build(_config_of(rt, account))
    _built[account.id] = (account.updated_at, channel)
    return channel


async def channel_for(rt: Runtime, institution_id: str, channel_code: str) -> Channel:
    account = await ChannelAccount.get_or_none(institution_id=institution_id, channel=channel_code, enabled=True)
    if account is None:
        raise ChannelNotAvailable(f"channel {channel_code} is not open for this institution")
    return _channel_of(rt, account)


async def channel_by_merchant(rt: Runtime, channel_code: str, merchant_id: str) -> Channel | None:
    """The channel of the account a callback names by merchant id (refund callbacks of WeChat)."""
    account = await ChannelAccount.filter(channel=channel_code, merchant_id=merchant_id, enabled=True).first()
    return None if account is None else _channel_of(rt, account)


async def open_channels(institution_id: str) -> list[str]:
    """Codes of the channels the institution can take payments through."""
    rows = await ChannelAccount.filter(institution_id=institution_id, enabled=True).values_list("channel", flat=True)
    return sorted(rows)


async def list_accounts(institution_id: str) -> list[ChannelAccount]:
    return await ChannelAccount.filter(institution_id=institution_id).order_by("channel")


def account_view(account: ChannelAccount) -> dict:
    """An account as admins see it: ids and gateway, never keys."""
    return {
        "institution_id": account.institution_id,
        "channel": account.channel,
        "app_id": account.app_id,
        "merchant_id": account.merchant_id,
        "sub_merchant_id": account.sub_merchant_id,
        "gateway": account.gateway,
        "enabled": account.enabled,
        "updated_at": iso(account.updated_at),
    }
