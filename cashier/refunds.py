"""Refunds: full or partial, several per order, never above the paid amount (SPEC §6).

The order row is locked while a refund is admitted, and its ``refunded_fen`` counts the
succeeded and the in-flight refunds, so concurrent requests can never refund more than was
paid. The channel is called after the admission commits; its answer, a callback or a later
query settles the refund (``settle_refund``), each exactly once.
"""

from __future__ import annotations

import logging
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from cardcore.clock import as_utc, iso, utcnow
from cardcore.runtime import Runtime
from cardcore.text import Readable
from cashier import accounts, notifier
from cashier.channels.base import ChannelRefused, ChannelUnreachable, RefundState, new_order_no
from cashier.errors import (
    AmountMismatch,
    DuplicateOutRefundNo,
    OrderNotRefundable,
    RefundExceedsPaid,
    RefundNotFound,
)
from cashier.models import Order, OrderStatus, Refund, RefundStatus
from cashier.orders import get_order

log = logging.getLogger("ehc.cashier.refunds")

REFUNDABLE = (OrderStatus.paid, OrderStatus.refunding, OrderStatus.partially_refunded)


class RefundRequest(BaseModel):
    """``POST /cashier/v1/orders/{order_no}/refunds`` (API.md)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    out_refund_no: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_\-|*@.]+$")
    amount_fen: int = Field(ge=1, strict=True, description="integer fen")
    reason: Annotated[str, Field(max_length=255), Readable] = ""


async def create_refund(rt: Runtime, institution_id: str, order_no: str, request: RefundRequest) -> tuple[Refund, bool]:
    """The refund; ``True`` when admitted now. The same out_refund_no again returns the same refund."""
    order = await get_order(order_no, institution_id)
    existing = await Refund.get_or_none(institution_id=institution_id, out_refund_no=request.out_refund_no)
    if existing is not None:
        return _same_refund(existing, order_no, request), False
    try:
        refund = await _admit(order, request)
    except IntegrityError:
        existing = await Refund.get(institution_id=institution_id, out_refund_no=request.out_refund_no)
        return _same_refund(existing, order_no, request), False
    await _ask_channel(rt, order, refund)
    return await Refund.get(refund_no=refund.refund_no), True


def _same_refund(refund: Refund, order_no: str, request: RefundRequest) -> Refund:
    if refund.order_id != order_no or refund.amount_fen != request.amount_fen:
        raise DuplicateOutRefundNo()
    return refund


async def _admit(order: Order, request: RefundRequest) -> Refund:
    async with in_transaction() as conn:
        locked = await Order.select_for_update().using_db(conn).get(order_no=order.order_no)
        if locked.status not in REFUNDABLE:
            raise OrderNotRefundable(f"the order is {locked.status.value}")
        refundable = locked.paid_fen - locked.refunded_fen
        if request.amount_fen > refundable:
            raise RefundExceedsPaid(details={"refundable_fen": refundable})
        locked.refunded_fen += request.amount_fen
        locked.status = OrderStatus.refunding
        await locked.save(using_db=conn, update_fields=["refunded_fen", "status", "updated_at"])
        return await Refund.create(
            using_db=conn,
            refund_no=new_order_no("R"),
            order_id=locked.order_no,
            institution_id=locked.institution_id,
            out_refund_no=request.out_refund_no,
            amount_fen=request.amount_fen,
            reason=request.reason,
        )


async def _ask_channel(rt: Runtime, order: Order, refund: Refund) -> None:
    channel = await accounts.channel_for(rt, order.institution_id, order.channel)
    try:
        state = await channel.refund(
            order.order_no, refund.refund_no, order.paid_fen, refund.amount_fen, refund.reason,
            notify_url=f"{rt.settings.base_url}/cashier/notify/{order.channel}",
        )
    except ChannelUnreachable:
        # Outcome unknown: the refund stays processing; the sweeper asks the channel.
        log.warning("refund outcome unknown", extra={"refund_no": refund.refund_no})
        return
    except ChannelRefused as exc:
        state = RefundState(status="failed", refund_no=refund.refund_no)
        await Refund.filter(refund_no=refund.refund_no).update(reason=f"{refund.reason} [{exc.message}]"[:255])
    await settle_refund(rt, refund.refund_no, state, "refund")


async def settle_refund(rt: Runtime, refund_no: str, state: RefundState, source: str) -> bool:
    """Record a refund's final outcome; ``True`` when this call finished it."""
    if state.status not in ("succeeded", "failed"):
        return False
    refund = await Refund.get_or_none(refund_no=refund_no)
    if refund is None:
        raise RefundNotFound()
    async with in_transaction() as conn:
        # Lock order then refund, the order the admission takes them in.
        order = await Order.select_for_update().using_db(conn).get(order_no=refund.order_id)
        refund = await Refund.select_for_update().using_db(conn).get(refund_no=refund_no)
        if refund.status is not RefundStatus.processing:
            return False
        if state.status == "succeeded":
            if state.amount_fen is not None and state.amount_fen != refund.amount_fen:
                raise AmountMismatch(details={"refund_fen": refund.amount_fen, "channel_fen": state.amount_fen})
            refund.status = RefundStatus.succeeded
            refund.channel_refund_no = state.channel_refund_no
            refund.finished_at = as_utc(state.finished_at) or utcnow()
            event = "refund.succeeded"
        else:
            refund.status = RefundStatus.failed
            refund.finished_at = utcnow()
            order.refunded_fen -= refund.amount_fen
            event = "refund.failed"
        await refund.save(using_db=conn)
        order.status = await _status_after_refunds(conn, order, refund)
        await order.save(using_db=conn)
        await notifier.enqueue(conn, order, event, refund)
    notifier.wake()
    log.info("refund settled", extra={"refund_no": refund_no, "result": state.status, "source": source})
    return True


async def _status_after_refunds(conn, order: Order, settled: Refund) -> OrderStatus:
    others = await Refund.filter(order_id=order.order_no).exclude(refund_no=settled.refund_no).using_db(conn).values_list(
        "status", "amount_fen"
    )
    statuses = [RefundStatus(s) for s, _ in others] + [settled.status]
    if RefundStatus.processing in statuses:
        return OrderStatus.refunding
    succeeded = sum(a for s, a in others if RefundStatus(s) is RefundStatus.succeeded)
    if settled.status is RefundStatus.succeeded:
        succeeded += settled.amount_fen
    if succeeded == 0:
        return OrderStatus.paid
    return OrderStatus.refunded if succeeded >= order.paid_fen else OrderStatus.partially_refunded


async def query_and_settle_refund(rt: Runtime, refund: Refund) -> RefundState:
    order = await get_order(refund.order_id)
    channel = await accounts.channel_for(rt, order.institution_id, order.channel)
    state = await channel.query_refund(order.order_no, refund.refund_no)
    await settle_refund(rt, refund.refund_no, state, "query")
    return state


async def get_refund(refund_no: str, institution_id: str | None = None) -> Refund:
    refund = await Refund.get_or_none(refund_no=refund_no)
    if refund is None or (institution_id is not None and refund.institution_id != institution_id):
        raise RefundNotFound()
    return refund


def refund_view(refund: Refund) -> dict:
    return {
        "refund_no": refund.refund_no,
        "order_no": refund.order_id,
        "out_refund_no": refund.out_refund_no,
        "amount_fen": refund.amount_fen,
        "reason": refund.reason,
        "status": refund.status.value,
        "channel_refund_no": refund.channel_refund_no,
        "created_at": iso(refund.created_at),
        "finished_at": iso(refund.finished_at),
    }
