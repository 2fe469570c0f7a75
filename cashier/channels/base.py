"""The one interface every payment channel implements (one class per channel, looked up
by channel code), so the cashier's rules never depend on a channel's protocol.

Amounts are integer fen everywhere. Channel SDKs are synchronous: implementations run
them through ``cardcore.providers._threads.run_sync`` (bounded ``asyncio.to_thread``).
Implementations raise ``ChannelUnreachable`` for network-level failures and timeouts,
so the cashier can query the channel for the real outcome before it answers
(seed 002 §6.8.2.1), and ``ChannelRefused`` when the channel answers with a refusal.
"""

from __future__ import annotations

import re
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from cardcore.clock import utcnow
from cardcore.errors import PlatformError

PayStatus = Literal["paid", "paying", "closed", "failed", "not_found"]
RefundStatus = Literal["succeeded", "processing", "failed", "not_found"]


_ISSUE_TIME = "%Y%m%d%H%M%S"
_NUMBER = re.compile(r"[A-Z]{0,4}(\d{14})")
ORDER_NO_PATTERN = "[0-9]{28}"  # what new_order_no() gives an order
_ORDER_NO = re.compile(ORDER_NO_PATTERN)


def new_order_no(prefix: str = "") -> str:
    """An order or refund number, sent to channels as their out_trade_no / orderId.

    Time-ordered and unguessable (the cashier page is reached by it, without login). It
    starts with the UTC moment it was issued, which ``issued_at`` reads back: channels that
    name a transaction by number and time together (UnionPay) need the same time whenever
    they name it again.
    """
    return f"{prefix}{utcnow():{_ISSUE_TIME}}{secrets.randbelow(10**14):014d}"


def is_order_no(text: str) -> bool:
    """Whether ``text`` has the form of an order's number (anything else names no order)."""
    return _ORDER_NO.fullmatch(text) is not None


def issued_at(number: str) -> datetime | None:
    """When a number of ``new_order_no``'s form was issued (UTC); ``None`` for other numbers."""
    match = _NUMBER.match(number)
    if match is None:
        return None
    try:
        return datetime.strptime(match[1], _ISSUE_TIME).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


class ChannelUnreachable(PlatformError):
    """No answer, or no readable answer: the outcome at the channel is unknown."""

    code, status, message = "CHANNEL_UNAVAILABLE", 503, "the payment channel did not answer"


class ChannelRefused(PlatformError):
    """The channel answered and said no (insufficient balance, wrong code, closed order…)."""

    code, status, message = "CHANNEL_REFUSED", 402, "the payment channel refused"


class BadCallback(PlatformError):
    """A callback that is not from the channel (signature) or not about our order."""

    code, status, message = "BAD_CALLBACK", 400, "callback refused"


@dataclass(frozen=True)
class MerchantConfig:
    """One institution's account at one channel: ids and keys, opened from their sealed form."""

    channel: str
    app_id: str
    merchant_id: str
    secrets: dict = field(repr=False)  # api_key, private keys, … by name; never logged
    gateway: str = ""  # base URL of the channel's API (the mock in dev and test)
    sub_merchant_id: str = ""


@dataclass(frozen=True)
class PaymentRequest:
    order_no: str  # the platform's order number, sent as the channel's out_trade_no
    amount_fen: int
    subject: str
    expires_at: datetime
    notify_url: str  # the platform's callback URL for this channel
    return_url: str  # where the resident's browser goes afterwards (H5 channels)
    client_ip: str
    method: str  # wechat_jsapi, wechat_h5, wechat_mini, alipay_wap, alipay_app, unionpay, insurance
    payer_id: str = ""  # openid for wechat_jsapi / wechat_mini; insurance card holder for insurance


@dataclass(frozen=True)
class PayAction:
    """What the cashier page does next (API.md ``POST /cashier/{order_no}/pay``)."""

    action: Literal["redirect", "jsapi", "app", "qr"]
    data: dict


@dataclass(frozen=True)
class PaymentState:
    status: PayStatus
    order_no: str
    amount_fen: int | None = None  # what the channel says was paid
    channel_trade_no: str = ""
    paid_at: datetime | None = None
    # Medical-insurance split: the part the fund pays and the part the resident pays.
    insurance_fen: int = 0
    self_pay_fen: int | None = None


@dataclass(frozen=True)
class RefundState:
    status: RefundStatus
    refund_no: str
    amount_fen: int | None = None
    channel_refund_no: str = ""
    finished_at: datetime | None = None


@dataclass(frozen=True)
class CallbackEvent:
    """A verified callback: a payment state or a refund state, plus the reply to send."""

    payment: PaymentState | None = None
    refund: RefundState | None = None


@dataclass(frozen=True)
class CallbackHint:
    """What an unverified callback says it is about: only used to find whose keys verify it."""

    order_no: str = ""
    merchant_id: str = ""

    @property
    def names_an_order(self) -> bool:
        return is_order_no(self.order_no)

    @property
    def names_a_merchant(self) -> bool:
        # Merchant ids are short printable ASCII (ChannelAccount.merchant_id holds 64).
        merchant_id = self.merchant_id
        return 0 < len(merchant_id) <= 64 and merchant_id.isascii() and merchant_id.isprintable()


@dataclass(frozen=True)
class BillRecord:
    """One line of a channel's daily statement, read back by ``Channel.parse_bill``."""

    kind: Literal["payment", "refund"]
    order_no: str  # our order_no (the channel's out_trade_no)
    amount_fen: int  # paid amount of a payment line, refunded amount of a refund line
    channel_trade_no: str = ""
    refund_no: str = ""  # our refund_no (the channel's out_refund_no) on refund lines
    channel_refund_no: str = ""
    fee_fen: int = 0  # the channel's service fee on this line (negative on refunds when returned)
    status: str = ""  # the channel's own status word on the line (SUCCESS, REFUND, …)
    at: datetime | None = None
    insurance_fen: int = 0  # medical insurance: the fund's part of amount_fen


@dataclass(frozen=True)
class CallbackReply:
    status: int
    content_type: str
    body: bytes


class Channel(ABC):
    """A payment channel. ``code`` names it ("wechat", "alipay", "unionpay", "insurance");
    ``methods`` are the pay methods it serves."""

    code: str
    methods: tuple[str, ...]

    def __init__(self, config: MerchantConfig) -> None:
        self.config = config

    @abstractmethod
    async def create_payment(self, request: PaymentRequest) -> PayAction: ...

    @abstractmethod
    async def micropay(self, request: PaymentRequest, auth_code: str) -> PaymentState:
        """Charge a payment code scanned at the counter (付款码/条码支付)."""

    @abstractmethod
    async def query(self, order_no: str) -> PaymentState: ...

    @abstractmethod
    async def close(self, order_no: str) -> None:
        """Close an unpaid order at the channel; closing one the channel never saw is fine."""

    @abstractmethod
    async def refund(
        self, order_no: str, refund_no: str, total_fen: int, refund_fen: int, reason: str, notify_url: str = ""
    ) -> RefundState:
        """Ask for a refund; ``notify_url`` is where the channel reports its result (without it:
        the order's notify URL, or the one configured at the channel)."""

    @abstractmethod
    async def query_refund(self, order_no: str, refund_no: str) -> RefundState: ...

    @classmethod
    @abstractmethod
    def peek_callback(cls, headers: dict[str, str], body: bytes) -> CallbackHint:
        """Read the order number and merchant id of a callback without verifying it (nothing
        else may be trusted before ``parse_callback``); empty hint when it cannot be read."""

    @abstractmethod
    async def parse_callback(self, headers: dict[str, str], body: bytes) -> CallbackEvent:
        """Verify a callback's signature and read it; BadCallback when it does not verify."""

    @classmethod
    @abstractmethod
    def callback_reply(cls, accepted: bool) -> CallbackReply:
        """The answer the channel expects (WeChat: XML SUCCESS/FAIL; Alipay: "success"/"fail")."""

    @abstractmethod
    async def download_bill(self, day: str) -> str:
        """The channel's statement of one day (YYYY-MM-DD) as text in its own format."""

    def parse_bill(self, text: str) -> list[BillRecord]:
        """The payment and refund lines of a statement returned by ``download_bill``."""
        raise NotImplementedError(f"{self.code} has no bill parser")

    # Combined pay code (二码合一, SPEC §3): the resident binds a payment account once,
    # then every code shown carries a fresh payment code (付款码) the counter charges with
    # ``micropay``.

    async def sign_agreement(self, payer_id: str) -> str:
        """Bind the payer's account at the channel (签约); returns the channel's agreement id."""
        raise NotImplementedError(f"{self.code} has no payment agreements")

    async def payment_token(self, agreement_id: str) -> str:
        """A fresh single-use payment code (付款码) for the agreement, charged by ``micropay``."""
        raise NotImplementedError(f"{self.code} issues no payment codes")
