"""Merchant accounts of institutions at the payment channels, and the channel objects built
from them. Keys are stored sealed under the vault's data key and opened only here.

The institution id ``platform`` holds the platform's own accounts: they sign residents'
payment agreements and issue the payment codes carried in combined codes.

Paying, and hearing back from a channel, needs the institution's account there each time:
it is read through the shared cache (``ACCOUNT_RECORDS``, a stamped record like a card's),
so a payment costs one cache read instead of a database query, and ``save_account`` marks
the record changed, so every worker uses an admin's change from the next payment on.
"""

from __future__ import annotations

import json

from cardcore import access
from cardcore.cache import StampedRecords
from cardcore.clock import iso
from cardcore.models import ClientKind
from cardcore.runtime import Runtime
from cashier import channels
from cashier.channels.base import Channel, MerchantConfig
from cashier.errors import ChannelNotAvailable
from cashier.models import ChannelAccount

PLATFORM_ACCOUNT = "platform"
ACCOUNT_RECORD_S = 300

# Built channels by account id, rebuilt when the account changes; a channel keeps its SDK
# client (and that client's connections) for as long as the account stays the same.
_built: dict[int, tuple[str, Channel]] = {}


async def save_account(rt: Runtime, institution_id: str, config: MerchantConfig, enabled: bool = True) -> ChannelAccount:
    """Create or replace an institution's account at ``config.channel``."""
    channels.channel_class(config.channel)  # refuses an unknown channel code
    await _require_institution(institution_id)
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
    await ACCOUNT_RECORDS.changed(rt, _record_id(institution_id, config.channel))
    return account


def _record_id(institution_id: str, channel_code: str) -> str:
    return f"{institution_id}:{channel_code}"  # channel codes hold no ':'


async def _read_account(rt: Runtime, record_id: str) -> bytes:
    institution_id, _, channel_code = record_id.rpartition(":")
    account = await ChannelAccount.get_or_none(institution_id=institution_id, channel=channel_code, enabled=True)
    if account is None:
        return b"null"  # remembered too: opening the account marks the record changed
    return json.dumps(
        {
            "id": account.id,
            "channel": account.channel,
            "app_id": account.app_id,
            "merchant_id": account.merchant_id,
            "sub_merchant_id": account.sub_merchant_id,
            "gateway": account.gateway,
            "secrets_sealed": account.secrets_sealed,
            "updated_at": iso(account.updated_at),
        }
    ).encode()


def _channel_of_record(rt: Runtime, payload: bytes) -> Channel | None:
    record = json.loads(payload)
    if record is None:
        return None
    cached = _built.get(record["id"])
    if cached is not None and cached[0] == record["updated_at"]:
        return cached[1]
    config = MerchantConfig(
        channel=record["channel"],
        app_id=record["app_id"],
        merchant_id=record["merchant_id"],
        secrets=json.loads(rt.vault.decrypt_text(record["secrets_sealed"])),
        gateway=record["gateway"],
        sub_merchant_id=record["sub_merchant_id"],
    )
    channel = channels.build(config)
    _built[record["id"]] = (record["updated_at"], channel)
    return channel


# An institution's enabled account at one channel, as its built Channel (None: no such account).
ACCOUNT_RECORDS: StampedRecords[Channel | None] = StampedRecords(
    "chanacct:", ttl_s=ACCOUNT_RECORD_S, read=_read_account, decode=_channel_of_record
)


async def channel_for(rt: Runtime, institution_id: str, channel_code: str) -> Channel:
    channel = (await ACCOUNT_RECORDS.current(rt, _record_id(institution_id, channel_code))).value
    if channel is None:
        raise ChannelNotAvailable(f"channel {channel_code} is not open for this institution")
    return channel


async def channel_by_merchant(rt: Runtime, channel_code: str, merchant_id: str) -> Channel | None:
    """The channel of the account a callback names by merchant id (refund callbacks of WeChat)."""
    account = await ChannelAccount.filter(channel=channel_code, merchant_id=merchant_id, enabled=True).first()
    if account is None:
        return None
    return await channel_for(rt, account.institution_id, channel_code)


async def open_channels(institution_id: str) -> list[str]:
    """Codes of the channels the institution can take payments through."""
    rows = await ChannelAccount.filter(institution_id=institution_id, enabled=True).values_list("channel", flat=True)
    return sorted(rows)


async def _require_institution(institution_id: str) -> None:
    """Accounts belong to the platform or to a registered institution: NOT_FOUND for any other id."""
    if institution_id != PLATFORM_ACCOUNT:
        await access.get_client(institution_id, ClientKind.institution)


async def list_accounts(institution_id: str) -> list[ChannelAccount]:
    await _require_institution(institution_id)
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
