"""Helpers for the payment-channel tests: orders, mock control, the recording institution."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta, timezone

import httpx

from cashier.channels.base import PaymentRequest


def new_order_no() -> str:
    return "T" + datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S") + secrets.token_hex(5).upper()


def sink_url(base_url: str, order_no: str) -> str:
    """The mock institution's recording notify URL, keyed by our order number."""
    return f"{base_url}/_mock/institution/notify?out_trade_no={order_no}"


def payment_request(
    base_url: str,
    method: str,
    amount_fen: int = 1234,
    *,
    payer_id: str = "",
    order_no: str | None = None,
    minutes: int = 30,
) -> PaymentRequest:
    order_no = order_no or new_order_no()
    return PaymentRequest(
        order_no=order_no,
        amount_fen=amount_fen,
        subject="门诊缴费 测试",
        expires_at=datetime.now(timezone.utc) + timedelta(minutes=minutes),
        notify_url=sink_url(base_url, order_no),
        return_url=f"{base_url}/h5/?paid={order_no}",
        client_ip="127.0.0.1",
        method=method,
        payer_id=payer_id,
    )


class MockControl:
    """What a test does as the payer, and as the one who breaks the channel."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, channel: str) -> None:
        self.http, self.base_url, self.channel = http, base_url, channel

    async def confirm(self, order_no: str, expect: int = 200) -> dict:
        reply = await self.http.post(f"{self.base_url}/_mock/{self.channel}/pay/orders/{order_no}/confirm")
        assert reply.status_code == expect, reply.text
        return reply.json()

    async def cancel(self, order_no: str) -> dict:
        reply = await self.http.post(f"{self.base_url}/_mock/{self.channel}/pay/orders/{order_no}/cancel")
        assert reply.status_code == 200, reply.text
        return reply.json()

    async def faults(self, **faults) -> dict:
        reply = await self.http.post(f"{self.base_url}/_mock/{self.channel}/pay/faults", json=faults)
        assert reply.status_code == 200, reply.text
        return reply.json()["faults"]

    async def clear_faults(self) -> None:
        await self.http.delete(f"{self.base_url}/_mock/{self.channel}/pay/faults")

    async def notifications(self, order_no: str, at_least: int = 1, wait_s: float = 15) -> list[dict]:
        """What the mock institution recorded for the order, once there are ``at_least`` items."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            reply = await self.http.get(
                f"{self.base_url}/_mock/institution/notifications", params={"out_trade_no": order_no}
            )
            items = reply.json()["items"]
            if len(items) >= at_least or asyncio.get_running_loop().time() > deadline:
                return items
            await asyncio.sleep(0.1)


def raw_request(item: dict) -> tuple[dict[str, str], bytes]:
    """A recorded notification as the platform's callback route would get it."""
    return item["headers"], item["raw_body"].encode()


async def eventually(check, wait_s: float = 10):
    """``await check()`` until it returns something truthy (the channel finishing in the background)."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.1)
