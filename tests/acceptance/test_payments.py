"""Paying: the combined code at the counter (二码合一), and a bill paid through the cashier
page with the hospital notified of the payment and of a partial refund."""

from __future__ import annotations

import secrets

import httpx
import pytest

from cardcore import signing
from tests.flows import (
    assert_refused,
    confirm,
    eventually,
    new_order,
    pay_through,
    received,
    scanned,
    strong_account,
)

MOBILE_BROWSER = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/126.0 Mobile Safari"


async def test_combined_code_pays_at_the_counter(http, hospital, new_reader):
    account, card = await strong_account(http)
    card_id = card["health_card_id"]
    bound = await account.post("/mp/v1/payment-accounts", {"channel": "wechat"})
    assert bound.status_code == 201, bound.text
    shown = await account.post(f"/mp/v1/cards/{card_id}/codes/dynamic?with_payment=1")
    assert shown.status_code == 200, shown.text
    combined = shown.json()["qr_code_text"]
    assert combined.startswith(f"{card_id}:0:") and combined.count(":") == 3

    pharmacy = await new_reader("门诊西药房收费处")
    out_trade_no = "POS" + secrets.token_hex(6)
    paid = await pharmacy.micropay(
        combined, out_trade_no=out_trade_no, amount_fen=2_580, subject="药房取药", preset="phone_near", seed=4
    )
    assert paid.text == combined
    order = scanned(paid, 200)
    assert (order["status"], order["channel"], order["amount_fen"]) == ("paid", "wechat", 2_580)
    assert order["health_card_id"] == card_id and order["out_trade_no"] == out_trade_no
    looked_up = await hospital.get(f"/cashier/v1/orders/{order['order_no']}")
    assert looked_up.json()["status"] == "paid" and looked_up.json()["paid_fen"] == 2_580

    # A screenshot of the same code at the next counter charges nothing.
    again_no = "POS" + secrets.token_hex(6)
    replay = await pharmacy.micropay(
        combined, out_trade_no=again_no, amount_fen=2_580, subject="药房取药", preset="phone_glare", seed=5
    )
    scanned(replay, 409, "CODE_USED")
    assert_refused(await hospital.get(f"/cashier/v1/orders?out_trade_no={again_no}"), 404, "ORDER_NOT_FOUND")


@pytest.mark.parametrize(
    "method, channel",
    [("alipay_wap", "alipay"), ("wechat_h5", "wechat"), ("unionpay", "unionpay"), ("insurance", "insurance")],
)
async def test_cashier_page_payment_then_a_partial_refund(http, platform, demo, hospital, method, channel):
    secret = demo["institution"]["secret"]
    order = await new_order(hospital, platform.settings, amount_fen=4_210, subject="门诊缴费 血常规")
    order_no, out_trade_no = order["order_no"], order["out_trade_no"]
    page = await http.get(f"/cashier/{order_no}", headers={"User-Agent": MOBILE_BROWSER})
    assert page.status_code == 200 and "¥ 42.10" in page.text and f'data-method="{method}"' in page.text

    await pay_through(http, order, method)
    await confirm(http, channel, order_no)
    shown = await eventually(lambda: paid_order(hospital, order_no))
    assert (shown["channel"], shown["paid_fen"]) == (channel, 4_210)
    assert shown["insurance_fen"] + shown["self_pay_fen"] == 4_210
    assert (shown["insurance_fen"] > 0) == (channel == "insurance")  # the fund's share (统筹)
    result = await http.get(f"/cashier/{order_no}/result")
    assert 'data-status="paid"' in result.text

    # The hospital hears of it once, signed by the platform with the hospital's own secret.
    notices = await eventually(lambda: received(http, out_trade_no))
    assert [n["body"]["event"] for n in notices] == ["order.paid"]
    paid_notice = notices[0]
    assert (paid_notice["body"]["order_no"], paid_notice["body"]["amount_fen"]) == (order_no, 4_210)
    assert paid_notice["body"]["channel"] == channel and paid_notice["body"]["paid_at"]
    assert signed_by_platform(paid_notice, secret)

    refunds = f"/cashier/v1/orders/{order_no}/refunds"
    first = {"out_refund_no": f"RF1{out_trade_no}", "amount_fen": 1_000, "reason": "退一项检查"}
    refund = await hospital.post(refunds, first)
    assert refund.status_code == 201, refund.text
    refund_no = refund.json()["refund_no"]
    settled = await eventually(lambda: refund_done(hospital, refund_no))
    assert (settled["status"], settled["amount_fen"]) == ("succeeded", 1_000)
    after = (await hospital.get(f"/cashier/v1/orders/{order_no}")).json()
    assert after["status"] == "partially_refunded"
    too_much = await hospital.post(refunds, {"out_refund_no": "RF2" + out_trade_no, "amount_fen": 3_211})
    assert_refused(too_much, 422, "REFUND_EXCEEDS_PAID")

    notices = await eventually(lambda: at_least(received(http, out_trade_no), 2))
    assert [(n["body"]["event"], n["body"].get("refund_fen")) for n in notices] == [
        ("order.paid", None), ("refund.succeeded", 1_000),
    ]  # fmt: skip
    assert notices[1]["body"]["order_no"] == order_no and signed_by_platform(notices[1], secret)
    assert all(n["answered_success"] for n in notices)


async def paid_order(hospital, order_no: str) -> dict | None:
    shown = (await hospital.get(f"/cashier/v1/orders/{order_no}")).json()
    return shown if shown["status"] == "paid" else None


async def refund_done(hospital, refund_no: str) -> dict | None:
    shown = (await hospital.get(f"/cashier/v1/refunds/{refund_no}")).json()
    return shown if shown["status"] != "processing" else None


async def at_least(items, count: int):
    items = await items
    return items if len(items) >= count else None


def signed_by_platform(notice: dict, secret: str) -> bool:
    headers = httpx.Headers(notice["headers"])
    parts = signing.read_signed_parts(headers)
    path = "/_mock/institution/notify"
    return headers["X-EHC-Client"] == "platform" and signing.signature_matches(
        secret, "POST", path, parts, notice["raw_body"].encode()
    )
