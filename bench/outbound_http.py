"""Outbound HTTP: CPU per hospital notification POST through ``cardcore.outbound`` (aiohttp:
what the notifier, the channel gateways' calls and the mock channels' callbacks use) vs httpx
(what they used before), in the same run; and CPU per WeChat Pay gateway call through the
transport wechatpy is given (``GatewaySession``, urllib3) vs its own ``requests.Session``.

    .venv/bin/python bench/outbound_http.py            # full run, the figures of BENCHMARKS.md
    .venv/bin/python bench/outbound_http.py --quick    # CI: proves the benchmark still works

Prints one JSON object on stdout; progress goes to stderr.

One process, one event loop (uvloop, as the server's workers run): a minimal HTTP/1.1
receiver on loopback answers every POST with ``SUCCESS``, as a hospital does; each client
POSTs a signed ``order.paid`` body with the notifier's headers, reading the answer, from
1, 8 and as many concurrent senders as a worker has delivery slots (48), and once
with an httpx client made for each call, as the UnionPay and insurance channels did. The
figure is process CPU time per request, client and receiver together; the receiver's
share is the same for every client, and the floor line (the same exchange written
directly on asyncio streams) shows how small it is.

Gateway calls: one SDK thread (as ``run_sync`` runs wechatpy) posts a signed unifiedorder
XML body to the same receiver, one call after another, through ``requests.Session``
(environment not read per call, as the channel pinned it before) and through
``cashier.channels._common.GatewaySession``; process CPU per call, both sides together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import requests
import urllib3
import uvloop

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import BenchFailure, note, print_report, report_failure, report_head  # noqa: E402
from cardcore import outbound, signing  # noqa: E402
from cashier import notifier  # noqa: E402
from cashier.channels._common import GatewaySession  # noqa: E402

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 7\r\n\r\nSUCCESS"
PATH = "/his/notify"
CONCURRENCY = (1, 8, notifier.CONCURRENT_DELIVERIES)


@dataclass(frozen=True)
class Sizes:
    requests: int  # per client and concurrency
    warmup: int
    per_call: int  # requests with a client made for each


FULL = Sizes(requests=6400, warmup=320, per_call=100)
QUICK = Sizes(requests=320, warmup=32, per_call=10)


class Hospital(asyncio.Protocol):
    """Answers each complete request (head, then Content-Length bytes) with SUCCESS."""

    def connection_made(self, transport) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(ANSWER)


def notification() -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"notification_id": "1", "event": "order.paid", "order_no": "P" + "1" * 27, "out_trade_no": "HIS0001",
         "amount_fen": 12345, "status": "paid", "channel": "wechat", "paid_fen": 12345},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    headers = signing.signed_headers(signing.PLATFORM_CLIENT_ID, "sec_" + "x" * 40, "POST", PATH, body)
    headers["Content-Type"] = "application/json; charset=utf-8"
    return body, headers


async def with_aiohttp(url: str, senders: int, count: int) -> float:
    body, headers = notification()
    session = notifier.delivery_session(10)
    try:

        async def sender(n: int) -> None:
            for _ in range(n):
                reply = await outbound.fetch(session, "POST", url, data=body, headers=headers, read_limit=4096)
                if reply.status_code != 200 or reply.content != b"SUCCESS":
                    raise BenchFailure(f"aiohttp: unexpected answer {reply.status_code}")

        return await timed(sender, senders, count)
    finally:
        await session.close()


async def with_httpx(url: str, senders: int, count: int) -> float:
    body, headers = notification()
    limits = httpx.Limits(max_keepalive_connections=notifier.CONCURRENT_DELIVERIES)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:

        async def sender(n: int) -> None:
            for _ in range(n):
                reply = await client.post(url, content=body, headers=headers)
                if reply.status_code != 200 or reply.text != "SUCCESS":
                    raise BenchFailure(f"httpx: unexpected answer {reply.status_code}")

        return await timed(sender, senders, count)


async def with_httpx_client_per_call(url: str, senders: int, count: int) -> float:
    """How the UnionPay and insurance channels called their gateways before: a client per call."""
    body, headers = notification()

    async def sender(n: int) -> None:
        for _ in range(n):
            async with httpx.AsyncClient(timeout=10) as client:
                reply = await client.post(url, content=body, headers=headers)
            if reply.status_code != 200:
                raise BenchFailure(f"httpx: unexpected answer {reply.status_code}")

    return await timed(sender, senders, count)


async def with_streams(url: str, senders: int, count: int) -> float:
    """The floor: the same bytes over asyncio streams, no HTTP library."""
    body, headers = notification()
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    async def sender(n: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for _ in range(n):
                writer.write(request)
                await reader.readuntil(b"\r\n\r\n")
                if await reader.readexactly(7) != b"SUCCESS":
                    raise BenchFailure("streams: unexpected answer")
        finally:
            writer.close()

    return await timed(sender, senders, count)


async def timed(sender, senders: int, count: int) -> float:
    """Microseconds of process CPU per request, after one warm-up pass of each sender."""
    await asyncio.gather(*(sender(2) for _ in range(senders)))
    each = max(1, count // senders)
    started = time.process_time()
    await asyncio.gather(*(sender(each) for _ in range(senders)))
    return (time.process_time() - started) * 1e6 / (each * senders)


CLIENTS = {"aiohttp (cardcore.outbound)": with_aiohttp, "httpx": with_httpx, "asyncio streams (floor)": with_streams}


def unifiedorder_body() -> bytes:
    """What wechatpy sends for a JSAPI payment (the fields of one, signed): the body's size matters, not its truth."""
    fields = {"appid": "wx0de0000000e4c001", "mch_id": "1900000109", "nonce_str": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
              "body": "门诊缴费", "out_trade_no": "P" + "1" * 27, "total_fee": "12345", "spbill_create_ip": "127.0.0.1",
              "notify_url": "https://ehc.example/cashier/notify/wechat", "trade_type": "JSAPI", "sign_type": "HMAC-SHA256",
              "openid": "oDevPayer000000000000000001", "sign": "A" * 64}  # fmt: skip
    return ("<xml>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</xml>").encode()


def _gateway_calls(session, url: str, body: bytes, count: int) -> None:
    for _ in range(count):
        answer = session.request("post", url, data=body, timeout=10)
        if answer.status_code != 200 or answer.content != b"SUCCESS":
            raise BenchFailure(f"gateway call: unexpected answer {answer.status_code}")


async def gateway_call_cpu(session, url: str, count: int) -> float:
    """Microseconds of process CPU per call made from one SDK thread, after a warm-up."""
    body = unifiedorder_body()
    await asyncio.to_thread(_gateway_calls, session, url, body, 2)
    started = time.process_time()
    await asyncio.to_thread(_gateway_calls, session, url, body, count)
    return (time.process_time() - started) * 1e6 / count


def gateway_sessions(url: str) -> dict:
    pinned = requests.Session()
    pinned.trust_env = False
    return {"requests.Session": pinned, "GatewaySession (urllib3)": GatewaySession(url)}


async def run(sizes: Sizes) -> dict:
    server = await asyncio.get_running_loop().create_server(Hospital, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}{PATH}"
    rows = []
    try:
        for senders in CONCURRENCY:
            row: dict = {"concurrent_senders": senders}
            for name, client in CLIENTS.items():
                note(f"{name}, {senders} at once")
                await client(url, senders, sizes.warmup)
                row[f"{name} us_cpu_per_request"] = round(await client(url, senders, sizes.requests), 1)
            row["httpx_over_aiohttp"] = round(row["httpx us_cpu_per_request"] / row["aiohttp (cardcore.outbound) us_cpu_per_request"], 2)
            rows.append(row)
        note("httpx, a client made for each call")
        per_call = round(await with_httpx_client_per_call(url, 1, sizes.per_call), 1)
        gateway: dict = {}
        for name, session in gateway_sessions(url).items():
            note(f"gateway calls through {name}")
            await gateway_call_cpu(session, url, sizes.warmup)
            gateway[f"{name} us_cpu_per_call"] = round(await gateway_call_cpu(session, url, sizes.requests), 1)
        gateway["urllib3_over_requests"] = round(
            gateway["GatewaySession (urllib3) us_cpu_per_call"] / gateway["requests.Session us_cpu_per_call"], 2
        )
    finally:
        server.close()
        await server.wait_closed()
    return {
        "requests_per_figure": sizes.requests,
        "rows": rows,
        "httpx_client_per_call_us_cpu": per_call,
        "gateway_calls": gateway,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Outbound HTTP client CPU per notification (prints JSON).")
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the benchmark works")
    args = parser.parse_args(argv)
    report = report_head(
        args.quick,
        versions={
            "aiohttp": aiohttp.__version__, "httpx": httpx.__version__, "uvloop": uvloop.__version__,
            "requests": requests.__version__, "urllib3": urllib3.__version__,
        },  # fmt: skip
    )
    try:
        report["figures"] = uvloop.run(run(QUICK if args.quick else FULL))
    except BenchFailure as exc:
        return report_failure(exc)
    return print_report(report)


if __name__ == "__main__":
    sys.exit(main())
