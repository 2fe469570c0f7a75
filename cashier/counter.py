"""Counter scan pay (``POST /cashier/v1/micropay``): one scan identifies and charges (二码合一).

The scanned text is either the resident's combined code ``VUID:0:VALID:TOKEN`` — verified
by card core in the ``payment`` scene (single use, like any dynamic code), then TOKEN is
charged — or a bare channel payment code. The channel is told by the payment code's
format. When the channel's answer is lost, the platform asks the channel before it answers
(seed 002 §6.8.2.1); while the resident is still confirming on the phone, it asks again
for up to ``EHC_MICROPAY_WAIT_S``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cardcore import crypto
from cardcore.audit import Actor
from cardcore.codes import parse_code_text
from cardcore.runtime import Runtime
from cardcore.text import Readable
from cardcore.verify import verify_code
from cashier import accounts, channels
from cashier.channels.base import ChannelRefused, ChannelUnreachable, PaymentState
from cashier.errors import DuplicateOutTradeNo, PayCodeRequired
from cashier.models import Order, OrderStatus
from cashier.orders import (
    MAX_AMOUNT_FEN,
    UNPAID,
    _mark_closed,
    _mark_paying,
    open_order,
    payment_request,
    settle_payment,
)

log = logging.getLogger("ehc.cashier.counter")

QUERY_INTERVAL_S = 2.0


class MicropayRequest(BaseModel):
    """``POST /cashier/v1/micropay`` (API.md)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    qr_code_text: str = Field(min_length=1, max_length=512, description="combined code or channel payment code, as scanned")
    out_trade_no: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_\-|*@.]+$")
    amount_fen: int = Field(ge=1, le=MAX_AMOUNT_FEN, strict=True)
    subject: Annotated[str, Field(min_length=1, max_length=128), Readable]
    order_type: str = Field("outpatient", pattern="^(registration|outpatient|deposit|prescription)$")
    terminal_id: str | None = Field(None, max_length=40)
    notify_url: Annotated[str, Field(max_length=512, pattern=r"^(https?://\S+)?$", description="optional: also notify the result like any order"), Readable] = ""

    def digest(self) -> str:
        fields = self.model_dump(exclude={"terminal_id"})
        return crypto.sm3_hex(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode())


async def _identify(rt: Runtime, text: str, actor: Actor) -> tuple[str, str | None]:
    """(payment code, health card id) of what was scanned."""
    if ":" not in text:
        return text, None
    verification = await verify_code(rt, text, "payment", actor)
    code = parse_code_text(text)
    if code.kind != "combined" or not code.token:
        raise PayCodeRequired("this health-card code carries no payment code; show the pay code (付款码)")
    return code.token, verification.card["health_card_id"]


async def counter_pay(rt: Runtime, actor: Actor, request: MicropayRequest, client_ip: str) -> Order:
    """Charge at the counter; the order comes back paid, paying (resident still confirming) or closed."""
    assert actor.institution_id is not None
    existing = await Order.get_or_none(institution_id=actor.institution_id, out_trade_no=request.out_trade_no)
    if existing is not None:
        # A retried request (the counter's own timeout): the same charge, never a second one.
        if existing.request_digest != request.digest():
            raise DuplicateOutTradeNo()
        return await _outcome_of_retry(rt, existing)
    pay_code, card_id = await _identify(rt, request.qr_code_text.strip(), actor)
    try:
        channel_code = channels.channel_of_payment_code(pay_code)
    except LookupError:
        raise PayCodeRequired("not a payment code of any channel open here") from None
    channel = await accounts.channel_for(rt, actor.institution_id, channel_code)
    order, created = await open_order(
        rt,
        actor.institution_id,
        request.digest(),
        out_trade_no=request.out_trade_no,
        amount_fen=request.amount_fen,
        subject=request.subject,
        order_type=request.order_type,
        health_card_id=card_id,
        notify_url=request.notify_url,
    )
    if not created:  # the same request arrived twice at once: the first one charges
        return await _outcome_of_retry(rt, order)
    method = f"{channel_code}_micropay"
    await _mark_paying(order, channel_code, method)
    pay_request = payment_request(rt, order, channel_code, method, client_ip)
    try:
        state = await channel.micropay(pay_request, pay_code)
    except ChannelUnreachable:
        log.warning("micropay answer lost; asking the channel", extra={"order_no": order.order_no})
        state = PaymentState(status="paying", order_no=order.order_no)
    except ChannelRefused as exc:
        await _mark_closed(order.order_no, exc.message)
        raise
    await settle_payment(rt, order.order_no, state, "micropay", order=order)
    if state.status != "paid":
        await _await_outcome(rt, await Order.get(order_no=order.order_no))
    return await Order.get(order_no=order.order_no)


async def _outcome_of_retry(rt: Runtime, order: Order) -> Order:
    """The outcome of a charge another request started: wait for it as the counter would."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + rt.settings.micropay_wait_s
    while order.status in UNPAID and loop.time() < deadline:
        if order.status is OrderStatus.paying and order.channel:
            await _await_outcome(rt, order)
        else:  # the other request has not reached the channel yet
            await asyncio.sleep(0.2)
        order = await Order.get(order_no=order.order_no)
    return order


async def _await_outcome(rt: Runtime, order: Order) -> None:
    """Query until the channel says paid or failed, or the wait runs out (the order stays paying)."""
    channel = await accounts.channel_for(rt, order.institution_id, order.channel)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + rt.settings.micropay_wait_s
    while True:
        try:
            state = await channel.query(order.order_no)
        except ChannelUnreachable:
            state = PaymentState(status="paying", order_no=order.order_no)
        if state.status == "paid":
            await settle_payment(rt, order.order_no, state, "query", order=order)
            return
        if state.status in ("closed", "failed"):
            await _mark_closed(order.order_no, "the resident did not confirm the payment")
            return
        if loop.time() + QUERY_INTERVAL_S > deadline:
            return
        await asyncio.sleep(QUERY_INTERVAL_S)
