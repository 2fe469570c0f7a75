"""Every payment channel, through its adapter (and the real SDK where there is one), against
its mock gateway on a running server: the same behaviour asked of each."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
import pytest

from cashier.channels import build, channel_of_payment_code
from cashier.channels._common import BEIJING
from cashier.channels.base import BadCallback, ChannelRefused, ChannelUnreachable, PayAction
from cashier.channels.dev import mock_merchant_configs
from tests.e2e.payments import eventually, payment_request, raw_request


async def nothing(web: httpx.AsyncClient, base_url: str, action: PayAction) -> None:
    """The channel made the order when it was created (WeChat's prepay)."""


async def open_page(web: httpx.AsyncClient, base_url: str, action: PayAction) -> None:
    """The payer's browser follows the redirect: the channel's payment page."""
    if action.data.get("method") == "POST":
        page = await web.post(action.data["url"], data=action.data["fields"])
    else:
        page = await web.get(action.data["url"])
    assert page.status_code == 200 and "确认支付" in page.text, page.text


def replace_once(pattern: str, replacement: str) -> Callable[[bytes], bytes]:
    def forge(body: bytes) -> bytes:
        forged = re.sub(pattern.encode(), replacement.encode(), body, count=1)
        assert forged != body
        return forged

    return forge


@dataclass(frozen=True)
class Case:
    channel: str
    method: str
    open: Callable[[httpx.AsyncClient, str, PayAction], Awaitable[None]]
    forge: Callable[[bytes], bytes]  # a notification with another amount, signature kept
    over_refund: str  # the channel's refusal of a refund over the paid amount
    used_code: str  # the channel's refusal of a payment code used before
    payer_id: str = ""
    # with out_of_order, the notifications as they arrive: an order's first one is held back
    out_of_order: tuple[str, ...] = ("refund", "paid")
    calls_before_refund: int = 0  # API calls a refund makes before the refund itself
    fee_on_1500: int = 9  # the channel's fee on 15.00 yuan in its bill


CASES = [
    Case(
        "wechat",
        "wechat_jsapi",
        nothing,
        replace_once(r"<total_fee>\d+</total_fee>", "<total_fee>1</total_fee>"),
        "NOTENOUGH",
        "AUTHCODEEXPIRE",
        payer_id="oDevPayer000000000000000001",
    ),
    Case(
        "alipay",
        "alipay_wap",
        open_page,
        replace_once(r"total_amount=[0-9.]+", "total_amount=0.01"),
        "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
        "ACQ.PAYMENT_AUTH_CODE_INVALID",
        out_of_order=("paid", "paying", "refund"),  # a stale WAIT_BUYER_PAY was the first
    ),
    Case(
        "unionpay",
        "unionpay",
        open_page,
        replace_once(r"txnAmt=\d+", "txnAmt=1"),
        "61",
        "60",
        calls_before_refund=1,
    ),
    Case(
        "insurance",
        "insurance",
        open_page,
        replace_once(r'"amount_fen":\d+', '"amount_fen":1'),
        "REFUND_EXCEEDS",
        "PAY_CODE_INVALID",
        payer_id="610102199001011234",
        fee_on_1500=0,
    ),
]


@pytest.fixture(scope="module", params=CASES, ids=[case.channel for case in CASES])
def case(request):
    return request.param


@pytest.fixture(scope="module")
def channel_code(case):
    return case.channel


@pytest.fixture(scope="module")
def channel(live_server, case):
    return build(mock_merchant_configs(live_server.settings)[case.channel])


@pytest.fixture
def base_url(live_server):
    return live_server.base_url


async def unpaid_order(case, channel, web, base_url, amount_fen=1000):
    request = payment_request(base_url, case.method, amount_fen, payer_id=case.payer_id)
    await case.open(web, base_url, await channel.create_payment(request))
    return request


async def paid_order(case, channel, web, mock, base_url, amount_fen=1000):
    request = await unpaid_order(case, channel, web, base_url, amount_fen)
    await mock.confirm(request.order_no)
    return request


async def test_payment_confirmed_notified_and_queried(case, channel, web, mock, base_url):
    request = await unpaid_order(case, channel, web, base_url, 1234)
    assert (await channel.query(request.order_no)).status == "paying"

    confirmed = await mock.confirm(request.order_no)
    assert confirmed["status"] == "paid" and confirmed["amount_fen"] == 1234
    items = await mock.notifications(request.order_no)
    headers, body = raw_request(items[0])
    hint = type(channel).peek_callback(headers, body)
    assert hint.order_no == request.order_no and hint.merchant_id == channel.config.merchant_id
    event = await channel.parse_callback(headers, body)
    assert event.refund is None
    assert (event.payment.status, event.payment.order_no, event.payment.amount_fen) == (
        "paid",
        request.order_no,
        1234,
    )
    assert (
        event.payment.channel_trade_no == confirmed["channel_trade_no"] and event.payment.paid_at is not None
    )

    state = await channel.query(request.order_no)
    assert (state.status, state.amount_fen, state.channel_trade_no) == (
        "paid",
        1234,
        confirmed["channel_trade_no"],
    )
    reply = type(channel).callback_reply(True)
    assert reply.status == 200 and reply.body


async def test_closing_an_unpaid_order(case, channel, web, mock, base_url):
    request = await unpaid_order(case, channel, web, base_url, 300)
    await channel.close(request.order_no)
    await channel.close(request.order_no)  # already closed is fine
    await channel.close("NEVER-SEEN-ORDER")  # never seen is fine
    assert (await channel.query(request.order_no)).status == "closed"
    await mock.confirm(request.order_no, expect=409)


async def test_closing_a_paid_order_is_refused(case, channel, web, mock, base_url):
    request = await paid_order(case, channel, web, mock, base_url)
    with pytest.raises(ChannelRefused):
        await channel.close(request.order_no)
    assert (await channel.query(request.order_no)).status == "paid"


async def test_unknown_order_and_refund_are_not_found(channel):
    assert (await channel.query("NO-SUCH-ORDER")).status == "not_found"
    assert (await channel.query_refund("NO-SUCH-ORDER", "NO-SUCH-REFUND")).status == "not_found"


async def test_two_partial_refunds_then_one_too_many(case, channel, web, mock, base_url):
    request = await paid_order(case, channel, web, mock, base_url, 1000)
    first = await channel.refund(request.order_no, request.order_no + "R1", 1000, 300, "退一部分")
    second = await channel.refund(request.order_no, request.order_no + "R2", 1000, 200, "再退一部分")
    assert first.status in ("processing", "succeeded") and first.amount_fen == 300
    again = await channel.refund(request.order_no, request.order_no + "R1", 1000, 300, "退一部分")
    assert (again.refund_no, again.channel_refund_no) == (
        first.refund_no,
        first.channel_refund_no,
    )  # not a new one

    for refund, amount in ((first, 300), (second, 200)):
        state = await channel.query_refund(request.order_no, refund.refund_no)
        assert (state.status, state.amount_fen) == ("succeeded", amount)

    with pytest.raises(ChannelRefused) as refused:
        await channel.refund(request.order_no, request.order_no + "R3", 1000, 501, "超额")
    assert refused.value.details["code"] == case.over_refund
    assert (await channel.query_refund(request.order_no, request.order_no + "R3")).status == "not_found"

    items = await mock.notifications(request.order_no, at_least=3)
    events = [await channel.parse_callback(*raw_request(item)) for item in items]
    refunds = {e.refund.refund_no: e.refund for e in events if e.refund is not None}
    assert set(refunds) == {first.refund_no, second.refund_no}
    assert all(r.status == "succeeded" for r in refunds.values())
    if refunds[first.refund_no].amount_fen is not None:
        assert (refunds[first.refund_no].amount_fen, refunds[second.refund_no].amount_fen) == (300, 200)


async def test_micropay_with_a_payment_code_of_an_agreement(case, channel, base_url):
    agreement = await channel.sign_agreement("resident-account-0001")
    token = await channel.payment_token(agreement)
    assert channel_of_payment_code(token) == case.channel
    assert await channel.payment_token(agreement) != token  # a fresh one each time

    request = payment_request(base_url, case.method, 2500)
    state = await channel.micropay(request, token)
    assert (state.status, state.amount_fen) == ("paid", 2500) and state.channel_trade_no
    assert (await channel.query(request.order_no)).status == "paid"

    with pytest.raises(ChannelRefused) as refused:  # a payment code is good for one charge
        await channel.micropay(payment_request(base_url, case.method, 100), token)
    assert refused.value.details["code"] == case.used_code


async def test_micropay_waiting_for_the_payer_password(channel, mock, base_url, case):
    await mock.faults(userpaying=True, userpaying_ms=300)
    token = await channel.payment_token(await channel.sign_agreement("resident-account-0002"))
    request = payment_request(base_url, case.method, 990)
    assert (await channel.micropay(request, token)).status == "paying"

    async def paid():
        return (await channel.query(request.order_no)).status == "paid"

    assert await eventually(paid)


async def test_forged_notification_is_refused(case, channel, web, mock, base_url):
    request = await paid_order(case, channel, web, mock, base_url, 1000)
    headers, body = raw_request((await mock.notifications(request.order_no))[0])
    with pytest.raises(BadCallback):
        await channel.parse_callback(headers, case.forge(body))
    with pytest.raises(BadCallback):
        await channel.parse_callback(headers, b"\x00 not a notification")


async def test_wrong_signature_fault(case, channel, web, mock, base_url):
    await mock.faults(bad_notify_signature=True, notify_retries=0)
    request = await paid_order(case, channel, web, mock, base_url, 700)
    with pytest.raises(BadCallback):
        await channel.parse_callback(*raw_request((await mock.notifications(request.order_no))[0]))
    await channel.refund(request.order_no, request.order_no + "R1", 700, 100, "")
    items = await mock.notifications(request.order_no, at_least=2)
    with pytest.raises(BadCallback):
        await channel.parse_callback(*raw_request(items[1]))


async def test_wrong_amount_fault(case, channel, web, mock, base_url):
    await mock.faults(wrong_notify_amount=1, notify_retries=0)
    request = await paid_order(case, channel, web, mock, base_url, 700)
    event = await channel.parse_callback(*raw_request((await mock.notifications(request.order_no))[0]))
    assert event.payment.amount_fen == 701  # signed correctly: the cashier must compare it with the order


async def test_duplicate_notifications(case, channel, web, mock, base_url):
    await mock.faults(duplicate_notifies=3, notify_retries=0)
    request = await paid_order(case, channel, web, mock, base_url, 600)
    items = await mock.notifications(request.order_no, at_least=3)
    assert len(items) == 3 and len({item["raw_body"] for item in items}) == 1


async def test_notifications_out_of_order(case, channel, web, mock, base_url):
    await mock.faults(out_of_order=True, hold_ms=20_000, notify_retries=0)
    request = await paid_order(case, channel, web, mock, base_url, 600)
    await channel.refund(request.order_no, request.order_no + "R1", 600, 600, "")
    items = await mock.notifications(request.order_no, at_least=len(case.out_of_order))
    events = [await channel.parse_callback(*raw_request(item)) for item in items]
    assert tuple("refund" if e.refund else e.payment.status for e in events) == case.out_of_order


async def test_dropped_answer_then_query_shows_what_the_channel_did(case, channel, web, mock, base_url):
    request = await unpaid_order(case, channel, web, base_url, 450)
    await mock.confirm(request.order_no)
    await mock.faults(drop_responses=1, drop_after=case.calls_before_refund)
    with pytest.raises(ChannelUnreachable):
        await channel.refund(request.order_no, request.order_no + "R1", 450, 50, "")
    assert (await channel.query_refund(request.order_no, request.order_no + "R1")).status == "succeeded"

    token = await channel.payment_token(await channel.sign_agreement("resident-account-0003"))
    counter = payment_request(base_url, case.method, 800)
    await mock.faults(drop_responses=1)
    with pytest.raises(ChannelUnreachable):
        await channel.micropay(counter, token)
    assert (await channel.query(counter.order_no)).status == "paid"


async def test_slow_channel_times_out_as_unreachable(channel, mock):
    impatient = type(channel)(channel.config, timeout=0.3)
    await mock.faults(delay_ms=1500)
    with pytest.raises(ChannelUnreachable):
        await impatient.query("ANY-ORDER")


async def test_bill_of_the_day_lists_payments_and_refunds(case, channel, web, mock, base_url):
    request = await paid_order(case, channel, web, mock, base_url, 1500)
    refund = await channel.refund(request.order_no, request.order_no + "R1", 1500, 400, "")
    text = await channel.download_bill(datetime.now(BEIJING).strftime("%Y-%m-%d"))
    records = channel.parse_bill(text)
    payment = [r for r in records if r.kind == "payment" and r.order_no == request.order_no]
    refunds = [r for r in records if r.kind == "refund" and r.order_no == request.order_no]
    assert len(payment) == 1 and (payment[0].amount_fen, payment[0].fee_fen) == (1500, case.fee_on_1500)
    assert payment[0].channel_trade_no and payment[0].at is not None
    assert len(refunds) == 1 and (refunds[0].amount_fen, refunds[0].refund_no) == (400, refund.refund_no)
    assert await channel.download_bill("2001-01-01") == ""
