"""WeChat Pay specifics (the common behaviour is in test_payment_channels): JSAPI parameters,
the H5 page, both sign types."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from contextlib import asynccontextmanager
from dataclasses import replace
from urllib.parse import urlsplit

import pytest

from cardcore import outbound
from cashier.channels.base import ChannelRefused, ChannelUnreachable
from cashier.channels.dev import mock_merchant_configs
from cashier.channels.wechat import WeChatChannel, sign
from tests.e2e.payments import payment_request, raw_request

OPENID = "oDevPayer000000000000000001"


@pytest.fixture(scope="module")
def config(live_server):
    return mock_merchant_configs(live_server.settings)["wechat"]


@pytest.fixture(scope="module")
def channel_code():
    return "wechat"


@pytest.fixture(scope="module")
def channel(config):
    return WeChatChannel(config)


@pytest.mark.parametrize("method", ["wechat_jsapi", "wechat_mini"])
async def test_jsapi_payment_confirmed_notified_and_queried(channel, mock, config, live_server, method):
    request = payment_request(live_server.base_url, method, 1234, payer_id=OPENID)
    action = await channel.create_payment(request)

    assert action.action == "jsapi"
    params = action.data
    expected_app = config.secrets["mini_app_id"] if method == "wechat_mini" else config.app_id
    assert params["appId"] == expected_app and params["package"].startswith("prepay_id=wx")
    assert params["signType"] == "HMAC-SHA256"
    assert params["paySign"] == sign(
        {k: v for k, v in params.items() if k != "paySign"}, config.secrets["api_key"], "HMAC-SHA256"
    )
    assert (await channel.query(request.order_no)).status == "paying"

    confirmed = await mock.confirm(request.order_no)
    assert confirmed["status"] == "paid"
    items = await mock.notifications(request.order_no)
    event = await channel.parse_callback(*raw_request(items[0]))
    assert event.refund is None
    assert event.payment.status == "paid" and event.payment.order_no == request.order_no
    assert (
        event.payment.amount_fen == 1234 and event.payment.channel_trade_no == confirmed["channel_trade_no"]
    )
    assert event.payment.paid_at is not None

    state = await channel.query(request.order_no)
    assert (state.status, state.amount_fen, state.channel_trade_no) == (
        "paid",
        1234,
        confirmed["channel_trade_no"],
    )


async def test_h5_payment_goes_through_the_payment_page(channel, web, mock, live_server):
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


async def test_md5_merchant_signs_and_verifies_with_md5(mock, config, live_server):
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


async def test_proxy_settings_of_the_environment_are_read_when_the_client_is_built(config, live_server, monkeypatch):
    """Calls go through HTTP(S)_PROXY unless NO_PROXY names the gateway, as requests does;
    a client keeps what it read when it was built, not what the environment says later."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: a proxy that refuses connections
    dead_proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    outbound.proxy_for.cache_clear()  # what the variables said before this test
    try:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(name, dead_proxy)
        through_proxy = WeChatChannel(config)
        with pytest.raises(ChannelUnreachable):
            await through_proxy.create_payment(payment_request(live_server.base_url, "wechat_jsapi", 100, payer_id=OPENID))

        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        outbound.proxy_for.cache_clear()  # as a restarted worker reads them
        direct = WeChatChannel(config)
        action = await direct.create_payment(payment_request(live_server.base_url, "wechat_jsapi", 100, payer_id=OPENID))
        assert action.action == "jsapi"

        # The client built before NO_PROXY was set still goes to the proxy.
        with pytest.raises(ChannelUnreachable):
            await through_proxy.create_payment(payment_request(live_server.base_url, "wechat_jsapi", 100, payer_id=OPENID))
    finally:
        closed.close()
        outbound.proxy_for.cache_clear()  # what the dead proxy variables left behind


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, list[bytes], bytes]:
    """First line, header lines and body of one HTTP/1.1 message with a Content-Length."""
    first = await reader.readline()
    headers, length = [], 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        headers.append(line)
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return first, headers, await reader.readexactly(length) if length else b""


@asynccontextmanager
async def _server(answer):
    """A loopback HTTP/1.1 server; ``answer(first_line, headers, body)`` returns the raw reply."""

    async def serve(reader, writer):
        while True:
            first, headers, body = await _read_message(reader)
            if not first:
                break
            writer.write(await answer(first, headers, body))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_calls_go_through_the_proxy_the_environment_names(config, live_server, monkeypatch):
    """A working proxy gets every call as an absolute URI, with the credentials its URL names,
    and passes it on: the payment is made."""
    targets: list[bytes] = []
    credentials: list[bytes] = []

    async def forward(first, headers, body):
        method, target, version = first.split(b" ")
        targets.append(target)
        to_proxy = [line for line in headers if line.lower().startswith(b"proxy-authorization:")]
        credentials.extend(line.split(b":", 1)[1].strip() for line in to_proxy)
        headers = [line for line in headers if line not in to_proxy]
        upstream = urlsplit(target.decode())
        reader, writer = await asyncio.open_connection(upstream.hostname, upstream.port)
        path = (upstream.path + ("?" + upstream.query if upstream.query else "")).encode()
        writer.write(b" ".join((method, path, version)) + b"".join(headers) + b"\r\n" + body)
        status, answer_headers, answer_body = await _read_message(reader)
        writer.close()
        return status + b"".join(answer_headers) + b"\r\n" + answer_body

    outbound.proxy_for.cache_clear()
    try:
        async with _server(forward) as proxy:
            for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
                monkeypatch.delenv(name, raising=False)
            for name in ("HTTP_PROXY", "http_proxy"):
                monkeypatch.setenv(name, proxy.replace("http://", "http://his:p%40ss@"))
            channel = WeChatChannel(config)
            request = payment_request(live_server.base_url, "wechat_jsapi", 321, payer_id=OPENID)
            action = await channel.create_payment(request)
            assert action.action == "jsapi"
            assert (await channel.query(request.order_no)).status == "paying"
    finally:
        outbound.proxy_for.cache_clear()
    gateway = config.gateway.rstrip("/")
    assert targets == [f"{gateway}/pay/unifiedorder".encode(), f"{gateway}/pay/orderquery".encode()]
    assert credentials == [b"Basic " + base64.b64encode(b"his:p@ss")] * 2


async def test_a_page_instead_of_an_answer_is_unreadable(config, live_server):
    """A gateway (or something in front of it) answering 200 with a page, well-formed or not:
    the outcome is unknown, not a crash, and the page is not taken for a bill."""

    for page in ("<html><body>维护中</body></html>", "<!DOCTYPE html><html><meta charset=utf-8>维护中</html>"):
        answer = page.encode()

        async def maintenance(first, headers, body, answer=answer):
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(answer)
            return head + answer

        async with _server(maintenance) as gateway:
            channel = WeChatChannel(replace(config, gateway=gateway + "/"))
            with pytest.raises(ChannelUnreachable) as unreadable:
                await channel.create_payment(payment_request(live_server.base_url, "wechat_jsapi", 100, payer_id=OPENID))
            assert "unreadable answer" in unreadable.value.details["reason"]
            with pytest.raises(ChannelUnreachable):
                await channel.query("20261124000000000000000001")
            with pytest.raises(ChannelUnreachable):
                await channel.download_bill("2026-11-23")
