"""The cashier as hospitals and residents meet it, against running processes:

- a resident pays through the cashier page and the mock WeChat payment page in Chromium,
  and lands on the result page;
- the standalone worker is killed with SIGKILL in the middle of delivering hospital
  notifications, started again, and every notification still arrives;
- a server told to stop lets its worker finish the delivery under way and record it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from openplatform.sdk import PlatformClient
from tests.flows import order_body
from tests.servers import (
    free_port, process_env, running_server, shot, signal_and_wait, start_serve, stop_process_group, wait_until_healthy,
)  # fmt: skip

PLAIN_MOBILE_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"
)


def wait_for(check, timeout_s: float = 60, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval_s)


def create_order(base: str, hospital: dict, **overrides) -> dict:
    body = order_body(
        base, amount_fen=4_210, subject="门诊缴费 血常规", return_url=f"{base}/_mock/institution/notify", **overrides
    )
    with PlatformClient(base, hospital["client_id"], hospital["secret"]) as his:
        reply = his.post("/cashier/v1/orders", body)
    assert reply.status_code == 201, reply.text
    return reply.json()


def order_status(base: str, order_no: str) -> str:
    return httpx.get(f"{base}/cashier/{order_no}/status").json()["status"]


def test_resident_pays_through_the_cashier_page_and_the_mock_wechat_page(live_server, browser):
    base = live_server.base_url
    creds = live_server.seed_demo()
    order = create_order(base, creds["institution"])

    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True,
        user_agent=PLAIN_MOBILE_UA, locale="zh-CN",
    )
    page = context.new_page()
    page.goto(order["cashier_url"])
    assert "¥ 42.10" in page.inner_text("#amount")
    shot(page, "cashier-01-choose")
    page.click("#pay-wechat_h5")
    page.wait_for_url(lambda url: "/_mock/wechat/" in url)
    shot(page, "cashier-02-mock-wechat")
    page.get_by_role("button", name="确认支付").click()
    page.wait_for_url(f"{base}/cashier/{order['order_no']}/result*")
    page.wait_for_function("document.getElementById('result').dataset.status === 'paid'", timeout=20_000)
    assert page.inner_text("#result") == "支付成功"
    shot(page, "cashier-03-result")
    context.close()
    with PlatformClient(base, creds["institution"]["client_id"], creds["institution"]["secret"]) as his:
        assert his.get(f"/cashier/v1/orders/{order['order_no']}").json()["status"] == "paid"


def start_worker(server) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "openplatform", "worker"],
        env=process_env(server.env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def server_without_worker(tmp_path_factory):
    """A server that only takes requests: notifications wait for a standalone worker."""
    with running_server(
        tmp_path_factory.mktemp("crash-var"), EHC_RUN_WORKER="0", EHC_NOTIFY_LEASE_S="3", EHC_WORKER_POLL_MS="100"
    ) as server:
        yield server


def test_notifications_survive_a_worker_killed_mid_delivery(server_without_worker):
    server = server_without_worker
    base = server.base_url
    creds = server.seed_demo()
    admin = PlatformClient(base, creds["admin"]["client_id"], creds["admin"]["secret"])
    httpx.delete(f"{base}/_mock/institution/behaviour")

    orders = [create_order(base, creds["institution"]) for _ in range(12)]
    for order in orders:
        reply = httpx.post(f"{base}/cashier/{order['order_no']}/pay", json={"channel": "wechat_h5"})
        assert reply.status_code == 200, reply.text
        assert httpx.post(f"{base}/_mock/wechat/pay/orders/{order['order_no']}/confirm").status_code < 400
    wait_for(lambda: all(order_status(base, o["order_no"]) == "paid" for o in orders))
    pending = admin.get("/admin/v1/notifications?status=pending&limit=200").json()["items"]
    assert len(pending) == len(orders)

    # The hospital answers slowly: the worker is killed while deliveries are in flight.
    httpx.post(f"{base}/_mock/institution/behaviour", json={"fail_next": 0, "delay_ms": 5000})
    worker = start_worker(server)
    try:
        in_delivery = lambda: [  # noqa: E731
            n for n in admin.get("/admin/v1/notifications?status=pending&limit=200").json()["items"] if n["in_delivery_until"]
        ]
        wait_for(in_delivery, timeout_s=30)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert admin.get("/admin/v1/notifications?status=delivered&limit=200").json()["items"] == []

    httpx.delete(f"{base}/_mock/institution/behaviour")
    worker = start_worker(server)
    try:
        wait_for(lambda: not admin.get("/admin/v1/notifications?status=pending&limit=200").json()["items"], timeout_s=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    delivered = admin.get("/admin/v1/notifications?status=delivered&limit=200").json()["items"]
    assert sorted(n["order_no"] for n in delivered) == sorted(o["order_no"] for o in orders)
    for order in orders:
        answered = [r for r in received(base, order["out_trade_no"]) if r["answered_success"]]
        assert answered and all(r["body"]["event"] == "order.paid" for r in answered)
    admin.close()


def test_a_stopping_server_lets_its_worker_finish_the_delivery_under_way(server_without_worker, tmp_path):
    api = server_without_worker  # answers the admin and plays the hospital, delivers nothing itself
    base = api.base_url
    creds = api.seed_demo()
    admin = PlatformClient(base, creds["admin"]["client_id"], creds["admin"]["secret"])
    order = create_order(base, creds["institution"])
    assert httpx.post(f"{base}/cashier/{order['order_no']}/pay", json={"channel": "wechat_h5"}).status_code == 200
    assert httpx.post(f"{base}/_mock/wechat/pay/orders/{order['order_no']}/confirm").status_code < 400
    wait_for(lambda: order_status(base, order["order_no"]) == "paid")
    httpx.post(f"{base}/_mock/institution/behaviour", json={"fail_next": 0, "delay_ms": 2000})

    # A second server on the same storage, with its worker: stopped while the hospital is answering.
    port = free_port()
    stderr_path = tmp_path / "delivering-server.stderr"
    delivering = start_serve({**api.env, "EHC_PORT": str(port), "EHC_RUN_WORKER": "1", "EHC_LOG_LEVEL": "INFO"}, stderr_path)
    try:
        assert wait_until_healthy(f"http://127.0.0.1:{port}/healthz", delivering), stderr_path.read_text()[-2000:]
        notice = lambda: admin.get(f"/admin/v1/notifications?order_no={order['order_no']}").json()["items"][0]  # noqa: E731
        wait_for(lambda: notice()["in_delivery_until"], timeout_s=30)
        signal_and_wait(delivering, stderr_path)
    finally:
        stop_process_group(delivering)
        httpx.delete(f"{base}/_mock/institution/behaviour")
    shown = notice()
    assert (shown["status"], shown["attempts"]) == ("delivered", 1), shown
    assert "cancelled before it completed" not in stderr_path.read_text()
    admin.close()


def received(base: str, out_trade_no: str) -> list[dict]:
    return httpx.get(f"{base}/_mock/institution/notifications", params={"out_trade_no": out_trade_no}).json()["items"]
