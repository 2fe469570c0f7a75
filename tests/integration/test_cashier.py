"""Unified cashier over HTTP: orders, each channel's pay flow through the real SDKs and the
mock gateways, callbacks exactly once, hospital notifications, refunds, counter scan pay,
the sweeper and bills.

The app is served on a real port too (tests/conftest.py), so wechatpy and
python-alipay-sdk reach the mock gateways over TCP; the mocks' own callbacks and the
hospital notifications run in process. Background work is driven by the tests:
``deliver_due`` for notifications, ``sweep`` for the sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import secrets
from datetime import timedelta

import httpx
import pytest
from tortoise import connections

from cardcore.clock import utcnow
from cashier import accounts, notifier, orders, sweeper
from cashier.channels.dev import mock_merchant_configs
from cashier.models import ChannelAccount, Notification, NotificationAttempt, NotificationStatus, Order, Refund
from openplatform.sdk import read_notification
from tests.conftest import TEST_DATABASE_URL, register_institution
from tests.flows import (
    assert_refused, confirm, eventually, new_order, open_pay_page, order_body, pay_through, received, strong_account,
)

pytestmark = pytest.mark.usefixtures("clean_mocks")


@pytest.fixture
async def clean_mocks(http):
    for channel in ("wechat", "alipay", "unionpay", "insurance"):
        await http.delete(f"/_mock/{channel}/pay/faults")
    await http.delete("/_mock/institution/behaviour")
    yield
    for channel in ("wechat", "alipay", "unionpay", "insurance"):
        await http.delete(f"/_mock/{channel}/pay/faults")
    await http.delete("/_mock/institution/behaviour")


@pytest.fixture(scope="session")
async def platform_channels(rt):
    for config in mock_merchant_configs(rt.settings).values():
        await accounts.save_account(rt, accounts.PLATFORM_ACCOUNT, config)


@pytest.fixture
async def hospital(rt, institution, platform_channels):
    """An approved institution with an account at every mock channel."""
    for config in mock_merchant_configs(rt.settings).values():
        await accounts.save_account(rt, institution.client_id, config)
    return institution


@pytest.fixture
async def delivery():
    session = notifier.delivery_session(10)
    yield session
    await session.close()


async def order_status(order_no: str) -> str:
    return (await Order.get(order_no=order_no)).status.value


async def paid(order_no: str):
    return await order_status(order_no) == "paid"


async def deliver_all(rt, delivery) -> None:
    for _ in range(100):
        if not await notifier.deliver_due(rt, delivery):
            return
    raise AssertionError("notifications kept coming due after 100 deliveries")


# --- orders -----------------------------------------------------------------------------


async def test_order_creation_is_idempotent_and_conflicts_are_refused(hospital, settings):
    body = order_body(settings.base_url)
    first = await hospital.post("/cashier/v1/orders", body)
    assert first.status_code == 201
    order = first.json()
    assert order["status"] == "created" and order["amount_fen"] == 12_345
    assert order["cashier_url"] == f"{settings.base_url}/cashier/{order['order_no']}"
    again = await hospital.post("/cashier/v1/orders", body)
    assert again.status_code == 200 and again.json()["order_no"] == order["order_no"]
    conflict = await hospital.post("/cashier/v1/orders", {**body, "amount_fen": 1})
    assert_refused(conflict, 409, "DUPLICATE_OUT_TRADE_NO")
    looked_up = await hospital.get(f"/cashier/v1/orders?out_trade_no={body['out_trade_no']}")
    assert looked_up.json()["order_no"] == order["order_no"]


async def test_concurrent_creation_makes_one_order(hospital, settings):
    body = order_body(settings.base_url)
    replies = await asyncio.gather(*(hospital.post("/cashier/v1/orders", body) for _ in range(8)))
    assert sorted(r.status_code for r in replies) == [200] * 7 + [201]
    assert len({r.json()["order_no"] for r in replies}) == 1


@pytest.mark.parametrize(
    "change, field",
    [
        ({"amount_fen": 12.5}, "amount_fen"),
        ({"amount_fen": "100"}, "amount_fen"),
        ({"amount_fen": 0}, "amount_fen"),
        ({"notify_url": "ftp://his/notify"}, "notify_url"),
        ({"order_type": "lottery"}, "order_type"),
        ({"health_card_id": "not-a-card"}, "health_card_id"),
        ({"surprise": 1}, "surprise"),
        ({"subject": "挂号费\u202egpj.exe"}, "subject"),
        ({"subject": "挂号费\x07"}, "subject"),
        ({"notify_url": "https://his.example/notify\x01"}, "notify_url"),
    ],
)
async def test_bad_orders_get_clear_errors(hospital, settings, change, field):
    reply = await hospital.post("/cashier/v1/orders", order_body(settings.base_url, **change))
    assert_refused(reply, 422, "VALIDATION_ERROR")
    assert field in json.dumps(reply.json()["details"])


async def test_orders_of_other_institutions_are_not_found(http, admin, hospital, settings):
    from tests.conftest import register_institution

    order = await new_order(hospital, settings)
    other = await register_institution(http, admin)
    assert_refused(await other.get(f"/cashier/v1/orders/{order['order_no']}"), 404, "ORDER_NOT_FOUND")
    assert_refused(await other.post(f"/cashier/v1/orders/{order['order_no']}/close"), 404, "ORDER_NOT_FOUND")


async def test_cashier_page_offers_the_channels_of_the_browser(http, hospital, settings):
    order = await new_order(hospital, settings)
    page = await http.get(f"/cashier/{order['order_no']}", headers={"User-Agent": "Mozilla/5.0 (iPhone) Mobile Safari"})
    assert page.status_code == 200 and "¥ 123.45" in page.text
    for method in ("wechat_h5", "alipay_wap", "unionpay", "insurance"):
        assert f'data-method="{method}"' in page.text
    in_wechat = await http.get(f"/cashier/{order['order_no']}", headers={"User-Agent": "Mozilla/5.0 MicroMessenger/8.0"})
    assert 'data-method="wechat_jsapi"' in in_wechat.text and "alipay_wap" not in in_wechat.text
    in_alipay = await http.get(f"/cashier/{order['order_no']}", headers={"User-Agent": "Mozilla/5.0 AlipayClient/10.5"})
    assert 'data-method="alipay_wap"' in in_alipay.text and "wechat" not in in_alipay.text


# --- paying, per channel ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, channel, action",
    [("wechat_h5", "wechat", "redirect"), ("alipay_wap", "alipay", "redirect"), ("unionpay", "unionpay", "redirect"),
     ("insurance", "insurance", "redirect")],
)
async def test_full_pay_flow_per_channel(http, rt, hospital, settings, delivery, method, channel, action):
    order = await new_order(hospital, settings)
    started = await pay_through(http, order, method)
    assert started["action"] == action
    assert (await hospital.get(f"/cashier/v1/orders/{order['order_no']}")).json()["status"] == "paying"
    await confirm(http, channel, order["order_no"])
    await eventually(lambda: paid(order["order_no"]))
    shown = (await hospital.get(f"/cashier/v1/orders/{order['order_no']}")).json()
    assert shown["paid_fen"] == 12_345 and shown["channel"] == channel and shown["channel_trade_no"]
    assert shown["insurance_fen"] + shown["self_pay_fen"] == 12_345
    if channel == "insurance":
        assert shown["insurance_fen"] > 0
    await deliver_all(rt, delivery)
    items = await received(http, order["out_trade_no"])
    assert [i["body"]["event"] for i in items] == ["order.paid"]
    notice = items[0]
    assert notice["body"]["order_no"] == order["order_no"] and notice["body"]["amount_fen"] == 12_345
    row = await Notification.get(order_no=order["order_no"])
    assert notice["raw_body"].startswith(f'{{"notification_id":"{row.id}","event":"order.paid",')
    # Signed by the platform with the institution's own secret, as API.md says: what the
    # SDK's check on the hospital's side reads.
    event = read_notification(hospital.secret, notice["target"], notice["headers"], notice["raw_body"].encode())
    assert event == notice["body"]
    result = await http.get(f"/cashier/{order['order_no']}/result")
    assert result.status_code == 200 and 'data-status="paid"' in result.text


async def test_wechat_jsapi_asks_for_the_payers_openid_once(http, hospital, settings):
    order = await new_order(hospital, settings)
    first = await pay_through(http, order, "wechat_jsapi")
    assert first["action"] == "redirect" and "/_mock/wechat/connect/oauth2/authorize" in first["url"]
    consent = await http.get(first["url"].replace(settings.base_url, ""), follow_redirects=False)
    back = consent.headers["location"]
    landing = await http.get(back.replace(settings.base_url, ""), follow_redirects=False)
    assert landing.status_code == 302 and landing.headers["location"].endswith("autopay=wechat_jsapi")
    second = await pay_through(http, order, "wechat_jsapi")
    http.cookies.clear()
    assert second["action"] == "jsapi"
    params = second.get("params", second)
    assert params["package"].startswith("prepay_id=") and params["paySign"]


async def test_the_cashier_page_pays_at_once_only_with_a_method_it_offers(http, hospital, settings):
    order = await new_order(hospital, settings)
    in_wechat = {"User-Agent": "Mozilla/5.0 MicroMessenger/8.0"}
    offered = await http.get(f"/cashier/{order['order_no']}?autopay=wechat_jsapi", headers=in_wechat)
    assert 'const autopay = "wechat_jsapi";' in offered.text
    for value in ["alipay_wap", '\\";alert(1);//', "x\u2028y", "</script><script>alert(1)</script>"]:
        page = await http.get(f"/cashier/{order['order_no']}", params={"autopay": value}, headers=in_wechat)
        assert page.status_code == 200 and 'const autopay = "";' in page.text and "alert" not in page.text


async def test_a_payer_cookie_that_is_not_a_token_is_ignored(http, hospital, settings):
    """Regression: undecodable cookie bytes reach the handler as surrogates, which were used
    in a cache key (a 500)."""
    order = await new_order(hospital, settings)
    headers = [(b"Content-Type", b"application/json"), (b"Cookie", b"ehc_payer=" + b"\xff" * 32)]
    reply = await http.post(f"/cashier/{order['order_no']}/pay", content=b'{"channel": "wechat_jsapi"}', headers=headers)
    assert reply.status_code == 200 and "/_mock/wechat/connect/oauth2/authorize" in reply.json()["url"]


async def test_an_admins_change_to_a_channel_account_holds_from_the_next_payment(http, admin, hospital, settings):
    wechat = mock_merchant_configs(settings)["wechat"]
    path = f"/admin/v1/institutions/{hospital.client_id}/channels/wechat"
    body = {"app_id": wechat.app_id, "merchant_id": wechat.merchant_id, "gateway": wechat.gateway, "secrets": wechat.secrets}
    first = await new_order(hospital, settings)
    await pay_through(http, first, "wechat_h5")  # the account is now cached, here and in the shared cache
    closed = await admin.request("PUT", path, {**body, "enabled": False})
    assert closed.status_code == 200 and closed.json()["enabled"] is False
    second = await new_order(hospital, settings)
    refused = await http.post(f"/cashier/{second['order_no']}/pay", json={"channel": "wechat_h5"})
    assert_refused(refused, 409, "CHANNEL_NOT_AVAILABLE")
    reopened = await admin.request("PUT", path, {**body, "enabled": True})
    assert reopened.status_code == 200 and reopened.json()["enabled"] is True
    assert (await pay_through(http, second, "wechat_h5"))["action"] == "redirect"


async def test_accounts_of_an_institution_that_does_not_exist_are_refused(admin, settings):
    """Regression (fuzz): an unknown id was stored as an account nobody uses, a long one was a 500."""
    wechat = mock_merchant_configs(settings)["wechat"]
    body = {"merchant_id": wechat.merchant_id, "secrets": wechat.secrets}
    for institution_id in ("ins_nobody", "ins_" + "0" * 40):
        path = f"/admin/v1/institutions/{institution_id}/channels"
        assert_refused(await admin.request("PUT", f"{path}/wechat", body), 404, "NOT_FOUND")
        assert_refused(await admin.get(path), 404, "NOT_FOUND")
    assert not await ChannelAccount.filter(institution_id="ins_nobody").exists()
    assert (await admin.get(f"/admin/v1/institutions/{accounts.PLATFORM_ACCOUNT}/channels")).status_code == 200


async def test_paid_or_expired_orders_cannot_be_paid(http, hospital, settings):
    order = await new_order(hospital, settings)
    await pay_through(http, order, "alipay_wap")
    await confirm(http, "alipay", order["order_no"])
    await eventually(lambda: paid(order["order_no"]))
    again = await http.post(f"/cashier/{order['order_no']}/pay", json={"channel": "wechat_h5"})
    assert_refused(again, 409, "ORDER_NOT_PAYABLE")
    unknown = await http.post(f"/cashier/{order['order_no']}/pay", json={"channel": "bitcoin"})
    assert unknown.status_code in (409, 422)


# --- callbacks ----------------------------------------------------------------------------


async def captured_callback(http, rt, order: dict, method: str, **faults) -> tuple[dict, bytes]:
    """Pay at the channel with its notification sent to the recorder, and return that request."""
    channel_code = orders.channels.channel_of_method(method)
    record = await Order.get(order_no=order["order_no"])
    channel = await accounts.channel_for(rt, record.institution_id, channel_code)
    await orders._mark_paying(record, channel_code, method)
    request = orders.payment_request(rt, record, channel_code, method, "127.0.0.1")
    sink = f"{rt.settings.base_url}/_mock/institution/notify?out_trade_no=cb-{order['order_no']}"
    action = await channel.create_payment(request.__class__(**{**request.__dict__, "notify_url": sink}))
    if action.action == "redirect":
        await open_pay_page(http, {"url": action.data["url"], **action.data})
    # The recorder's answer is no channel acknowledgement: the channel must not send it again.
    await http.post(f"/_mock/{channel_code}/pay/faults", json={"notify_retries": 0, **faults})
    await confirm(http, channel_code, order["order_no"])
    items = await eventually(lambda: received(http, f"cb-{order['order_no']}"))
    return items[0]["headers"], items[0]["raw_body"].encode()


async def post_callback(http, channel: str, headers: dict, body: bytes) -> httpx.Response:
    keep = {k: v for k, v in headers.items() if k.lower() in ("content-type",)}
    return await http.post(f"/cashier/notify/{channel}", content=body, headers=keep)


async def test_ten_concurrent_duplicate_callbacks_change_the_order_once(http, rt, hospital, settings):
    order = await new_order(hospital, settings)
    headers, body = await captured_callback(http, rt, order, "wechat_h5")
    replies = await asyncio.gather(*(post_callback(http, "wechat", headers, body) for _ in range(10)))
    assert all(r.status_code == 200 and "SUCCESS" in r.text for r in replies)
    assert await order_status(order["order_no"]) == "paid"
    assert await Notification.filter(order_no=order["order_no"]).count() == 1


async def test_duplicate_notifications_from_the_channel_are_harmless(http, rt, hospital, settings, delivery):
    order = await new_order(hospital, settings)
    await http.post("/_mock/alipay/pay/faults", json={"duplicate_notifies": 10})
    await pay_through(http, order, "alipay_wap")
    await confirm(http, "alipay", order["order_no"])
    await eventually(lambda: paid(order["order_no"]))
    await deliver_all(rt, delivery)
    assert [i["body"]["event"] for i in await received(http, order["out_trade_no"])] == ["order.paid"]


async def test_a_payment_the_channel_reports_after_the_order_closed_is_recorded(http, hospital, settings, caplog):
    order = await new_order(hospital, settings)
    await pay_through(http, order, "wechat_h5")
    # Closed here (say, on expiry) while the payer was still paying at the channel.
    assert await orders._mark_closed(order["order_no"], "expired")
    await confirm(http, "wechat", order["order_no"])
    await eventually(lambda: paid(order["order_no"]))
    row = await Order.get(order_no=order["order_no"])
    assert row.closed_at is None and row.paid_fen == order["amount_fen"] and row.channel == "wechat"
    events = [n.event for n in await Notification.filter(order_no=order["order_no"]).order_by("id")]
    assert events == ["order.closed", "order.paid"]
    assert "payment after close" in caplog.text


async def test_forged_signature_is_refused(http, rt, hospital, settings):
    order = await new_order(hospital, settings)
    headers, body = await captured_callback(http, rt, order, "wechat_h5", bad_notify_signature=True)
    reply = await post_callback(http, "wechat", headers, body)
    assert "FAIL" in reply.text
    assert await order_status(order["order_no"]) == "paying"
    assert await Notification.filter(order_no=order["order_no"]).count() == 0


async def test_alipay_callback_with_a_forged_signature_is_refused(http, rt, hospital, settings):
    order = await new_order(hospital, settings)
    headers, body = await captured_callback(http, rt, order, "alipay_wap")
    forged = body.replace(b"total_amount=123.45", b"total_amount=1.00")
    assert forged != body
    assert (await post_callback(http, "alipay", headers, forged)).text == "fail"
    assert await order_status(order["order_no"]) == "paying"
    assert (await post_callback(http, "alipay", headers, body)).text == "success"
    assert await order_status(order["order_no"]) == "paid"


async def test_a_callback_settles_the_order_as_created_without_reading_it(http, rt, hospital, settings, monkeypatch):
    order = await new_order(hospital, settings)
    headers, body = await captured_callback(http, rt, order, "wechat_h5")

    async def no_read(order_no: str):
        raise AssertionError(f"the callback read order {order_no}")

    with monkeypatch.context() as patched:
        patched.setattr(orders, "order_or_none", no_read)
        assert "SUCCESS" in (await post_callback(http, "wechat", headers, body)).text
    row = await Order.get(order_no=order["order_no"])
    assert (row.status.value, row.paid_fen, row.channel) == ("paid", order["amount_fen"], "wechat")
    [notification] = await Notification.filter(order_no=order["order_no"])
    sent = json.loads(notification.body)
    assert (sent["event"], sent["status"], sent["out_trade_no"], sent["amount_fen"], sent["paid_fen"], sent["channel"]) == (
        "order.paid", "paid", order["out_trade_no"], order["amount_fen"], order["amount_fen"], "wechat"
    )  # fmt: skip
    assert sent["channel_trade_no"] == row.channel_trade_no and notification.url == row.notify_url
    # The cached order still reads as created: a repeated callback is settled by the guarded update, once.
    assert "SUCCESS" in (await post_callback(http, "wechat", headers, body)).text
    assert await Notification.filter(order_no=order["order_no"]).count() == 1


async def test_a_callback_for_an_order_no_longer_cached_reads_it(http, rt, hospital, settings):
    order = await new_order(hospital, settings)
    headers, body = await captured_callback(http, rt, order, "wechat_h5")
    assert await rt.redis.delete(orders.as_created_key(order["order_no"])) == 1  # expired
    assert "SUCCESS" in (await post_callback(http, "wechat", headers, body)).text
    assert await order_status(order["order_no"]) == "paid"
    assert await Notification.filter(order_no=order["order_no"]).count() == 1


async def test_wrong_amount_is_refused(http, rt, hospital, settings):
    order = await new_order(hospital, settings)
    headers, body = await captured_callback(http, rt, order, "wechat_h5", wrong_notify_amount=100)
    reply = await post_callback(http, "wechat", headers, body)
    assert "FAIL" in reply.text
    assert await order_status(order["order_no"]) == "paying"


async def test_callback_for_an_unknown_order_is_refused(http):
    reply = await http.post("/cashier/notify/alipay", content=b"out_trade_no=1&sign=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 200 and reply.text == "fail"


# Anyone can post to a callback address: what the channels' protocols allow to go wrong, and
# what an attacker would try (entity expansion, external entities, deep nesting, huge bodies,
# bytes that are not UTF-8, numbers no order or merchant has).
_ENTITIES = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
ODD_CALLBACKS = [
    b"", b"x", b"\xff\xfe", b"<xml>", b"<xml></xml>", b"<xml><out_trade_no>\x00</out_trade_no></xml>",
    f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY l0 "lol">{_ENTITIES}]><xml><out_trade_no>&l9;</out_trade_no></xml>'.encode(),
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><out_trade_no>&e;</out_trade_no></xml>',
    b"<a>" * 5000 + b"</a>" * 5000, b"x" * 200_000, b'{"a":', b"[]", b"null", b'{"out_trade_no": 5}',
    b"out_trade_no=%FF&sign=x", b"out_trade_no=" + "\u00b2".encode() * 28 + b"&sign=x", b"out_trade_no=" + b"9" * 300,
    b"seller_id=" + b"9" * 300 + b"&sign=x", b"<xml><mch_id>" + b"x" * 300 + b"</mch_id></xml>", b"a=1&a=2&sign=&sign_type=RSA",
    b"%", b"&&&=", "<xml><out_trade_no>\ud800</out_trade_no></xml>".encode("utf-8", "surrogatepass"),
]


def odd_callbacks(order_no: str):
    yield from ODD_CALLBACKS
    number = order_no.encode()
    yield b"out_trade_no=" + number + b"&sign=AAAA&total_amount=1e400&trade_status=TRADE_SUCCESS"
    yield b"<xml><return_code>SUCCESS</return_code><out_trade_no>" + number + b"</out_trade_no><total_fee>-1</total_fee><sign>x</sign></xml>"
    yield b"<xml><return_code>SUCCESS</return_code><out_trade_no>" + number + b"</out_trade_no><req_info>!!</req_info></xml>"
    yield json.dumps({"orderId": order_no, "txnAmt": "1e400", "signature": "x"}).encode()
    yield json.dumps({"order_no": order_no, "amount_fen": 2**70, "status": "paid"}).encode()


@pytest.mark.parametrize("channel, refusal", [
    ("wechat", (200, b"<return_code><![CDATA[FAIL]]></return_code>")),
    ("alipay", (200, b"fail")), ("unionpay", (400, b"fail")), ("insurance", (200, b"FAIL")),
])
async def test_malformed_callbacks_are_refused_in_the_channels_format(http, hospital, settings, channel, refusal):
    order = await new_order(hospital, settings)
    status, marker = refusal
    for body in odd_callbacks(order["order_no"]):
        for content_type in ("text/xml", "application/x-www-form-urlencoded", "application/json", None):
            headers = {"Content-Type": content_type} if content_type else {}
            reply = await http.post(f"/cashier/notify/{channel}", content=body, headers=headers)
            assert (reply.status_code, marker in reply.content) == (status, True), (body[:100], content_type, reply.text[:300])
    assert await order_status(order["order_no"]) == "created"
    assert await Notification.filter(order_no=order["order_no"]).count() == 0


# --- hospital notifications -------------------------------------------------------------------


@pytest.fixture
async def quiet_outbox():
    """No other test's notification may take this test's turn at the mock institution."""
    await Notification.filter(status=NotificationStatus.pending).update(status=NotificationStatus.failed)


@pytest.mark.usefixtures("quiet_outbox")
async def test_notification_is_retried_on_schedule_until_the_institution_answers_success(http, rt, hospital, settings, delivery):
    await http.post("/_mock/institution/behaviour", json={"fail_next": 2, "status": 500, "body": "busy"})
    order = await new_order(hospital, settings)
    await pay_through(http, order, "wechat_h5")
    await confirm(http, "wechat", order["order_no"])
    await eventually(lambda: paid(order["order_no"]))
    row = await Notification.get(order_no=order["order_no"])
    for attempt, wait_s in enumerate(notifier.RETRY_SCHEDULE_S[:2], start=1):
        before = utcnow()
        await notifier.deliver_due(rt, delivery)
        row = await Notification.get(id=row.id)
        assert (row.status, row.attempts) == (NotificationStatus.pending, attempt)
        due_in = (row.next_attempt_at - before).total_seconds()
        assert wait_s - 1 <= due_in <= wait_s + 5
        assert await notifier.deliver_due(rt, delivery) == 0  # not due yet
        await Notification.filter(id=row.id).update(next_attempt_at=utcnow())  # time passes
    await notifier.deliver_due(rt, delivery)
    row = await Notification.get(id=row.id)
    assert (row.status, row.attempts) == (NotificationStatus.delivered, 3)
    log = [a.outcome for a in await notifier.attempts_of(row.id)]
    assert log == ["refused", "refused", "delivered"]
    answered = [i["answered_success"] for i in await received(http, order["out_trade_no"])]
    assert answered == [False, False, True]


@pytest.mark.usefixtures("quiet_outbox")
async def test_notification_goes_to_its_url_exactly_as_signed_and_a_redirect_is_an_answer(http, rt, hospital, settings, delivery):
    out_trade_no = "HIS" + secrets.token_hex(8)
    target = f"/_mock/institution/notify?out_trade_no={out_trade_no}&campus=%E4%B8%9C%E9%99%A2%2F2"
    await http.post(
        "/_mock/institution/behaviour",
        json={"fail_next": 1, "status": 302, "body": "moved", "location": f"{settings.base_url}/_mock/institution/notify"},
    )
    order = await new_order(hospital, settings, out_trade_no=out_trade_no, notify_url=settings.base_url + target)
    await pay_through(http, order, "wechat_h5")
    await confirm(http, "wechat", order["order_no"])
    await eventually(lambda: paid(order["order_no"]))
    await notifier.deliver_due(rt, delivery)
    row = await Notification.get(order_no=order["order_no"])
    # Not followed: the 302 is what the attempt records (a followed redirect would show the
    # mock's answer to a GET, 405, and a second arrival).
    assert [(a.outcome, a.http_status, a.detail) for a in await notifier.attempts_of(row.id)] == [("refused", 302, "moved")]
    assert len(await received(http, out_trade_no)) == 1
    await Notification.filter(id=row.id).update(next_attempt_at=utcnow())
    await notifier.deliver_due(rt, delivery)
    assert (await Notification.get(id=row.id)).status is NotificationStatus.delivered
    arrived = (await received(http, out_trade_no))[-1]
    assert arrived["target"] == target
    assert read_notification(hospital.secret, target, arrived["headers"], arrived["raw_body"].encode())["event"] == "order.paid"


class SilentHospital:
    """An institution whose notify_url accepts connections and never answers."""

    def __init__(self, client_id: str, url: str) -> None:
        self.client_id, self.url = client_id, url
        self.rows: list[Notification] = []

    async def attempts(self) -> int:
        return await NotificationAttempt.filter(notification_id__in=[n.id for n in self.rows]).count()

    async def in_delivery(self) -> int:
        return await Notification.filter(id__in=[n.id for n in self.rows], lease_owner__isnull=False).count()


async def outbox_row(institution_id: str, url: str, key: str, due) -> Notification:
    body = json.dumps({"event": "order.paid", "order_no": key, "out_trade_no": key})
    return await Notification.create(
        institution_id=institution_id, order_no=key, out_trade_no=key, event="order.paid", url=url, body=body,
        next_attempt_at=due,
    )  # fmt: skip


async def answered_rows(hospital, settings, count: int) -> list[Notification]:
    url = f"{settings.base_url}/_mock/institution/notify"
    return [await outbox_row(hospital.client_id, url, f"HIS{secrets.token_hex(6)}", utcnow()) for _ in range(count)]


async def all_delivered(rows: list[Notification]) -> bool:
    found = await Notification.filter(id__in=[n.id for n in rows])
    return all(row.status is NotificationStatus.delivered for row in found)


@pytest.fixture
async def silent_hospital(http, admin, quiet_outbox):
    """More due rows than a worker has delivery slots, older than any other: first in line."""
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader, writer):
        held.append(writer)

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    other = await register_institution(http, admin)
    hospital = SilentHospital(other.client_id, f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}/notify")
    long_ago = utcnow() - timedelta(minutes=5)
    for i in range(notifier.CONCURRENT_DELIVERIES + 1):
        hospital.rows.append(await outbox_row(hospital.client_id, hospital.url, f"SILENT{i:02d}", long_ago))
    yield hospital
    for writer in held:
        writer.close()
    silent.close()
    await Notification.filter(id__in=[n.id for n in hospital.rows]).update(status=NotificationStatus.failed)


async def test_a_hospital_that_does_not_answer_holds_up_only_its_own_notifications(rt, hospital, settings, silent_hospital):
    answered = await answered_rows(hospital, settings, 5)
    session = notifier.delivery_session(5)
    delivering = asyncio.create_task(notifier.deliver_due(rt, session))
    try:
        await eventually(lambda: all_delivered(answered))
        # Delivered while every attempt at the silent hospital was still waiting.
        assert await silent_hospital.attempts() == 0
        assert not delivering.done()
    finally:
        delivering.cancel()
        await session.close()


async def test_a_worker_delivers_notifications_that_come_due_while_a_hospital_keeps_it_waiting(rt, hospital, settings, silent_hospital):
    session = notifier.delivery_session(60)
    stopping = asyncio.Event()
    worker = asyncio.create_task(notifier.deliver_continuously(rt, session, "test-worker", stopping, poll_s=0.05))
    try:
        await eventually(lambda: silent_hospital.in_delivery())
        # Due after the worker's first claim, while its deliveries to the silent hospital wait.
        answered = await answered_rows(hospital, settings, 5)
        notifier.wake()
        await eventually(lambda: all_delivered(answered))
        assert await silent_hospital.attempts() == 0
        # Alone at first, the silent hospital took no more slots than leave room for another.
        assert 0 < await silent_hospital.in_delivery() <= notifier.CONCURRENT_DELIVERIES - notifier.RESERVED_FOR_OTHERS
        assert not worker.done()
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        await session.close()


@pytest.mark.usefixtures("quiet_outbox")
async def test_the_attempts_of_one_claim_are_gathered_into_one_write(rt, hospital, settings, delivery, monkeypatch):
    rows = await answered_rows(hospital, settings, 6)
    writes: list[int] = []
    write = notifier._write_attempts

    async def counted(owner, attempts):
        writes.append(len(attempts))
        await write(owner, attempts)

    monkeypatch.setattr(notifier, "_write_attempts", counted)
    # Long enough for every POST of the claim to the in-process mock hospital to finish.
    monkeypatch.setattr(notifier, "WRITE_GATHER_S", 1.0)
    assert await notifier.deliver_due(rt, delivery) == 6
    assert writes == [6]
    assert await all_delivered(rows)


@pytest.mark.usefixtures("quiet_outbox")
async def test_a_claims_notifications_read_their_institutions_secret_once(
    rt, http, admin, hospital, settings, delivery, monkeypatch
):
    other = await register_institution(http, admin)
    url = f"{settings.base_url}/_mock/institution/notify"
    rows = await answered_rows(hospital, settings, 4)
    rows += [await outbox_row(other.client_id, url, f"HIS{secrets.token_hex(6)}", utcnow()) for _ in range(2)]
    reads: list[str] = []
    read = notifier._secret_of

    async def counted(rt, institution_id):
        reads.append(institution_id)
        return await read(rt, institution_id)

    monkeypatch.setattr(notifier, "_secret_of", counted)
    assert await notifier.deliver_due(rt, delivery) == 6
    assert sorted(reads) == sorted([hospital.client_id, other.client_id])
    assert await all_delivered(rows)
    # Each delivery was signed with its own institution's secret.
    for row, signer in ((rows[0], hospital), (rows[-1], other)):
        [received_by_hospital] = await received(http, row.out_trade_no)
        event = read_notification(
            signer.secret, "/_mock/institution/notify", received_by_hospital["headers"],
            received_by_hospital["raw_body"].encode(),
        )  # fmt: skip
        assert event["notification_id"] == str(row.id)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="PostgreSQL: on SQLite one connection serves everything")
@pytest.mark.usefixtures("quiet_outbox")
async def test_notifications_are_claimed_and_recorded_while_requests_hold_every_pooled_connection(
    rt, hospital, settings, delivery
):
    rows = await answered_rows(hospital, settings, 3)
    await notifier._secret_of(rt, hospital.client_id)  # the institution's secret is in the cache, as under load
    requests_pool = connections.get("default")
    async with contextlib.AsyncExitStack() as held:
        await held.enter_async_context(requests_pool.acquire_connection())  # the pool exists from here
        for _ in range(requests_pool._pool.get_max_size() - 1):
            await held.enter_async_context(requests_pool.acquire_connection())
        # Every connection of the requests' pool is taken: its queue would never move.
        assert await asyncio.wait_for(notifier.deliver_due(rt, delivery), 10) == 3
    assert await all_delivered(rows)
    for row in rows:
        assert [(a.number, a.outcome) for a in await notifier.attempts_of(row.id)] == [(1, "delivered")]


@pytest.mark.usefixtures("quiet_outbox")
async def test_attempts_that_finish_together_are_recorded_together_each_with_its_own_result(
    http, rt, hospital, settings, delivery, monkeypatch
):
    await http.post("/_mock/institution/behaviour", json={"fail_next": 3, "status": 500, "body": "busy"})
    rows = await answered_rows(hospital, settings, 12)
    writes: list[int] = []
    write = notifier._write_attempts

    async def first_write_slow(owner, attempts):
        writes.append(len(attempts))
        if len(writes) == 1:
            await asyncio.sleep(0.3)  # the other deliveries finish meanwhile
        await write(owner, attempts)

    monkeypatch.setattr(notifier, "_write_attempts", first_write_slow)
    before = utcnow()
    assert await notifier.deliver_due(rt, delivery) == 12
    assert sum(writes) == 12 and len(writes) < 12
    found = await Notification.filter(id__in=[n.id for n in rows])
    assert sorted(row.status.value for row in found) == ["delivered"] * 9 + ["pending"] * 3
    for row in found:
        assert row.attempts == 1 and row.lease_owner is None and row.lease_until is None
        log = [(a.number, a.outcome, a.http_status, a.detail) for a in await notifier.attempts_of(row.id)]
        if row.status is NotificationStatus.delivered:
            assert log == [(1, "delivered", 200, "")] and row.delivered_at >= before and row.last_error == ""
        else:
            assert log == [(1, "refused", 500, "busy")] and row.last_error == "busy" and row.delivered_at is None
            assert row.next_attempt_at >= before + timedelta(seconds=notifier.RETRY_SCHEDULE_S[0])


@pytest.mark.usefixtures("quiet_outbox")
async def test_failed_notifications_are_listed_and_resent_by_admins(http, rt, admin, hospital, settings, delivery):
    await http.post("/_mock/institution/behaviour", json={"fail_next": 100})
    order = await new_order(hospital, settings)
    await pay_through(http, order, "wechat_h5")
    await confirm(http, "wechat", order["order_no"])
    await eventually(lambda: paid(order["order_no"]))
    row = await Notification.get(order_no=order["order_no"])
    for _ in range(len(notifier.RETRY_SCHEDULE_S) + 1):
        await Notification.filter(id=row.id).update(next_attempt_at=utcnow())
        await notifier.deliver_due(rt, delivery)
    row = await Notification.get(id=row.id)
    assert row.status is NotificationStatus.failed and row.attempts == 16
    listed = (await admin.get(f"/admin/v1/notifications?status=failed&order_no={order['order_no']}")).json()["items"]
    assert [n["id"] for n in listed] == [str(row.id)]
    detail = (await admin.get(f"/admin/v1/notifications/{row.id}")).json()
    assert len(detail["attempt_log"]) == 16
    assert detail["body"]["notification_id"] == str(row.id) and detail["body"]["event"] == "order.paid"
    await http.delete("/_mock/institution/behaviour")
    resent = await admin.post(f"/admin/v1/notifications/{row.id}/resend")
    assert resent.status_code == 200 and resent.json()["status"] == "pending"
    await notifier.deliver_due(rt, delivery)
    assert (await Notification.get(id=row.id)).status is NotificationStatus.delivered
    assert_refused(await admin.post("/admin/v1/notifications/999999999/resend"), 404, "NOTIFICATION_NOT_FOUND")


async def test_notification_ids_past_a_64_bit_column_are_not_found(admin):
    """Regression (fuzz): the database refused the number, a 500."""
    too_long = "9" * 22
    assert_refused(await admin.get(f"/admin/v1/notifications/{too_long}"), 404, "NOT_FOUND")
    assert_refused(await admin.post(f"/admin/v1/notifications/{too_long}/resend"), 404, "NOT_FOUND")


# --- refunds ---------------------------------------------------------------------------------


async def paid_order(http, hospital, settings, method="wechat_h5", amount_fen=10_000) -> dict:
    order = await new_order(hospital, settings, amount_fen=amount_fen)
    await pay_through(http, order, method)
    await confirm(http, orders.channels.channel_of_method(method), order["order_no"])
    await eventually(lambda: paid(order["order_no"]))
    return order


async def refund_settled(refund_no: str):
    return (await Refund.get(refund_no=refund_no)).status.value != "processing"


@pytest.mark.parametrize("method", ["wechat_h5", "alipay_wap", "unionpay", "insurance"])
async def test_partial_refunds_then_the_rest(http, rt, hospital, settings, delivery, method):
    order = await paid_order(http, hospital, settings, method)
    path = f"/cashier/v1/orders/{order['order_no']}/refunds"
    first = await hospital.post(path, {"out_refund_no": "RF-a-" + order["out_trade_no"], "amount_fen": 3_000, "reason": "少收一项"})
    assert first.status_code == 201, first.text
    await eventually(lambda: refund_settled(first.json()["refund_no"]))
    again = await hospital.post(path, {"out_refund_no": "RF-a-" + order["out_trade_no"], "amount_fen": 3_000, "reason": "少收一项"})
    assert again.status_code == 200 and again.json()["refund_no"] == first.json()["refund_no"]
    assert_refused(
        await hospital.post(path, {"out_refund_no": "RF-a-" + order["out_trade_no"], "amount_fen": 10}),
        409, "DUPLICATE_OUT_REFUND_NO",
    )
    assert (await hospital.get(f"/cashier/v1/orders/{order['order_no']}")).json()["status"] == "partially_refunded"
    over = await hospital.post(path, {"out_refund_no": "RF-b-" + order["out_trade_no"], "amount_fen": 7_001})
    assert_refused(over, 422, "REFUND_EXCEEDS_PAID")
    rest = await hospital.post(path, {"out_refund_no": "RF-c-" + order["out_trade_no"], "amount_fen": 7_000})
    assert rest.status_code == 201
    await eventually(lambda: refund_settled(rest.json()["refund_no"]))
    shown = (await hospital.get(f"/cashier/v1/refunds/{rest.json()['refund_no']}")).json()
    assert shown["status"] == "succeeded" and shown["amount_fen"] == 7_000
    assert (await hospital.get(f"/cashier/v1/orders/{order['order_no']}")).json()["status"] == "refunded"
    await deliver_all(rt, delivery)
    events = [(i["body"]["event"], i["body"].get("refund_fen")) for i in await received(http, order["out_trade_no"])]
    assert events == [("order.paid", None), ("refund.succeeded", 3_000), ("refund.succeeded", 7_000)]


async def test_concurrent_refunds_never_exceed_the_paid_amount(http, hospital, settings):
    order = await paid_order(http, hospital, settings, amount_fen=10_000)
    path = f"/cashier/v1/orders/{order['order_no']}/refunds"
    replies = await asyncio.gather(
        *(hospital.post(path, {"out_refund_no": f"RF{i}-{order['out_trade_no']}", "amount_fen": 3_000}) for i in range(10))
    )
    admitted = [r for r in replies if r.status_code == 201]
    assert len(admitted) == 3
    assert all(r.json()["code"] == "REFUND_EXCEEDS_PAID" for r in replies if r.status_code != 201)
    for reply in admitted:
        await eventually(lambda: refund_settled(reply.json()["refund_no"]))
    refunded = sum(r.amount_fen for r in await Refund.filter(order_id=order["order_no"], status="succeeded"))
    assert refunded == 9_000
    assert (await Order.get(order_no=order["order_no"])).refunded_fen == 9_000


async def test_unpaid_orders_cannot_be_refunded(hospital, settings):
    order = await new_order(hospital, settings)
    reply = await hospital.post(f"/cashier/v1/orders/{order['order_no']}/refunds", {"out_refund_no": "x1", "amount_fen": 1})
    assert_refused(reply, 409, "ORDER_NOT_REFUNDABLE")


async def test_refund_with_a_lost_answer_is_settled_by_the_sweeper(http, rt, hospital, settings):
    order = await paid_order(http, hospital, settings, "alipay_wap")
    # The answer is lost and so is the refund notification Alipay sends along (refused for
    # its signature), which could otherwise settle the refund before the answer is missed.
    faults = {"drop_responses": 1, "bad_notify_signature": True, "notify_retries": 0}
    await http.post("/_mock/alipay/pay/faults", json=faults)
    reply = await hospital.post(f"/cashier/v1/orders/{order['order_no']}/refunds", {"out_refund_no": "lost-" + order["out_trade_no"], "amount_fen": 500})
    assert reply.status_code == 201 and reply.json()["status"] == "processing"
    await Refund.filter(refund_no=reply.json()["refund_no"]).update(updated_at=utcnow() - timedelta(minutes=5))
    await sweeper.sweep(rt)
    shown = (await hospital.get(f"/cashier/v1/refunds/{reply.json()['refund_no']}")).json()
    assert shown["status"] == "succeeded"


# --- closing and the sweeper -------------------------------------------------------------------


async def test_close_an_unpaid_order_here_and_at_the_channel(http, rt, hospital, settings, delivery):
    order = await new_order(hospital, settings)
    await pay_through(http, order, "wechat_h5")
    closed = await hospital.post(f"/cashier/v1/orders/{order['order_no']}/close", {"reason": "患者取消"})
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    channel = await accounts.channel_for(rt, hospital.client_id, "wechat")
    assert (await channel.query(order["order_no"])).status == "closed"
    assert (await http.post(f"/_mock/wechat/pay/orders/{order['order_no']}/confirm")).status_code >= 400
    await deliver_all(rt, delivery)
    assert [i["body"]["event"] for i in await received(http, order["out_trade_no"])] == ["order.closed"]


async def test_closing_a_paid_order_is_refused(http, hospital, settings):
    order = await paid_order(http, hospital, settings)
    assert_refused(await hospital.post(f"/cashier/v1/orders/{order['order_no']}/close"), 409, "ORDER_ALREADY_PAID")


async def test_expired_orders_are_closed_by_the_sweeper(http, rt, hospital, settings):
    untouched = await new_order(hospital, settings)
    at_channel = await new_order(hospital, settings)
    paid_late = await new_order(hospital, settings)
    await pay_through(http, at_channel, "alipay_wap")
    await pay_through(http, paid_late, "unionpay")
    await confirm(http, "unionpay", paid_late["order_no"])
    await eventually(lambda: paid(paid_late["order_no"]))
    past = utcnow() - timedelta(minutes=1)
    await Order.filter(order_no__in=[untouched["order_no"], at_channel["order_no"]]).update(expires_at=past)
    await sweeper.sweep(rt)
    assert await order_status(untouched["order_no"]) == "closed"
    assert await order_status(at_channel["order_no"]) == "closed"
    assert await order_status(paid_late["order_no"]) == "paid"
    channel = await accounts.channel_for(rt, hospital.client_id, "alipay")
    assert (await channel.query(at_channel["order_no"])).status in ("closed", "not_found")


async def test_a_silent_payment_is_asked_about_by_the_sweeper(http, rt, hospital, settings):
    order = await new_order(hospital, settings)
    await http.post("/_mock/wechat/pay/faults", json={"bad_notify_signature": True, "notify_retries": 0})
    await pay_through(http, order, "wechat_h5")
    await confirm(http, "wechat", order["order_no"])
    await Order.filter(order_no=order["order_no"]).update(updated_at=utcnow() - timedelta(minutes=5))
    await sweeper.sweep(rt)
    assert await order_status(order["order_no"]) == "paid"


# --- counter scan pay (二码合一) ------------------------------------------------------------------


async def micropay(hospital, settings, text: str, **overrides):
    body = {"qr_code_text": text, "out_trade_no": "POS" + secrets.token_hex(6), "amount_fen": 2_580, "subject": "药房取药"}
    body.update(overrides)
    return await hospital.post("/cashier/v1/micropay", body)


async def test_combined_code_identifies_and_pays_at_the_counter(http, hospital, settings):
    account, card = await strong_account(http)
    not_bound = await account.post(f"/mp/v1/cards/{card['health_card_id']}/codes/dynamic?with_payment=1")
    assert_refused(not_bound, 409, "PAYMENT_ACCOUNT_NOT_BOUND")
    bound = await account.post("/mp/v1/payment-accounts", {"channel": "wechat"})
    assert bound.status_code == 201, bound.text
    assert [a["channel"] for a in (await account.get("/mp/v1/payment-accounts")).json()["items"]] == ["wechat"]
    code = (await account.post(f"/mp/v1/cards/{card['health_card_id']}/codes/dynamic?with_payment=1")).json()
    assert code["qr_code_text"].count(":") == 3
    reply = await micropay(hospital, settings, code["qr_code_text"])
    assert reply.status_code == 200, reply.text
    order = reply.json()
    assert order["status"] == "paid" and order["channel"] == "wechat"
    assert order["health_card_id"] == card["health_card_id"]
    replayed = await micropay(hospital, settings, code["qr_code_text"])
    assert_refused(replayed, 409, "CODE_USED")


async def test_binding_a_payment_account_needs_strong_auth(http):
    from tests.flows import claimed

    account, _ = await claimed(http)
    assert_refused(await account.post("/mp/v1/payment-accounts", {"channel": "alipay"}), 403, "STRONG_AUTH_REQUIRED")


async def test_plain_dynamic_code_is_not_a_pay_code(http, hospital, settings):
    account, card = await strong_account(http)
    code = (await account.post(f"/mp/v1/cards/{card['health_card_id']}/codes/dynamic")).json()
    assert_refused(await micropay(hospital, settings, code["qr_code_text"]), 422, "PAY_CODE_REQUIRED")
    assert_refused(await micropay(hospital, settings, "12345"), 422, "PAY_CODE_REQUIRED")


async def channel_pay_code(rt, channel_code: str) -> str:
    channel = await accounts.channel_for(rt, accounts.PLATFORM_ACCOUNT, channel_code)
    agreement = await channel.sign_agreement("payer-" + secrets.token_hex(4))
    return await channel.payment_token(agreement)


@pytest.mark.parametrize("channel", ["wechat", "alipay", "unionpay"])
async def test_channel_payment_code_pays_and_a_retry_is_the_same_charge(rt, hospital, settings, channel):
    code = await channel_pay_code(rt, channel)
    body = {"out_trade_no": "POS" + secrets.token_hex(6)}
    first = await micropay(hospital, settings, code, **body)
    assert first.status_code == 200 and first.json()["status"] == "paid", first.text
    again = await micropay(hospital, settings, code, **body)
    assert again.json()["order_no"] == first.json()["order_no"] and again.json()["status"] == "paid"
    assert await Order.filter(institution_id=hospital.client_id, out_trade_no=body["out_trade_no"]).count() == 1


async def test_lost_micropay_answer_is_decided_by_a_query(http, rt, hospital, settings):
    code = await channel_pay_code(rt, "wechat")
    await http.post("/_mock/wechat/pay/faults", json={"drop_responses": 1})
    reply = await micropay(hospital, settings, code)
    assert reply.status_code == 200 and reply.json()["status"] == "paid", reply.text


async def test_payer_entering_a_password_is_waited_for(http, rt, hospital, settings):
    code = await channel_pay_code(rt, "alipay")
    await http.post("/_mock/alipay/pay/faults", json={"userpaying": True, "userpaying_ms": 1500})
    reply = await micropay(hospital, settings, code)
    assert reply.status_code == 200 and reply.json()["status"] == "paid", reply.text


# --- bills ---------------------------------------------------------------------------------------


async def test_institution_bill_lists_the_days_payments_and_refunds(http, hospital, settings):
    order = await paid_order(http, hospital, settings, amount_fen=5_000)
    refund = await hospital.post(f"/cashier/v1/orders/{order['order_no']}/refunds", {"out_refund_no": "b-" + order["out_trade_no"], "amount_fen": 1_200})
    await eventually(lambda: refund_settled(refund.json()["refund_no"]))
    from cashier.bills import CHINA

    today = utcnow().astimezone(CHINA).date().isoformat()
    reply = await hospital.get(f"/cashier/v1/bills?date={today}")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(reply.text)))
    mine = [r for r in rows if len(r) > 2 and r[1] == order["order_no"]]
    assert [(r[5], r[6]) for r in mine] == [("支付", "5000"), ("退款", "-1200")]
    assert_refused(await hospital.get("/cashier/v1/bills?date=yesterday"), 422, "VALIDATION_ERROR")
    # Regression (fuzz): the first and the last date have no day bounds in UTC, a 500.
    for date in ("0001-01-01", "9999-12-31"):
        assert_refused(await hospital.get(f"/cashier/v1/bills?date={date}"), 422, "VALIDATION_ERROR")


async def test_mini_program_pays_with_its_login_code(http, hospital, settings):
    order = await new_order(hospital, settings)
    missing = await http.post(f"/cashier/{order['order_no']}/pay", json={"channel": "wechat_mini"})
    assert_refused(missing, 422, "VALIDATION_ERROR")
    login = (await http.post("/_mock/wechat/wxa/login", json={"openid": "o-mini-payer"})).json()
    reply = await http.post(f"/cashier/{order['order_no']}/pay", json={"channel": "wechat_mini", "code": login["code"]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["action"] == "jsapi" and reply.json()["package"].startswith("prepay_id=")


async def test_a_first_payment_starts_from_the_order_as_created_without_reading_it(http, rt, hospital, settings, monkeypatch):
    order = await new_order(hospital, settings)

    async def no_read(order_no: str):
        raise AssertionError(f"paying read order {order_no}")

    with monkeypatch.context() as patched:
        patched.setattr(orders, "order_or_none", no_read)
        started = await http.post(f"/cashier/{order['order_no']}/pay", json={"channel": "wechat_h5"})
    assert started.status_code == 200, started.text
    row = await Order.get(order_no=order["order_no"])
    assert (row.status.value, row.channel, row.method) == ("paying", "wechat", "wechat_h5")
    wechat = await accounts.channel_for(rt, hospital.client_id, "wechat")
    at_channel = await wechat.query(order["order_no"])  # asked for the order's own amount
    assert (at_channel.status, at_channel.amount_fen) == ("paying", order["amount_fen"])
    # Paying again at the same channel (a reload) is no first payment: the order is read.
    assert (await http.post(f"/cashier/{order['order_no']}/pay", json={"channel": "wechat_h5"})).status_code == 200


async def test_an_order_past_its_expiry_is_not_paid_whatever_the_cache_says(http, hospital, settings):
    order = await new_order(hospital, settings)
    await Order.filter(order_no=order["order_no"]).update(expires_at=utcnow() - timedelta(seconds=1))
    refused = await http.post(f"/cashier/{order['order_no']}/pay", json={"channel": "wechat_h5"})
    assert_refused(refused, 409, "ORDER_NOT_PAYABLE")
    assert await order_status(order["order_no"]) == "created"


async def test_a_paid_order_is_refused_before_a_closed_channel_is_mentioned(http, admin, hospital, settings):
    order = await new_order(hospital, settings)
    await pay_through(http, order, "alipay_wap")
    await confirm(http, "alipay", order["order_no"])
    await eventually(lambda: paid(order["order_no"]))
    wechat = mock_merchant_configs(settings)["wechat"]
    closed = await admin.request(
        "PUT", f"/admin/v1/institutions/{hospital.client_id}/channels/wechat",
        {"app_id": wechat.app_id, "merchant_id": wechat.merchant_id, "gateway": wechat.gateway,
         "secrets": wechat.secrets, "enabled": False},
    )  # fmt: skip
    assert closed.status_code == 200
    refused = await http.post(f"/cashier/{order['order_no']}/pay", json={"channel": "wechat_h5"})
    assert_refused(refused, 409, "ORDER_NOT_PAYABLE")


async def test_changing_channel_closes_the_first_one_at_its_channel(http, rt, hospital, settings):
    order = await new_order(hospital, settings)
    await pay_through(http, order, "wechat_h5")
    await pay_through(http, order, "alipay_wap")
    wechat = await accounts.channel_for(rt, hospital.client_id, "wechat")
    assert (await wechat.query(order["order_no"])).status == "closed"
    await confirm(http, "alipay", order["order_no"])
    await eventually(lambda: paid(order["order_no"]))
    assert (await Order.get(order_no=order["order_no"])).channel == "alipay"


async def test_the_same_counter_payment_sent_twice_at_once_charges_once(rt, hospital, settings):
    code = await channel_pay_code(rt, "wechat")
    body = {"out_trade_no": "POS" + secrets.token_hex(6)}
    replies = await asyncio.gather(micropay(hospital, settings, code, **body), micropay(hospital, settings, code, **body))
    assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
    assert {r.json()["order_no"] for r in replies} == {replies[0].json()["order_no"]}
    assert {r.json()["status"] for r in replies} == {"paid"}
