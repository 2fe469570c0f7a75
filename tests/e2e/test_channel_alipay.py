"""Alipay specifics (the common behaviour is in test_payment_channels): the app order string,
the WAP page, a stale WAIT_BUYER_PAY, a fully refunded trade."""

from __future__ import annotations

import re

import pytest

from cashier.channels.alipay import AlipayChannel
from cashier.channels.dev import mock_merchant_configs
from tests.e2e.payments import payment_request, raw_request


@pytest.fixture(scope="module")
def channel_code():
    return "alipay"


@pytest.fixture(scope="module")
def channel(live_server):
    return AlipayChannel(mock_merchant_configs(live_server.settings)["alipay"])


async def test_app_payment_through_the_order_string(channel, web, mock, live_server):
    request = payment_request(live_server.base_url, "alipay_app", 1999)
    action = await channel.create_payment(request)
    assert action.action == "app" and "method=alipay.trade.app.pay" in action.data["order_string"]

    opened = await web.post(
        f"{live_server.base_url}/_mock/alipay/pay/app", json={"order_string": action.data["order_string"]}
    )
    assert opened.json() == {"out_trade_no": request.order_no, "status": "paying"}
    tampered = action.data["order_string"].replace("19.99", "0.01")
    refused = await web.post(f"{live_server.base_url}/_mock/alipay/pay/app", json={"order_string": tampered})
    assert refused.status_code == 400

    await mock.confirm(request.order_no)
    event = await channel.parse_callback(*raw_request((await mock.notifications(request.order_no))[0]))
    assert (event.payment.status, event.payment.amount_fen) == ("paid", 1999)


async def test_wap_page_confirms_and_returns_to_the_institution(channel, web, live_server):
    request = payment_request(live_server.base_url, "alipay_wap", 880)
    action = await channel.create_payment(request)
    page = await web.get(action.data["url"])
    assert page.status_code == 200 and "8.80" in page.text and "支付宝" in page.text
    form = re.search(r'<form method="post" action="([^"]+/confirm)"', page.text).group(1)
    done = await web.post(live_server.base_url + form, data={"from": "page"})
    assert done.status_code == 303 and done.headers["location"] == request.return_url
    assert (await channel.query(request.order_no)).status == "paid"


async def test_stale_wait_buyer_pay_arrives_after_success(channel, web, mock, live_server):
    await mock.faults(out_of_order=True, hold_ms=20_000, notify_retries=0)
    request = payment_request(live_server.base_url, "alipay_wap", 640)
    await web.get((await channel.create_payment(request)).data["url"])
    await mock.confirm(request.order_no)
    items = await mock.notifications(request.order_no, at_least=2)
    states = [(await channel.parse_callback(*raw_request(item))).payment.status for item in items]
    assert states == ["paid", "paying"]


async def test_fully_refunded_trade_reads_as_closed(channel, web, mock, live_server):
    request = payment_request(live_server.base_url, "alipay_wap", 500)
    await web.get((await channel.create_payment(request)).data["url"])
    await mock.confirm(request.order_no)
    refund = await channel.refund(request.order_no, request.order_no + "R1", 500, 500, "全额")
    assert (refund.status, refund.amount_fen) == ("succeeded", 500)
    state = await channel.query(request.order_no)
    assert (state.status, state.amount_fen) == ("closed", 500)
