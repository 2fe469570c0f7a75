"""WeChat Pay v2 through wechatpy against the mock gateway of a running server."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime

import httpx
import pytest

from cashier.channels import channel_of_payment_code
from cashier.channels._common import BEIJING
from cashier.channels.base import BadCallback, ChannelRefused, ChannelUnreachable
from cashier.channels.dev import mock_merchant_configs
from cashier.channels.wechat import WeChatChannel, sign
from tests.e2e.payments import MockControl, eventually, payment_request, raw_request

OPENID = "oDevPayer000000000000000001"


@pytest.fixture(scope="module")
def config(live_server):
    return mock_merchant_configs(live_server.settings)["wechat"]


@pytest.fixture(scope="module")
def channel(config):
    return WeChatChannel(config)


@pytest.fixture
async def web():
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


@pytest.fixture
async def mock(web, live_server):
    control = MockControl(web, live_server.base_url, "wechat")
    yield control
    await control.clear_faults()


async def paid_order(channel, mock, base_url, amount_fen=1000, method="wechat_jsapi"):
    request = payment_request(base_url, method, amount_fen, payer_id=OPENID)
    await channel.create_payment(request)
    await mock.confirm(request.order_no)
    return request


@pytest.mark.parametrize("method", ["wechat_jsapi", "wechat_mini"])
async def test_jsapi_payment_confirmed_notified_and_queried(channel, config, mock, live_server, method):
    request = payment_request(live_server.base_url, method, 1234, payer_id=OPENID)
    action = await channel.create_payment(request)

    assert action.action == "jsapi"
    params = action.data
    expected_app = config.secrets["mini_app_id"] if method == "wechat_mini" else config.app_id
    assert params["appId"] == expected_app and params["package"].startswith("prepay_id=wx")
    assert params["signType"] == "HMAC-SHA256"
    assert params["paySign"] == sign({k: v for k, v in params.items() if k != "paySign"},
                                     config.secrets["api_key"], "HMAC-SHA256")
    assert (await channel.query(request.order_no)).status == "paying"

    confirmed = await mock.confirm(request.order_no)
    assert confirmed["status"] == "paid"
    items = await mock.notifications(request.order_no)
    event = await channel.parse_callback(*raw_request(items[0]))
    assert event.refund is None
    assert event.payment.status == "paid" and event.payment.order_no == request.order_no
    assert event.payment.amount_fen == 1234 and event.payment.channel_trade_no == confirmed["channel_trade_no"]
    assert event.payment.paid_at is not None

    state = await channel.query(request.order_no)
    assert (state.status, state.amount_fen, state.channel_trade_no) == ("paid", 1234, confirmed["channel_trade_no"])


async def test_h5_payment_goes_through_the_payment_page(channel, mock, web, live_server):
    request = payment_request(live_server.base_url, "wechat_h5", 880)
    action = await channel.create_payment(request)
    assert action.action == "redirect" and "redirect_url=" in action.data["url"]

    page = await web.get(action.data["url"])
    assert page.status_code == 200 and "8.80" in page.text and "确认支付" in page.text
    form = re.search(r'<form method="post" action="([^"]+/confirm)"', page.text).group(1)
    done = await web.post(live_server.base_url + form, data={"from": "page"})
    assert done.status_code == 303 and done.headers["location"] == request.return_url

    event = await channel.parse_callback(*raw_request((await mock.notifications(request.order_no))[0]))
    assert (event.payment.status, event.payment.amount_fen) == ("paid", 880)


async def test_md5_merchant_signs_and_verifies_with_md5(config, mock, live_server):
    md5 = WeChatChannel(replace(config, secrets={**config.secrets, "sign_type": "MD5"}))
    request = payment_request(live_server.base_url, "wechat_jsapi", 500, payer_id=OPENID)
    action = await md5.create_payment(request)
    assert action.data["signType"] == "MD5"
    await mock.confirm(request.order_no)
    item = (await mock.notifications(request.order_no))[0]
    assert "<sign_type>" not in item["raw_body"]
    assert (await md5.parse_callback(*raw_request(item))).payment.amount_fen == 500


async def test_a_wrong_api_key_is_refused_by_the_channel(config, live_server):
    wrong = WeChatChannel(replace(config, secrets={**config.secrets, "api_key": "x" * 32}))
    with pytest.raises(ChannelRefused) as refused:
        await wrong.query("NO-SUCH-ORDER")
    assert refused.value.details["code"] == "签名错误"


async def test_closing_an_unpaid_order(channel, mock, live_server):
    request = payment_request(live_server.base_url, "wechat_jsapi", 300, payer_id=OPENID)
    await channel.create_payment(request)
    await channel.close(request.order_no)
    await channel.close(request.order_no)  # again: already closed is fine
    await channel.close("NEVER-SEEN-ORDER")  # never seen is fine
    assert (await channel.query(request.order_no)).status == "closed"
    await mock.confirm(request.order_no, expect=409)


async def test_closing_a_paid_order_is_refused(channel, mock, live_server):
    request = await paid_order(channel, mock, live_server.base_url)
    with pytest.raises(ChannelRefused) as refused:
        await channel.close(request.order_no)
    assert refused.value.details["code"] == "ORDERPAID"


async def test_unknown_order_is_not_found(channel):
    assert (await channel.query("NO-SUCH-ORDER")).status == "not_found"
    assert (await channel.query_refund("NO-SUCH-ORDER", "NO-SUCH-REFUND")).status == "not_found"


async def test_two_partial_refunds_then_one_too_many(channel, mock, live_server):
    request = await paid_order(channel, mock, live_server.base_url, 1000)
    first = await channel.refund(request.order_no, request.order_no + "R1", 1000, 300, "退一部分")
    second = await channel.refund(request.order_no, request.order_no + "R2", 1000, 200, "再退一部分")
    assert first.status == "processing" and first.amount_fen == 300 and first.channel_refund_no
    again = await channel.refund(request.order_no, request.order_no + "R1", 1000, 300, "退一部分")
    assert again.channel_refund_no == first.channel_refund_no  # the same refund, not a new one

    for refund, amount in ((first, 300), (second, 200)):
        state = await channel.query_refund(request.order_no, refund.refund_no)
        assert (state.status, state.amount_fen) == ("succeeded", amount)
        assert state.channel_refund_no == refund.channel_refund_no and state.finished_at is not None

    with pytest.raises(ChannelRefused) as refused:
        await channel.refund(request.order_no, request.order_no + "R3", 1000, 501, "超额")
    assert refused.value.details["code"] == "NOTENOUGH"
    assert (await channel.query(request.order_no)).status == "paid"

    items = await mock.notifications(request.order_no, at_least=3)
    events = [await channel.parse_callback(*raw_request(item)) for item in items]
    refunds = {e.refund.refund_no: e.refund for e in events if e.refund is not None}
    assert refunds[first.refund_no].amount_fen == 300 and refunds[first.refund_no].status == "succeeded"
    assert refunds[second.refund_no].amount_fen == 200


async def test_micropay_with_a_payment_code_of_an_agreement(channel, mock, live_server):
    agreement = await channel.sign_agreement(OPENID)
    token = await channel.payment_token(agreement)
    assert channel_of_payment_code(token) == "wechat"

    request = payment_request(live_server.base_url, "wechat_jsapi", 2500)
    state = await channel.micropay(request, token)
    assert (state.status, state.amount_fen) == ("paid", 2500) and state.channel_trade_no
    assert (await channel.query(request.order_no)).status == "paid"

    with pytest.raises(ChannelRefused) as refused:  # a payment code is good for one charge
        await channel.micropay(payment_request(live_server.base_url, "wechat_jsapi", 100), token)
    assert refused.value.details["code"] == "AUTHCODEEXPIRE"


async def test_micropay_waiting_for_the_payer_password(channel, mock, live_server):
    await mock.faults(userpaying=True, userpaying_ms=300)
    token = await channel.payment_token(await channel.sign_agreement(OPENID))
    request = payment_request(live_server.base_url, "wechat_jsapi", 990)
    assert (await channel.micropay(request, token)).status == "paying"

    async def paid():
        return (await channel.query(request.order_no)).status == "paid"

    assert await eventually(paid)


async def test_forged_notification_is_refused(channel, mock, live_server):
    request = await paid_order(channel, mock, live_server.base_url, 1000)
    headers, body = raw_request((await mock.notifications(request.order_no))[0])
    forged = body.replace(b"<total_fee>1000</total_fee>", b"<total_fee>1</total_fee>")
    assert forged != body
    with pytest.raises(BadCallback):
        await channel.parse_callback(headers, forged)
    with pytest.raises(BadCallback):
        await channel.parse_callback(headers, b"not xml at all")


async def test_wrong_signature_fault(channel, mock, live_server):
    await mock.faults(bad_notify_signature=True, notify_retries=0)
    request = await paid_order(channel, mock, live_server.base_url, 700)
    with pytest.raises(BadCallback):
        await channel.parse_callback(*raw_request((await mock.notifications(request.order_no))[0]))
    await channel.refund(request.order_no, request.order_no + "R1", 700, 100, "")
    items = await mock.notifications(request.order_no, at_least=2)
    with pytest.raises(BadCallback):  # refund notification encrypted under another key
        await channel.parse_callback(*raw_request(items[1]))


async def test_wrong_amount_fault(channel, mock, live_server):
    await mock.faults(wrong_notify_amount=1, notify_retries=0)
    request = await paid_order(channel, mock, live_server.base_url, 700)
    event = await channel.parse_callback(*raw_request((await mock.notifications(request.order_no))[0]))
    assert event.payment.amount_fen == 701  # signed correctly, and the cashier must compare it


async def test_duplicate_notifications(channel, mock, live_server):
    await mock.faults(duplicate_notifies=3, notify_retries=0)
    request = await paid_order(channel, mock, live_server.base_url, 600)
    items = await mock.notifications(request.order_no, at_least=3)
    assert len(items) == 3 and len({item["raw_body"] for item in items}) == 1


async def test_refund_notification_before_the_payment_notification(channel, mock, live_server):
    await mock.faults(out_of_order=True, hold_ms=20_000, notify_retries=0)
    request = await paid_order(channel, mock, live_server.base_url, 600)
    await channel.refund(request.order_no, request.order_no + "R1", 600, 600, "")
    items = await mock.notifications(request.order_no, at_least=2)
    kinds = [("refund" if (await channel.parse_callback(*raw_request(i))).refund else "payment") for i in items]
    assert kinds == ["refund", "payment"]


async def test_unacknowledged_notifications_are_sent_again(channel, mock, live_server):
    # The mock institution answers "SUCCESS" in plain text, not WeChat's XML: so WeChat retries.
    request = await paid_order(channel, mock, live_server.base_url, 600)
    items = await mock.notifications(request.order_no, at_least=4)
    assert len(items) == 4 and len({item["raw_body"] for item in items}) == 1


async def test_dropped_answer_then_query_shows_what_the_channel_did(channel, mock, live_server):
    await mock.faults(drop_responses=1)
    request = payment_request(live_server.base_url, "wechat_jsapi", 450, payer_id=OPENID)
    with pytest.raises(ChannelUnreachable):
        await channel.create_payment(request)
    assert (await channel.query(request.order_no)).status == "paying"  # the order was made

    await mock.confirm(request.order_no)
    await mock.faults(drop_responses=1)
    with pytest.raises(ChannelUnreachable):
        await channel.refund(request.order_no, request.order_no + "R1", 450, 50, "")
    assert (await channel.query_refund(request.order_no, request.order_no + "R1")).status == "succeeded"


async def test_slow_channel_times_out_as_unreachable(config, mock, live_server):
    impatient = WeChatChannel(config, timeout=0.3)
    await mock.faults(delay_ms=1500)
    with pytest.raises(ChannelUnreachable):
        await impatient.query("ANY-ORDER")


async def test_bill_of_the_day_lists_payments_and_refunds(channel, mock, live_server):
    request = await paid_order(channel, mock, live_server.base_url, 1500)
    refund = await channel.refund(request.order_no, request.order_no + "R1", 1500, 400, "")
    day = datetime.now(BEIJING).strftime("%Y-%m-%d")
    text = await channel.download_bill(day)
    assert text.startswith("交易时间,") and "`" in text
    records = channel.parse_bill(text)
    payment = [r for r in records if r.kind == "payment" and r.order_no == request.order_no]
    refunds = [r for r in records if r.kind == "refund" and r.order_no == request.order_no]
    assert len(payment) == 1 and payment[0].amount_fen == 1500 and payment[0].fee_fen == 9
    assert len(refunds) == 1 and refunds[0].amount_fen == 400 and refunds[0].refund_no == refund.refund_no
    assert await channel.download_bill("2001-01-01") == ""
