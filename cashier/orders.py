"""Payment orders: creation, paying through a channel, settlement, closing (SPEC §6).

States: created → paying → paid | closed; paid → refunding → refunded | partially_refunded
(refunds live in ``cashier.refunds``). Every state change is a guarded update inside a
transaction (the row locked by a locking read, or by the guarded update itself), and writes
its hospital notification with it, both or neither (``cashier.notifier.enqueue`` in the
transaction, or the guarded update's ``execute_then_insert``).
``settle_payment`` is the only place that turns what a channel says (callback, query,
counter payment) into a paid order.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from cardcore import crypto
from cardcore.cache import keyed_command
from cardcore.errors import CardNotFound, ValidationFailed
from cardcore.models import Card
from cardcore.clock import as_utc, iso, utcnow
from cardcore.db import PreparedQuery
from cardcore.runtime import Runtime
from cardcore.text import Readable
from cashier import accounts, channels, notifier
from cashier.channels.base import ChannelRefused, PayAction, PaymentRequest, PaymentState, is_order_no, new_order_no
from cashier.errors import (
    AmountMismatch,
    ChannelNotAvailable,
    DuplicateOutTradeNo,
    OrderAlreadyPaid,
    OrderNotFound,
    OrderNotPayable,
)
from cashier.models import Order, OrderStatus

log = logging.getLogger("ehc.cashier")

UNPAID = (OrderStatus.created, OrderStatus.paying)
# A paid order stays paid however often the channel says so again.
SETTLEABLE = (OrderStatus.created, OrderStatus.paying, OrderStatus.closed)
MAX_AMOUNT_FEN = 100_000_000_00  # one hundred million yuan: anything above is a typing error
# The columns closing changes: the statement writes these, not the whole row.
_CLOSED_FIELDS = ("status", "closed_at", "failure_reason", "updated_at")
# Orders are read by number (the page, payments the cache cannot serve) and marked paying
# many times a second: their SQL is built once (cardcore.db.PreparedQuery).
_ORDER_BY_NUMBER = PreparedQuery(Order, lambda order_no: Order.filter(order_no=order_no).limit(1))


def _paying_update(statuses: tuple[OrderStatus, ...]) -> PreparedQuery:
    """Paying: an order in one of ``statuses``, not expired at ``now``, is being paid through ``channel``."""
    return PreparedQuery(
        Order,
        lambda order_no, channel, method, now: Order.filter(
            order_no=order_no, status__in=statuses, expires_at__gt=now
        ).update(status=OrderStatus.paying, channel=channel, method=method, failure_reason=""),
    )


_MARK_PAYING = _paying_update(UNPAID)
# An order's first payment, the one a resident nearly always makes: no other channel to close.
_MARK_FIRST_PAYING = _paying_update((OrderStatus.created,))


def _pay_update(statuses: tuple[OrderStatus, ...]) -> PreparedQuery:
    """Settling: an order in one of ``statuses`` becomes paid, at the channel that reported it."""
    return PreparedQuery(
        Order,
        lambda order_no, paid_fen, insurance_fen, paid_at, channel_trade_no, channel, updated_at: Order.filter(
            order_no=order_no, status__in=statuses
        ).update(
            status=OrderStatus.paid, paid_fen=paid_fen, insurance_fen=insurance_fen, paid_at=paid_at,
            channel_trade_no=channel_trade_no, channel=channel, closed_at=None, updated_at=updated_at,
        ),
    )  # fmt: skip


_PAY_UNPAID = _pay_update(UNPAID)
_PAY_CLOSED = _pay_update((OrderStatus.closed,))


class OrderRequest(BaseModel):
    """``POST /cashier/v1/orders`` (API.md)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    out_trade_no: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_\-|*@.]+$")
    amount_fen: int = Field(ge=1, le=MAX_AMOUNT_FEN, strict=True, description="integer fen")
    subject: Annotated[str, Field(min_length=1, max_length=128), Readable]
    order_type: Literal["registration", "outpatient", "deposit", "prescription"]
    health_card_id: str | None = Field(None, pattern=r"^[0-9A-F]{64}$")
    notify_url: Annotated[str, Field(max_length=512, description="where the platform POSTs the signed result"), Readable]
    return_url: Annotated[str, Field(max_length=512, description="where the cashier page sends the resident afterwards"), Readable] = ""
    expire_minutes: int | None = Field(None, ge=1, le=7 * 24 * 60)

    @field_validator("notify_url", "return_url")
    @classmethod
    def _http_url(cls, value: str, info) -> str:
        if value == "" and info.field_name == "return_url":
            return value
        if not value.startswith(("http://", "https://")) or " " in value:
            raise ValueError("must be an http:// or https:// URL")
        return value

    def digest(self) -> str:
        """Fingerprint of the request, telling a repeated creation from a conflicting one."""
        canonical = json.dumps(self.model_dump(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return crypto.sm3_hex(canonical.encode())


async def create_order(rt: Runtime, institution_id: str, request: OrderRequest) -> tuple[Order, bool]:
    """The order; ``True`` when created now. The same request again returns the same order."""
    if request.health_card_id and not await Card.exists(health_card_id=request.health_card_id):
        raise CardNotFound()
    return await open_order(
        rt,
        institution_id,
        request.digest(),
        out_trade_no=request.out_trade_no,
        amount_fen=request.amount_fen,
        subject=request.subject,
        order_type=request.order_type,
        health_card_id=request.health_card_id,
        notify_url=request.notify_url,
        return_url=request.return_url,
        expires_at=utcnow() + timedelta(minutes=request.expire_minutes or rt.settings.order_expire_minutes),
    )


async def open_order(rt: Runtime, institution_id: str, digest: str, **fields) -> tuple[Order, bool]:
    """Insert an order once per (institution, out_trade_no); ``digest`` tells a retry from a conflict."""
    # Insert first: a new order costs one statement; a repeat (a retry, or the same
    # out_trade_no sent concurrently) meets the unique key and reads the order it made.
    fields.setdefault("expires_at", utcnow() + timedelta(minutes=rt.settings.order_expire_minutes))
    try:
        order = await Order.create(order_no=new_order_no(), institution_id=institution_id, request_digest=digest, **fields)
    except IntegrityError:
        existing = await Order.get_or_none(institution_id=institution_id, out_trade_no=fields["out_trade_no"])
        if existing is None:
            raise  # not the (institution, out_trade_no) key
        if existing.request_digest != digest:
            raise DuplicateOutTradeNo()
        return existing, False
    await _remember_as_created(rt, order)
    return order, True


async def order_or_none(order_no: str) -> Order | None:
    found = await _ORDER_BY_NUMBER.fetch(order_no)
    return found[0] if found else None


# What paying and a channel callback need of an order before anything else: whose channel
# accounts serve it (the institution), what the channel is asked for (amount, subject,
# expiry), and what the notification repeats. None of it changes after creation, so it is
# kept in the cache for the time in which payments are made, and neither reads the order
# (two statements of five per paid order, BENCHMARKS.md). Later payments and callbacks,
# and orders made elsewhere, read the database.
_AS_CREATED = ("order_no", "institution_id", "out_trade_no", "amount_fen", "subject", "notify_url", "expires_at")
AS_CREATED_TTL_S = 30 * 60


def as_created_key(order_no: str) -> str:
    return f"cashier:order:{order_no}"


async def _remember_as_created(rt: Runtime, order: Order) -> None:
    fields = {name: getattr(order, name) for name in _AS_CREATED}
    record = json.dumps({**fields, "expires_at": fields["expires_at"].isoformat()}, ensure_ascii=False)
    await keyed_command(rt.redis, "SET", as_created_key(order.order_no), record, "EX", AS_CREATED_TTL_S)


async def order_as_created(rt: Runtime, order_no: str) -> Order | None:
    """The order ``order_no`` as it was created (status ``created``, nothing paid), from the
    cache, else as the database has it now. Only the fields fixed at creation may be relied
    on; guarded updates find out the rest."""
    record = await keyed_command(rt.redis, "GET", as_created_key(order_no)) if is_order_no(order_no) else None
    fields = json.loads(record) if record is not None else {}
    if fields.keys() != set(_AS_CREATED):  # not cached, or by a version that kept other fields
        return await order_or_none(order_no)
    fields["expires_at"] = datetime.fromisoformat(fields["expires_at"])
    return Order(**fields, status=OrderStatus.created)


async def get_order(order_no: str, institution_id: str | None = None) -> Order:
    """An order; an institution sees only its own (others are not found)."""
    order = await order_or_none(order_no)
    if order is None or (institution_id is not None and order.institution_id != institution_id):
        raise OrderNotFound()
    return order


async def find_order(institution_id: str, out_trade_no: str) -> Order:
    order = await Order.get_or_none(institution_id=institution_id, out_trade_no=out_trade_no)
    if order is None:
        raise OrderNotFound()
    return order


def is_expired(order: Order, moment: datetime | None = None) -> bool:
    return order.expires_at <= (moment or utcnow())


def payment_request(
    rt: Runtime, order: Order, channel_code: str, method: str, client_ip: str, payer_id: str = ""
) -> PaymentRequest:
    return PaymentRequest(
        order_no=order.order_no,
        amount_fen=order.amount_fen,
        subject=order.subject,
        expires_at=order.expires_at,
        notify_url=f"{rt.settings.base_url}/cashier/notify/{channel_code}",
        return_url=f"{rt.settings.base_url}/cashier/{order.order_no}/result",
        client_ip=client_ip,
        method=method,
        payer_id=payer_id,
    )


async def _mark_paying(order: Order, channel_code: str, method: str) -> None:
    changed = await _MARK_PAYING.execute(order.order_no, channel_code, method, utcnow())
    if not changed:
        current = await Order.get(order_no=order.order_no)
        raise OrderNotPayable("the order has expired" if is_expired(current) else f"the order is {current.status.value}")
    order.status, order.channel, order.method = OrderStatus.paying, channel_code, method


async def start_payment(rt: Runtime, order_no: str, method: str, *, client_ip: str, payer_id: str = "") -> PayAction:
    """Open the payment at the channel serving ``method``; the answer tells the page what to do."""
    try:
        channel_code = channels.channel_of_method(method)
    except LookupError:
        raise ValidationFailed(f"unknown pay method {method}") from None
    first = await _start_first_payment(rt, order_no, channel_code, method, client_ip, payer_id)
    if first is not None:
        return first
    order = await get_order(order_no)
    if order.status not in UNPAID or is_expired(order):
        raise OrderNotPayable("the order is paid, closed or expired")
    channel = await accounts.channel_for(rt, order.institution_id, channel_code)
    if order.status is OrderStatus.paying and order.channel and order.channel != channel_code:
        # The resident changes channel: the first one must not be able to take the money too.
        await _close_at_channel(rt, order)
    await _mark_paying(order, channel_code, method)
    return await channel.create_payment(payment_request(rt, order, channel_code, method, client_ip, payer_id))


async def _start_first_payment(
    rt: Runtime, order_no: str, channel_code: str, method: str, client_ip: str, payer_id: str
) -> PayAction | None:
    """An order's first payment, from the order as created and one guarded update. None when
    it is not that (paid, closed, expired, being paid, the channel not open): the caller then
    reads the order, and closes another channel or says why it cannot be paid."""
    order = await order_as_created(rt, order_no)
    if order is None or order.status is not OrderStatus.created or is_expired(order):
        return None
    try:
        channel = await accounts.channel_for(rt, order.institution_id, channel_code)
    except ChannelNotAvailable:
        return None
    if not await _MARK_FIRST_PAYING.execute(order_no, channel_code, method, utcnow()):
        return None
    return await channel.create_payment(payment_request(rt, order, channel_code, method, client_ip, payer_id))


async def settle_payment(
    rt: Runtime,
    order_no: str,
    state: PaymentState,
    source: str,
    channel: str | None = None,
    order: Order | None = None,
) -> bool:
    """Record what the channel says about a payment; ``True`` when the order became paid now.

    Anything but "paid" changes nothing (closing is the platform's decision, on expiry or on
    request). A wrong amount is refused. Duplicates, in any order, are no-ops. ``channel``
    names the reporting channel when it may not be the order's latest choice (callbacks).
    ``order`` is the order as the caller just read it, if it did: it is not read again.
    """
    if state.status != "paid":
        return False
    if order is None or order.order_no != order_no:
        order = await order_or_none(order_no)
        if order is None:
            raise OrderNotFound()
    if state.amount_fen != order.amount_fen:
        log.error(
            "channel reports a different amount",
            extra={"order_no": order_no, "source": source, "order_fen": order.amount_fen, "channel_fen": state.amount_fen},
        )
        raise AmountMismatch(details={"order_fen": order.amount_fen, "channel_fen": state.amount_fen})
    if order.status not in SETTLEABLE:
        return False  # paid already: no state leads back from paid, so a stale read is right here
    paid = {
        "paid_fen": state.amount_fen,
        "insurance_fen": int(state.insurance_fen or 0),
        "paid_at": as_utc(state.paid_at) or utcnow(),
        "channel_trade_no": str(state.channel_trade_no or ""),
        # Without ``channel`` the caller asked the order's own channel (a query), as read.
        "channel": channel or order.channel or "",
        "updated_at": utcnow(),
    }
    settled = {**paid, "status": OrderStatus.paid, "closed_at": None}
    reported = copy.copy(order)  # the order once paid, as its notification reports it
    for name, value in settled.items():
        setattr(reported, name, value)
    notification = notifier.new_notification(reported, "order.paid")
    # Guarded updates, each writing the notification only if it changed the order: of
    # concurrent duplicates, exactly one finds the order unpaid.
    changed = await _PAY_UNPAID.execute_then_insert(notification, order_no=order_no, **paid)
    if not changed:
        changed = await _PAY_CLOSED.execute_then_insert(notification, order_no=order_no, **paid)
        if changed:
            # Money moved although the order was closed: the channel is right, the institution refunds.
            log.warning("payment after close", extra={"order_no": order_no, "source": source})
    if not changed:
        return False
    for name, value in settled.items():
        setattr(order, name, value)
    notifier.wake()
    log.info("order paid", extra={"order_no": order_no, "source": source, "channel": order.channel})
    return True


async def _mark_closed(order_no: str, reason: str = "") -> bool:
    async with in_transaction() as conn:
        order = await Order.select_for_update().using_db(conn).get(order_no=order_no)
        if order.status not in UNPAID:
            return False
        order.status = OrderStatus.closed
        order.closed_at = utcnow()
        if reason:
            order.failure_reason = reason[:255]
        await order.save(using_db=conn, update_fields=_CLOSED_FIELDS)
        await notifier.enqueue(conn, order, "order.closed")
    notifier.wake()
    return True


async def _close_at_channel(rt: Runtime, order: Order) -> None:
    """Close the order at its channel, unless the channel has it paid: then settle it and refuse."""
    channel = await accounts.channel_for(rt, order.institution_id, order.channel)

    async def refuse_if_paid() -> None:
        state = await channel.query(order.order_no)
        if state.status == "paid":
            await settle_payment(rt, order.order_no, state, "query", order=order)
            raise OrderAlreadyPaid()

    await refuse_if_paid()
    try:
        await channel.close(order.order_no)
    except ChannelRefused:
        await refuse_if_paid()  # paid in between; any other refusal is the channel's to explain
        raise


async def close_order(rt: Runtime, order_no: str, institution_id: str | None = None, reason: str = "") -> Order:
    """Close an unpaid order here and at its channel. A paid order is refused (refund it)."""
    order = await get_order(order_no, institution_id)
    if order.status is OrderStatus.closed:
        return order
    if order.status not in UNPAID:
        raise OrderAlreadyPaid()
    if order.channel:
        await _close_at_channel(rt, order)
    if not await _mark_closed(order_no, reason):
        order = await get_order(order_no)
        if order.status is not OrderStatus.closed:
            raise OrderAlreadyPaid()
    return await get_order(order_no)


async def query_and_settle(rt: Runtime, order: Order) -> PaymentState:
    """Ask the order's channel how the payment stands, and record it."""
    channel = await accounts.channel_for(rt, order.institution_id, order.channel)
    state = await channel.query(order.order_no)
    await settle_payment(rt, order.order_no, state, "query", order=order)
    return state


@dataclass(frozen=True)
class ChannelChoice:
    method: str
    channel: str
    title: str


# What the cashier page offers, in this order (API.md channel codes).
PAGE_METHODS = (
    ChannelChoice("wechat_jsapi", "wechat", "微信支付"),
    ChannelChoice("wechat_h5", "wechat", "微信支付"),
    ChannelChoice("alipay_wap", "alipay", "支付宝"),
    ChannelChoice("unionpay", "unionpay", "银联云闪付"),
    ChannelChoice("insurance", "insurance", "医保移动支付"),
)


def methods_for_browser(user_agent: str, open_channels: list[str]) -> list[ChannelChoice]:
    """Channels that work where the page is open: WeChat → WeChat Pay, Alipay → Alipay, else all."""
    if "MicroMessenger" in user_agent:
        wanted = {"wechat_jsapi", "insurance"}
    elif "AlipayClient" in user_agent:
        wanted = {"alipay_wap", "insurance"}
    else:
        wanted = {"wechat_h5", "alipay_wap", "unionpay", "insurance"}
    return [c for c in PAGE_METHODS if c.method in wanted and c.channel in open_channels]


def order_view(rt: Runtime, order: Order) -> dict:
    return {
        "order_no": order.order_no,
        "out_trade_no": order.out_trade_no,
        "amount_fen": order.amount_fen,
        "subject": order.subject,
        "order_type": order.order_type,
        "health_card_id": order.health_card_id,
        "status": order.status.value,
        "channel": order.channel,
        "method": order.method,
        "channel_trade_no": order.channel_trade_no,
        "paid_fen": order.paid_fen,
        "insurance_fen": order.insurance_fen,
        "self_pay_fen": order.paid_fen - order.insurance_fen,
        "refunded_fen": order.refunded_fen,
        "failure_reason": order.failure_reason,
        "cashier_url": f"{rt.settings.base_url}/cashier/{order.order_no}",
        "return_url": order.return_url,
        "expires_at": iso(order.expires_at),
        "paid_at": iso(order.paid_at),
        "closed_at": iso(order.closed_at),
        "created_at": iso(order.created_at),
    }
