"""UnionPay specifics (the common behaviour is in test_payment_channels): the browser's form post."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from cashier.channels._common import beijing
from cashier.channels.base import ChannelRefused, issued_at
from cashier.channels.dev import mock_merchant_configs
from cashier.channels.unionpay import QUERY, TIME, UnionPayChannel, parse_form
from tests.e2e.payments import payment_request, raw_request


@pytest.fixture(scope="module")
def channel_code():
    return "unionpay"


@pytest.fixture(scope="module")
def config(live_server):
    return mock_merchant_configs(live_server.settings)["unionpay"]


async def test_payment_goes_through_a_signed_form_post(config, mock, web, live_server):
    channel = UnionPayChannel(config)
    request = payment_request(live_server.base_url, "unionpay", 1200)
    action = await channel.create_payment(request)
    assert action.action == "redirect" and action.data["method"] == "POST"
    fields = action.data["fields"]
    assert (fields["txnType"], fields["txnAmt"], fields["backUrl"]) == ("01", "1200", request.notify_url)

    tampered = await web.post(action.data["url"], data={**fields, "txnAmt": "1"})
    assert tampered.status_code == 400 and "验证签名失败" in tampered.text
    page = await web.post(action.data["url"], data=fields)
    assert page.status_code == 200 and "12.00" in page.text
    await mock.confirm(request.order_no)
    assert (await channel.query(request.order_no)).status == "paid"


async def test_a_merchant_signing_with_another_certificate_is_refused(config):
    stranger = UnionPayChannel(
        replace(config, secrets={**config.secrets, "sign_cert": config.secrets["verify_cert"]})
    )
    with pytest.raises(ChannelRefused) as refused:
        await stranger.query("ANY")
    assert refused.value.details["code"] == "11"


async def test_a_transaction_is_named_by_its_order_number_and_send_time(config, web, live_server):
    # UnionPay finds a transaction by orderId and the txnTime it was sent with; the adapter
    # reads that time from the order number, so a later query names it the same way.
    channel = UnionPayChannel(config)
    request = payment_request(live_server.base_url, "unionpay", 800)
    action = await channel.create_payment(request)
    sent_at = beijing(issued_at(request.order_no))
    assert action.data["fields"]["txnTime"] == sent_at.strftime(TIME)
    assert (await web.post(action.data["url"], data=action.data["fields"])).status_code == 200

    assert (await channel.query(request.order_no)).status == "paying"
    a_second_later = (sent_at + timedelta(seconds=1)).strftime(TIME)
    named_otherwise = {
        "txnType": "00", "txnSubType": "00", "bizType": "000000",
        "orderId": request.order_no, "txnTime": a_second_later,
    }  # fmt: skip
    answer = await channel._post(QUERY, named_otherwise, accept=frozenset({"34"}))
    assert answer["respCode"] == "34"


async def test_the_paid_time_is_when_the_payment_went_through_not_when_it_was_sent(config, mock, web, live_server):
    # Answers and notifications carry the txnTime the merchant sent; traceTime says when it
    # went through. An order sent ten minutes before the payer confirms shows the difference.
    channel = UnionPayChannel(config)
    sent_at = (datetime.now(timezone.utc) - timedelta(minutes=10)).replace(microsecond=0)
    order_no = "T" + sent_at.strftime("%Y%m%d%H%M%S") + "00000000000042"
    request = payment_request(live_server.base_url, "unionpay", 700, order_no=order_no)
    action = await channel.create_payment(request)
    assert (await web.post(action.data["url"], data=action.data["fields"])).status_code == 200
    before = datetime.now(timezone.utc).replace(microsecond=0)
    await mock.confirm(order_no)
    after = datetime.now(timezone.utc)

    state = await channel.query(order_no)
    assert state.status == "paid" and before <= state.paid_at <= after, (state.paid_at, sent_at)
    [notification] = await mock.notifications(order_no)
    headers, body = raw_request(notification)
    assert parse_form(body)["txnTime"] == beijing(sent_at).strftime(TIME)
    notified = (await channel.parse_callback(headers, body)).payment
    assert notified.paid_at == state.paid_at
