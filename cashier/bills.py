"""Institution bill file (``GET /cashier/v1/bills?date=``): the day's payments and refunds as
CSV, in China Standard Time, with a summary, so finance can match it against the HIS.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timedelta, timezone

from cardcore.clock import as_utc
from cashier.models import Order, OrderStatus, Refund, RefundStatus

CHINA = timezone(timedelta(hours=8))
HEADER = (
    "交易时间", "平台订单号", "机构订单号", "渠道", "渠道交易号", "交易类型",
    "金额(分)", "医保统筹(分)", "个人自付(分)", "退款单号", "机构退款单号", "状态",
)
PAID_STATES = (OrderStatus.paid, OrderStatus.refunding, OrderStatus.refunded, OrderStatus.partially_refunded)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The China-time day as UTC moments (how times are stored)."""
    start = datetime.combine(day, time.min, tzinfo=CHINA)
    return as_utc(start), as_utc(start + timedelta(days=1))


def _local(moment: datetime) -> str:
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")


async def institution_bill(institution_id: str, day: date) -> str:
    start, end = day_bounds(day)
    payments = await Order.filter(
        institution_id=institution_id, status__in=PAID_STATES, paid_at__gte=start, paid_at__lt=end
    ).order_by("paid_at", "order_no")
    refunds = await Refund.filter(
        institution_id=institution_id, status=RefundStatus.succeeded, finished_at__gte=start, finished_at__lt=end
    ).order_by("finished_at", "refund_no").prefetch_related("order")
    rows = [
        (o.paid_at, (_local(o.paid_at), o.order_no, o.out_trade_no, o.channel, o.channel_trade_no, "支付",
                     o.paid_fen, o.insurance_fen, o.paid_fen - o.insurance_fen, "", "", o.status.value))
        for o in payments
    ] + [
        (r.finished_at, (_local(r.finished_at), r.order.order_no, r.order.out_trade_no, r.order.channel,
                         r.channel_refund_no, "退款", -r.amount_fen, 0, -r.amount_fen, r.refund_no, r.out_refund_no,
                         r.status.value))
        for r in refunds
    ]
    rows.sort(key=lambda row: row[0])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for _, row in rows:
        writer.writerow(row)
    paid_total = sum(o.paid_fen for o in payments)
    refund_total = sum(r.amount_fen for r in refunds)
    writer.writerow(())
    writer.writerow(("总交易笔数", "支付总额(分)", "退款笔数", "退款总额(分)", "净额(分)"))
    writer.writerow((len(payments), paid_total, len(refunds), refund_total, paid_total - refund_total))
    return out.getvalue()
