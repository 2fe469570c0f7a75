"""The payment mocks: the mock institution, fault control, and the channels spoken to over
plain HTTP (UnionPay, insurance) calling the mock gateways of the app under test."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from cardcore import outbound
from cashier.channels.base import ChannelUnreachable
from cashier.channels.dev import mock_merchant_configs
from cashier.channels.insurance import InsuranceChannel
from cashier.channels.wechat import read_fields
from mocks.wechat_pay import acknowledged
from tests.e2e.payments import new_order_no, payment_request


async def test_every_payment_mock_is_mounted(http):
    mocks = set((await http.get("/_mock/")).json()["mocks"])
    assert {"mock_wechat_pay", "mock_unionpay", "mock_insurance", "mock_institution"} <= mocks


async def test_the_institution_records_every_attempt_and_can_refuse(http):
    order_no = new_order_no()
    behaviour = await http.post(
        "/_mock/institution/behaviour", json={"fail_next": 2, "status": 503, "body": "BUSY"}
    )
    assert behaviour.json()["behaviour"]["fail_next"] == 2
    answers = []
    for n in range(3):
        reply = await http.post(
            "/_mock/institution/notify",
            content=f'{{"out_trade_no":"{order_no}","n":{n}}}',
            headers={"Content-Type": "application/json", "X-EHC-Client": "platform"},
        )
        answers.append((reply.status_code, reply.text))
    assert answers == [(503, "BUSY"), (503, "BUSY"), (200, "SUCCESS")]

    items = (await http.get("/_mock/institution/notifications", params={"out_trade_no": order_no})).json()[
        "items"
    ]
    assert [item["body"]["n"] for item in items] == [0, 1, 2]
    assert [item["answered_success"] for item in items] == [False, False, True]
    assert [item["status"] for item in items] == [503, 503, 200]
    assert items[0]["raw_body"] == f'{{"out_trade_no":"{order_no}","n":0}}'
    assert items[0]["headers"]["x-ehc-client"] == "platform" and items[0]["received_at"]

    await http.delete("/_mock/institution/behaviour")
    other = new_order_no()
    reply = await http.post(f"/_mock/institution/notify?out_trade_no={other}", content=b"<xml/>")
    assert (reply.status_code, reply.text) == (200, "SUCCESS")
    items = (await http.get("/_mock/institution/notifications", params={"out_trade_no": other})).json()[
        "items"
    ]
    assert items[0]["body"] is None and items[0]["raw_body"] == "<xml/>"


async def test_fault_control_takes_known_faults_only(http):
    set_ = await http.post("/_mock/wechat/pay/faults", json={"delay_ms": 0, "duplicate_notifies": 2})
    assert set_.json()["faults"] == {"delay_ms": 0, "duplicate_notifies": 2}
    merged = await http.post("/_mock/wechat/pay/faults", json={"drop_responses": 1})
    assert merged.json()["faults"] == {"delay_ms": 0, "duplicate_notifies": 2, "drop_responses": 1}
    assert (await http.post("/_mock/wechat/pay/faults", json={"explode": True})).status_code == 400
    assert (await http.post("/_mock/wechat/pay/faults", json={"delay_ms": "soon"})).status_code == 400
    assert (await http.delete("/_mock/wechat/pay/faults")).json()["faults"] == {}
    assert (await http.get("/_mock/wechat/pay/faults")).json()["faults"] == {}


async def test_unknown_order_cannot_be_confirmed(http):
    reply = await http.post("/_mock/unionpay/pay/orders/NO-SUCH-ORDER/confirm")
    assert (reply.status_code, reply.json()["code"]) == (404, "ORDER_NOT_FOUND")


async def test_an_http_channel_calls_its_gateway_and_a_dropped_answer_is_unreachable(http, settings):
    channel = InsuranceChannel(mock_merchant_configs(settings)["insurance"])
    request = payment_request(settings.base_url, "insurance", 1500)
    action = await channel.create_payment(request)
    assert action.action == "redirect"
    assert (await http.post(f"/_mock/insurance/pay/orders/{request.order_no}/confirm")).json()[
        "status"
    ] == "paid"

    await http.post("/_mock/insurance/pay/faults", json={"drop_responses": 1})
    try:
        with pytest.raises(ChannelUnreachable):  # the gateway closes the connection without answering
            await channel.refund(request.order_no, request.order_no + "R1", 1500, 100, "")
    finally:
        await http.delete("/_mock/insurance/pay/faults")
    assert (await channel.query_refund(request.order_no, request.order_no + "R1")).status == "succeeded"
    state = await channel.query(request.order_no)
    assert (state.status, state.insurance_fen, state.self_pay_fen) == ("paid", 900, 600)


@pytest.mark.parametrize(
    "body",
    [
        b"not xml",
        b"<xml></xml>",
        b"<order><appid>wx</appid></order>",
        b"<xml><appid><inner>wx</inner></appid></xml>",
        b"<xml><appid>wx</appid>",
    ],
)
async def test_the_wechat_pay_gateway_refuses_what_is_not_a_flat_v2_message(http, body):
    reply = await http.post("/_mock/wechat/pay/unifiedorder", content=body, headers={"Content-Type": "text/xml"})
    assert reply.status_code == 200
    assert read_fields(reply.content) == {"return_code": "FAIL", "return_msg": "XML格式错误"}


def test_the_wechat_pay_mock_reads_the_platforms_callback_replies():
    def reply(status: int, body: str):
        return outbound.Reply(status, CIMultiDictProxy(CIMultiDict()), body.encode())

    success = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
    assert acknowledged(reply(200, success))
    assert acknowledged(reply(200, '<?xml version="1.0" encoding="UTF-8"?>' + success))
    assert not acknowledged(reply(500, success))
    assert not acknowledged(reply(200, "<xml><return_code>FAIL</return_code><return_msg>签名错误</return_msg></xml>"))
    assert not acknowledged(reply(200, "SUCCESS"))
    assert not acknowledged(reply(200, "<xml><return_msg>OK</return_msg></xml>"))
    assert read_fields(b"<xml><a><![CDATA[x&y]]></a><b></b><c>1</c></xml>") == {"a": "x&y", "b": None, "c": "1"}
