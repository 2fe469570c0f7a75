"""``cardcore.db.PreparedQuery``: the ORM's SQL built once, then the same rows and the same
changes as the ORM's own query, on both backends."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta

import pytest
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from cardcore.clock import utcnow
from cardcore.db import PreparedQuery
from cashier.models import Notification, NotificationAttempt, Order, OrderStatus

BY_NUMBER = PreparedQuery(Order, lambda order_no: Order.filter(order_no=order_no).limit(1))
RENAME_UNPAID = PreparedQuery(
    Order,
    lambda order_no, subject: Order.filter(
        order_no=order_no, status__in=(OrderStatus.created, OrderStatus.paying)
    ).update(subject=subject),
)
# Renames an order only while it has its first subject: of concurrent renames, one applies.
RENAME_UNPAID_ONCE = PreparedQuery(
    Order,
    lambda order_no, subject: Order.filter(order_no=order_no, subject="门诊缴费").update(subject=subject),
)

REPRICE = PreparedQuery(
    Order, lambda order_no, fen, until: Order.filter(order_no=order_no).update(amount_fen=fen, expires_at=until)
)


async def new_order(**fields) -> Order:
    number = "P" + secrets.token_hex(10)
    return await Order.create(
        order_no=number, institution_id="INST-PREPARED", out_trade_no=number, request_digest="0" * 64,
        amount_fen=1000, subject="门诊缴费", order_type="outpatient", notify_url="http://127.0.0.1:9/notify",
        expires_at=utcnow() + timedelta(minutes=30), **fields,
    )  # fmt: skip


def columns(order: Order) -> dict:
    return {name: getattr(order, name) for name in Order._meta.db_fields}


async def test_reads_the_rows_the_orm_reads(rt):
    made = [await new_order(status=status) for status in (OrderStatus.created, OrderStatus.paid, OrderStatus.closed)]
    for order in made:  # the first call builds the SQL, the others reuse it with their own number
        [found] = await BY_NUMBER.fetch(order.order_no)
        assert isinstance(found, Order)
        assert columns(found) == columns(await Order.get(order_no=order.order_no))
    assert await BY_NUMBER.fetch("P" + secrets.token_hex(10)) == []


async def test_changes_the_rows_the_orm_would_and_keeps_text_as_sent(rt):
    unpaid, paid = await new_order(), await new_order(status=OrderStatus.paid)
    subject = "药房'; DROP TABLE cashier_order; --\"二楼"
    assert await RENAME_UNPAID.execute(unpaid.order_no, subject) == 1
    assert await RENAME_UNPAID.execute(paid.order_no, subject) == 0
    assert (await Order.get(order_no=unpaid.order_no)).subject == subject
    assert (await Order.get(order_no=paid.order_no)).subject == "门诊缴费"


async def test_runs_inside_the_callers_transaction(rt):
    order = await new_order()
    with pytest.raises(RuntimeError):
        async with in_transaction() as conn:
            assert await RENAME_UNPAID.execute(order.order_no, "changed", using_db=conn) == 1
            [seen] = await BY_NUMBER.fetch(order.order_no, using_db=conn)
            assert seen.subject == "changed"
            raise RuntimeError("roll back")
    assert (await Order.get(order_no=order.order_no)).subject == "门诊缴费"


async def test_numbers_and_datetimes_are_sent_as_the_orm_sends_them(rt):
    order, other = await new_order(), await new_order()
    when = utcnow().replace(microsecond=123456) + timedelta(days=3)
    assert await REPRICE.execute(order.order_no, 4321, when) == 1
    assert await REPRICE.execute(other.order_no, 0, when - timedelta(days=1)) == 1
    changed, untouched = await Order.get(order_no=order.order_no), await Order.get(order_no=other.order_no)
    assert (changed.amount_fen, changed.expires_at) == (4321, when)
    assert (untouched.amount_fen, untouched.expires_at) == (0, when - timedelta(days=1))


async def test_arguments_must_be_of_the_kinds_it_was_built_for_and_reach_the_query_unchanged(rt):
    order = await new_order()
    with pytest.raises(TypeError):
        await BY_NUMBER.fetch(12345)  # built for text
    with pytest.raises(TypeError):
        await REPRICE.execute(order.order_no, 100, utcnow().replace(tzinfo=None))  # naive: the ORM would convert it
    with pytest.raises(TypeError):
        await REPRICE.execute(order.order_no, True, utcnow())
    contains = PreparedQuery(Order, lambda text: Order.filter(subject__icontains=text))
    with pytest.raises(TypeError):
        await contains.fetch("门诊")  # the database would be sent '%门诊%': not the argument


async def test_arguments_may_be_named_in_any_order(rt):
    order, other = await new_order(), await new_order()
    when = utcnow().replace(microsecond=0) + timedelta(days=2)
    assert await REPRICE.execute(until=when, order_no=order.order_no, fen=2468) == 1
    assert await REPRICE.execute(other.order_no, until=when, fen=1357) == 1  # the first by position
    assert [(o.amount_fen, o.expires_at) for o in await Order.filter(order_no__in=[order.order_no, other.order_no])
            .order_by("amount_fen")] == [(1357, when), (2468, when)]  # fmt: skip
    [found] = await BY_NUMBER.fetch(order_no=order.order_no)
    assert found.order_no == order.order_no
    with pytest.raises(TypeError, match="unknown"):
        await REPRICE.execute(order.order_no, fen=1, until=when, amount_fen=1)
    with pytest.raises(TypeError, match="missing"):
        await REPRICE.execute(order_no=order.order_no, fen=1)
    assert (await Order.get(order_no=order.order_no)).amount_fen == 2468


def notice(order: Order, **fields) -> Notification:
    return Notification(**{
        "institution_id": order.institution_id, "order_no": order.order_no, "out_trade_no": order.out_trade_no,
        "event": "order.renamed", "url": order.notify_url, "body": '{"subject":"改名"}', "next_attempt_at": utcnow(),
        **fields,
    })  # fmt: skip


async def test_inserts_a_row_only_when_the_update_changed_one(rt):
    unpaid, paid = await new_order(), await new_order(status=OrderStatus.paid)
    row = notice(unpaid)
    assert await RENAME_UNPAID.execute_then_insert(row, unpaid.order_no, "改名") == 1
    [stored] = await Notification.filter(order_no=unpaid.order_no)
    assert row.pk == stored.id and row._saved_in_db
    assert (stored.event, stored.body, stored.status, stored.attempts) == ("order.renamed", '{"subject":"改名"}', "pending", 0)
    assert stored.created_at is not None and stored.next_attempt_at == row.next_attempt_at
    assert (await Order.get(order_no=unpaid.order_no)).subject == "改名"

    unsaved = notice(paid)
    assert await RENAME_UNPAID.execute_then_insert(unsaved, subject="改名", order_no=paid.order_no) == 0
    assert unsaved.pk is None and not await Notification.filter(order_no=paid.order_no).exists()
    assert (await Order.get(order_no=paid.order_no)).subject == "门诊缴费"
    assert await RENAME_UNPAID.execute_then_insert(None, unpaid.order_no, "无通知") == 1  # nothing to insert
    assert await Notification.filter(order_no=unpaid.order_no).count() == 1


async def test_a_failed_insert_undoes_the_update(rt):
    order = await new_order()
    unstorable = NotificationAttempt(notification_id=2**62, number=1, outcome="delivered")  # no such notification
    with pytest.raises(IntegrityError):
        await RENAME_UNPAID.execute_then_insert(unstorable, order.order_no, "不该改")
    assert (await Order.get(order_no=order.order_no)).subject == "门诊缴费"


async def test_of_concurrent_updates_of_one_row_one_changes_it_and_inserts(rt):
    order = await new_order()
    changed = await asyncio.gather(
        *(RENAME_UNPAID_ONCE.execute_then_insert(notice(order), order.order_no, f"第{n}次") for n in range(10))
    )
    assert sorted(changed) == [0] * 9 + [1]
    assert await Notification.filter(order_no=order.order_no).count() == 1
