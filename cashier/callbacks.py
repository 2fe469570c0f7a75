"""Channel callbacks (``POST /cashier/notify/{channel}``): verified, checked, applied once.

The callback names its order (or merchant) before it is verified; that only chooses whose
keys verify it. A callback that does not verify, or reports a wrong amount, changes nothing
and gets the channel's "fail" reply, so the channel retries or an operator looks. Duplicate
and out-of-order callbacks are harmless: ``settle_payment`` and ``settle_refund`` change an
order or refund only once, under its row lock.
"""

from __future__ import annotations

import logging

from cardcore.runtime import Runtime
from cashier import accounts, channels
from cashier.channels.base import BadCallback, CallbackReply, Channel
from cashier.errors import AmountMismatch, ChannelNotAvailable, OrderNotFound, RefundNotFound
from cashier.models import Order
from cashier.orders import order_as_created, settle_payment
from cashier.refunds import settle_refund

log = logging.getLogger("ehc.cashier.callbacks")


async def _channel_for_callback(
    rt: Runtime, channel_code: str, headers: dict, body: bytes
) -> tuple[Channel | None, Order | None]:
    """The channel account whose keys verify the callback, and the order it names as it was
    created (read once: settling uses it too)."""
    hint = channels.channel_class(channel_code).peek_callback(headers, body)
    if hint.names_an_order:
        # The institution's account at the reporting channel, even if the resident has
        # since chosen another channel: money taken there must still be recorded.
        order = await order_as_created(rt, hint.order_no)
        if order is not None:
            try:
                return await accounts.channel_for(rt, order.institution_id, channel_code), order
            except ChannelNotAvailable:
                return None, None
    if hint.names_a_merchant:
        return await accounts.channel_by_merchant(rt, channel_code, hint.merchant_id), None
    return None, None


async def handle_callback(rt: Runtime, channel_code: str, headers: dict, body: bytes) -> CallbackReply:
    """Apply one callback; the reply is what the channel expects to hear."""
    cls = channels.channel_class(channel_code)
    channel, order = await _channel_for_callback(rt, channel_code, headers, body)
    if channel is None:
        log.warning("callback for no known order or merchant", extra={"channel": channel_code})
        return cls.callback_reply(False)
    try:
        event = await channel.parse_callback(headers, body)
        if event.payment is not None:
            await settle_payment(
                rt, event.payment.order_no, event.payment, f"callback:{channel_code}", channel_code, order
            )
        if event.refund is not None:
            await settle_refund(rt, event.refund.refund_no, event.refund, f"callback:{channel_code}")
    except (BadCallback, AmountMismatch, OrderNotFound, RefundNotFound) as exc:
        log.warning("callback refused", extra={"channel": channel_code, "refusal": exc.code, "reason": exc.message})
        return channel.callback_reply(False)
    return channel.callback_reply(True)

