"""Unified cashier end to end: create → pay → channel callback → hospital notified.

    .venv/bin/python bench/cashier.py            # full run, the figures of BENCHMARKS.md
    .venv/bin/python bench/cashier.py --quick    # CI: proves the benchmark still works
    .venv/bin/python bench/cashier.py --end-to-end-only --orders 2500   # quick rounds for an A/B

Prints one JSON object on stdout; progress goes to stderr.

end_to_end — ``python -m openplatform serve --workers 2`` on PostgreSQL + Redis, mocks
mounted, its own background workers delivering notifications. A driver keeps
``--flows`` orders in flight; each one is what happens at a hospital: the HIS creates the
order (signed ``POST /cashier/v1/orders``), the resident picks WeChat Pay on the cashier
page (``POST /cashier/{order_no}/pay``: the platform calls the mock WeChat Pay gateway
through wechatpy), the payer confirms (``POST /_mock/wechat/pay/orders/{no}/confirm``: the
mock calls ``/cashier/notify/wechat`` back as WeChat does), and the platform's worker POSTs
the signed ``order.paid`` to the mock hospital, which answers ``SUCCESS``. Throughput is
orders whose notification was delivered per second, from the first creation to the last
delivery (read from the database); latency is creation → delivery of each order;
``cpu_ms_per_order`` is the CPU the server's workers, PostgreSQL, Redis and the driver
spent per order meanwhile (from /proc). The mocks run inside the same two workers, so the
figures include the channel's and the hospital's work too. The driver is a plain asyncio
HTTP/1.1 client with kept-alive connections, so it costs little CPU. Goal: ≥ 300 paid
orders/s.

create_order — the same create-order request (fresh out_trade_no and nonce each, pre-signed)
replayed by wrk against the platform, vs a bare Sanic JSON route on the same number of
workers (``bench/plain_app.py``), in the same run.

Needs PostgreSQL (the --database-url database is dropped and created afresh), Redis (the
--redis-url database is flushed; default db 14) and wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.codes import wrk  # noqa: E402
from bench.harness import (  # noqa: E402
    PLAIN_PATH,
    BenchFailure,
    CpuMeter,
    Processes,
    figures,
    note,
    prepare_platform,
    print_report,
    raw_request,
    report_failure,
    report_head,
    require_clean,
    wrk_version,
)
from openplatform.sdk import build_request  # noqa: E402
from tests.flows import order_body  # noqa: E402

WORKERS = 2
GOAL_ORDERS_PER_S = 300
WARMUP_ORDERS = 50
# The create-order pool must outlast a wrk run; wrk stops (and the run fails) if it does not.
MAX_CREATE_RPS = 5000
ORDER_PATH = "/cashier/v1/orders"


@dataclasses.dataclass(frozen=True)
class Sizes:
    orders: int  # end-to-end orders
    flows: int  # orders in flight at once
    duration_s: int  # each wrk run
    connections: int = 16
    wrk_threads: int = 1


FULL = Sizes(orders=6000, flows=64, duration_s=10)
QUICK = Sizes(orders=150, flows=16, duration_s=2)


# --- a small HTTP/1.1 client: kept-alive connections, no parsing beyond what is needed ---------


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        try:
            head_bytes = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            raise BenchFailure(f"{method} {path}: the server closed the connection") from None
        status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        length, close = 0, False
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        payload = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def order_payload(base_url: str) -> dict:
    return order_body(
        base_url, out_trade_no="B" + secrets.token_hex(12), amount_fen=1000 + secrets.randbelow(90_000), return_url=""
    )


async def one_order(conn: Connection, base_url: str, hospital: dict) -> str:
    headers, body = build_request(hospital["client_id"], hospital["secret"], "POST", ORDER_PATH, order_payload(base_url))
    status, answer = await conn.request("POST", ORDER_PATH, body, {**headers, "Content-Type": "application/json"})
    if status != 201:
        raise BenchFailure(f"create order answered {status}: {answer[:300]!r}")
    order_no = json.loads(answer)["order_no"]
    status, answer = await conn.request(
        "POST", f"/cashier/{order_no}/pay", b'{"channel":"wechat_h5"}', {"Content-Type": "application/json"}
    )
    if status != 200:
        raise BenchFailure(f"pay answered {status}: {answer[:300]!r}")
    status, answer = await conn.request("POST", f"/_mock/wechat/pay/orders/{order_no}/confirm")
    if status != 200:
        raise BenchFailure(f"confirm answered {status}: {answer[:300]!r}")
    return order_no


def drive_loop(main):
    """Run the driver on uvloop (Sanic's own loop, so installed): the hospitals and residents it
    stands in for do not share the platform's two cores in real life, so it should take as
    little of them as it can (the same reason wrk, in C, drives the create-order comparison)."""
    import uvloop

    return uvloop.run(main)


async def drive(base_url: str, hospital: dict, sizes: Sizes) -> list[str]:
    parts = urlsplit(base_url)
    remaining = iter(range(sizes.orders))
    made: list[str] = []

    async def flow() -> None:
        conn = Connection(parts.hostname, parts.port)
        try:
            for _ in remaining:
                made.append(await one_order(conn, base_url, hospital))
        finally:
            await conn.close()

    await asyncio.gather(*(flow() for _ in range(sizes.flows)))
    return made


async def delivery_figures(database_url: str, expected_total: int, skip_oldest: int, timeout_s: float) -> dict:
    """Wait until ``expected_total`` orders have their notification delivered, then the figures
    of all but the ``skip_oldest`` first orders (the warm-up)."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            delivered = await connection.fetchval(
                "SELECT count(*) FROM cashier_notification WHERE event = 'order.paid' AND status = 'delivered'"
            )
            if delivered >= expected_total:
                break
            if time.monotonic() > deadline:
                raise BenchFailure(f"only {delivered} of {expected_total} notifications were delivered in {timeout_s:.0f} s")
            await asyncio.sleep(0.1)
        rows = await connection.fetch(
            "SELECT o.created_at, n.delivered_at FROM cashier_order o "
            "JOIN cashier_notification n ON n.order_no = o.order_no AND n.event = 'order.paid' "
            "WHERE n.status = 'delivered' ORDER BY o.created_at OFFSET $1",
            skip_oldest,
        )
        duplicates = await connection.fetchval(
            "SELECT count(*) FROM (SELECT order_no FROM cashier_notification GROUP BY order_no, event HAVING count(*) > 1) d"
        )
        unpaid = await connection.fetchval("SELECT count(*) FROM cashier_order WHERE status <> 'paid'")
    finally:
        await connection.close()
    if duplicates or unpaid:
        raise BenchFailure(f"{duplicates} orders were notified twice and {unpaid} orders are not paid")
    first = min(created for created, _ in rows)
    last = max(delivered for _, delivered in rows)
    latencies = sorted((delivered - created).total_seconds() * 1000 for created, delivered in rows)
    elapsed = (last - first).total_seconds()
    return {
        "orders": len(rows),
        "elapsed_s": round(elapsed, 2),
        "orders_per_s": round(len(rows) / elapsed, 1),
        "latency_p50_ms": round(statistics.median(latencies), 1),
        "latency_p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
    }


class CreatePool:
    """Pre-signed create-order requests for wrk, each with its own out_trade_no and nonce."""

    def __init__(self, base_url: str, hospital: dict) -> None:
        self.base_url, self.hospital = base_url, hospital

    def write(self, path: Path, count: int) -> None:
        host = urlsplit(self.base_url).netloc
        with open(path, "wb") as out:
            for _ in range(count):
                headers, body = build_request(
                    self.hospital["client_id"], self.hospital["secret"], "POST", ORDER_PATH, order_payload(self.base_url)
                )
                raw = raw_request("POST", ORDER_PATH, host, {"Content-Type": "application/json", **headers}, body)
                out.write(b"%d\n" % len(raw))
                out.write(raw)


def run(
    sizes: Sizes, work_dir: Path, database_url: str, redis_url: str, machine: dict, compare_create: bool = True
) -> dict:
    platform = prepare_platform(work_dir, database_url, redis_url, machine, EHC_WORKER_POLL_MS="200")
    hospital = platform.demo["institution"]

    processes = Processes(work_dir)
    try:
        server = platform.serve(processes, WORKERS)
        plain_url, plain = platform.serve_plain(processes, WORKERS) if compare_create else (None, None)
        base_url = platform.base_url

        warm = WARMUP_ORDERS
        note(f"warm-up: {warm} orders end to end")
        drive_loop(drive(base_url, hospital, Sizes(orders=warm, flows=8, duration_s=1)))
        asyncio.run(delivery_figures(database_url, warm, 0, 60))

        note(f"end to end: {sizes.orders} orders, {sizes.flows} in flight")
        with CpuMeter(server) as cpu:
            started = time.monotonic()
            drive_loop(drive(base_url, hospital, sizes))
            driven_s = time.monotonic() - started
            end_to_end = asyncio.run(delivery_figures(database_url, warm + sizes.orders, warm, 300))
        end_to_end.update(
            driver_s=round(driven_s, 2), flows=sizes.flows, cpu_ms_per_order=cpu.per_unit_ms(sizes.orders)
        )

        if not compare_create:
            return {"end_to_end": end_to_end, "workers": WORKERS}
        pool_path = work_dir / "create.bin"
        count = MAX_CREATE_RPS * sizes.duration_s
        note(f"create order vs plain endpoint: wrk {sizes.duration_s} s each, pool of {count}")
        CreatePool(base_url, hospital).write(pool_path, count)
        plain_run = wrk(plain_url, sizes, sizes.duration_s, ["get", PLAIN_PATH], sizes.connections)
        require_clean(plain_run, "plain endpoint")
        create_run = wrk(
            base_url, sizes, sizes.duration_s, ["pool", str(pool_path), str(sizes.wrk_threads)], sizes.connections
        )
        require_clean(create_run, "create order")
        if server.poll() is not None or plain.poll() is not None:
            raise BenchFailure("a server died during the run")
    finally:
        processes.stop_all()

    create_order = {
        "create": figures(create_run),
        "plain": figures(plain_run),
        "ratio": round(create_run["rps"] / plain_run["rps"], 3),
        "wrk": f"-t{sizes.wrk_threads} -c{sizes.connections} -d{sizes.duration_s}s",
    }
    return {"end_to_end": end_to_end, "create_order": create_order, "workers": WORKERS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Unified cashier end-to-end benchmark (prints JSON).")
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the benchmark works")
    parser.add_argument("--orders", type=int, help=f"end-to-end orders (default {FULL.orders}; {QUICK.orders} with --quick)")
    parser.add_argument("--flows", type=int, help=f"orders in flight at once (default {FULL.flows}; {QUICK.flows} with --quick)")
    parser.add_argument("--database-url", default=os.environ.get("EHC_BENCH_CASHIER_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ehc_bench_cashier"))
    parser.add_argument("--redis-url", default=os.environ.get("EHC_BENCH_CASHIER_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument(
        "--end-to-end-only", action="store_true",
        help="skip the create-order comparison (quicker rounds when comparing two versions end to end)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    sizes = dataclasses.replace(sizes, orders=args.orders or sizes.orders, flows=args.flows or sizes.flows)
    if shutil.which("wrk") is None:
        print("bench/cashier.py: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    report = report_head(args.quick)
    report["machine"]["wrk"] = wrk_version()
    work_dir = Path(tempfile.mkdtemp(prefix="ehc-bench-cashier-"))
    try:
        report.update(run(sizes, work_dir, args.database_url, args.redis_url, report["machine"], not args.end_to_end_only))
    except BenchFailure as exc:
        return report_failure(exc)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    report["goals"] = {f"orders_per_s >= {GOAL_ORDERS_PER_S}": report["end_to_end"]["orders_per_s"] >= GOAL_ORDERS_PER_S}
    return print_report(report)


if __name__ == "__main__":
    sys.exit(main())
