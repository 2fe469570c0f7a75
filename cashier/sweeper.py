"""The sweeper: asks the channels about payments and refunds that went silent, and closes
expired orders, here and at the channel (SPEC §6, seed 002 §6.8.2.1).

One sweep at a time across all workers and hosts (a Redis lock), each item on its own, so
one unreachable channel delays only its own orders.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from cardcore.clock import utcnow
from cardcore.runtime import Runtime
from cashier.channels.base import ChannelUnreachable
from cardcore.errors import PlatformError
from cashier.models import Order, OrderStatus, Refund, RefundStatus
from cashier.orders import UNPAID, close_order, query_and_settle
from cashier.refunds import query_and_settle_refund

log = logging.getLogger("ehc.cashier.sweeper")

BATCH = 100
LOCK_KEY = "cashier:sweeper"


async def sweep(rt: Runtime) -> dict[str, int]:
    """One pass; returns how many orders and refunds it looked at, by kind."""
    if not await rt.redis.set(LOCK_KEY, b"1", nx=True, ex=max(rt.settings.sweep_interval_s, 5)):
        return {}
    try:
        return {
            "expired": await _close_expired(rt),
            "silent_payments": await _query_silent(
                rt, Order, OrderStatus.paying, query_and_settle, "query payment", "order_no"
            ),
            "silent_refunds": await _query_silent(
                rt, Refund, RefundStatus.processing, query_and_settle_refund, "query refund", "refund_no"
            ),
        }
    finally:
        await rt.redis.delete(LOCK_KEY)


async def _close_expired(rt: Runtime) -> int:
    rows = await Order.filter(status__in=UNPAID, expires_at__lte=utcnow()).order_by("expires_at").limit(BATCH)
    for order in rows:
        await _each(close_order(rt, order.order_no, reason="expired"), "close expired", order.order_no)
    return len(rows)


async def _query_silent(rt: Runtime, model, status, ask, what: str, key: str) -> int:
    """Ask the channel about rows in ``status`` that have been quiet for a while."""
    quiet_since = utcnow() - timedelta(seconds=rt.settings.channel_query_after_s)
    rows = await model.filter(status=status, updated_at__lte=quiet_since).order_by("updated_at").limit(BATCH)
    for row in rows:
        subject = getattr(row, key)
        await _each(ask(rt, row), what, subject)
        # Asked now: the next question comes after another quiet period.
        await model.filter(**{key: subject, "status": status}).update(updated_at=utcnow())
    return len(rows)


async def _each(work, what: str, subject: str) -> None:
    try:
        await work
    except ChannelUnreachable:
        log.info("%s: channel unreachable, next sweep tries again", what, extra={"subject": subject})
    except PlatformError as exc:
        log.warning("%s refused", what, extra={"subject": subject, "refusal": exc.code, "reason": exc.message})
    except Exception:  # one broken item must not stop the sweep
        log.exception("%s failed", what, extra={"subject": subject})
