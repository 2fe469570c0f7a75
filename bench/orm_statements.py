"""What the ORM costs per statement: the cashier's order reads and guarded updates through
Tortoise, against the same SQL sent straight through asyncpg, in the same run.

    .venv/bin/python bench/orm_statements.py            # full run, the figures of BENCHMARKS.md
    .venv/bin/python bench/orm_statements.py --quick    # CI: proves the benchmark still works

Prints one JSON object on stdout; progress goes to stderr.

One process on uvloop, PostgreSQL (the --database-url database is dropped, created afresh
and migrated), orders written through the ORM first. Each statement runs one at a time,
as a request runs it, three ways:

- ``orm``: the query built by Tortoise for each call (``Order.get_or_none``; the guarded
  update ``_mark_paying`` sends), sent through its pool, rows made into models;
- ``prepared``: the platform's own call (``cashier.orders.get_order``; ``_mark_paying``'s
  update): the SQL Tortoise built once, kept by ``cardcore.db.PreparedQuery`` and sent with
  fresh values, rows made into models by Tortoise: everything but building the query;
- ``asyncpg``: the same SQL and values on one asyncpg connection: the floor.

The figure is this process's CPU time per statement (PostgreSQL's own time is not in it).
``orm_vs_asyncpg`` is the ORM's cost as a multiple of the floor; ``building_share`` the part
of the ORM's cost that goes to building the query (``orm`` minus ``prepared``, over ``orm``).
Rounds alternate the three ways; each figure is the best round.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import BenchFailure, note, print_report, recreate_database, report_failure, report_head  # noqa: E402
from cardcore import db  # noqa: E402
from cardcore.clock import utcnow  # noqa: E402
from cashier.models import Order, OrderStatus  # noqa: E402
from cashier.orders import _MARK_PAYING, UNPAID, get_order  # noqa: E402
from openplatform.app import MODEL_APPS  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    orders: int
    statements: int  # per way and round
    rounds: int


FULL = Sizes(orders=500, statements=2000, rounds=5)
QUICK = Sizes(orders=50, statements=100, rounds=2)


def _paying_update(order_no: str, now: datetime):
    """The guarded update ``_mark_paying`` sends, as a query (not yet run)."""
    return Order.filter(order_no=order_no, status__in=UNPAID, expires_at__gt=now).update(
        status=OrderStatus.paying, channel="wechat", method="wechat_h5", failure_reason=""
    )


def _read_query(order_no: str):
    """What ``get_order`` runs (``Order.get_or_none``): a read by primary key, at most two rows."""
    return Order.filter(order_no=order_no).limit(2)


async def _write_orders(count: int) -> list[str]:
    numbers = []
    expires = datetime.now(timezone.utc) + timedelta(minutes=30)
    for _ in range(count):
        number = "B" + secrets.token_hex(12)
        await Order.create(
            order_no=number, institution_id="INST-BENCH", out_trade_no=number, request_digest="0" * 64,
            amount_fen=1000, subject="门诊缴费", order_type="clinic", notify_url="http://127.0.0.1:9/notify",
            expires_at=expires,
        )  # fmt: skip
        numbers.append(number)
    return numbers


# run() sends its values in the order of these placeholders; a Tortoise that builds other
# SQL fails the run instead of having values sent to the wrong columns.
UPDATE_SQL = (
    'UPDATE "cashier_order" SET "status"=$1,"channel"=$2,"method"=$3,"failure_reason"=$4 '
    'WHERE "order_no"=$5 AND "status" IN ($6,$7) AND "expires_at">$8'
)
READ_SQL_END = ' FROM "cashier_order" WHERE "order_no"=$1 LIMIT $2'


def _expect_sql(built: str, expected_end: str) -> None:
    if not built.endswith(expected_end):
        raise BenchFailure(f"the ORM now builds other SQL than this benchmark sends values for:\n{built}")


async def run(sizes: Sizes, database_url: str) -> dict:
    import asyncpg

    note(f"recreating database {database_url.rsplit('/', 1)[-1]}")
    await recreate_database(database_url)
    await db.migrate(database_url, MODEL_APPS)
    await db.init_db(database_url, MODEL_APPS)
    raw = await asyncpg.connect(database_url)
    try:
        numbers = await _write_orders(sizes.orders)
        read_sql = _read_query(numbers[0]).sql()
        update_sql = _paying_update(numbers[0], utcnow()).sql()
        _expect_sql(read_sql, READ_SQL_END)
        _expect_sql(update_sql, UPDATE_SQL)

        def update_values(number: str) -> list:
            return ["paying", "wechat", "wechat_h5", "", number, "created", "paying", utcnow()]

        expected = await raw.execute(update_sql, *update_values(numbers[0]))
        if expected != "UPDATE 1":
            raise BenchFailure(f"the guarded update as sent by asyncpg changed {expected!r}, not one row")

        async def orm_read(number: str) -> None:
            if (await Order.get_or_none(order_no=number)).order_no != number:
                raise BenchFailure("read the wrong order")

        async def prepared_read(number: str) -> None:
            if (await get_order(number)).order_no != number:
                raise BenchFailure("read the wrong order")

        async def asyncpg_read(number: str) -> None:
            if (await raw.fetch(read_sql, number, 2))[0]["order_no"] != number:
                raise BenchFailure("read the wrong order")

        async def orm_update(number: str) -> None:
            if await _paying_update(number, utcnow()) != 1:
                raise BenchFailure("the guarded update changed no row")

        async def prepared_update(number: str) -> None:
            if await _MARK_PAYING.execute(number, "wechat", "wechat_h5", utcnow()) != 1:
                raise BenchFailure("the guarded update changed no row")

        async def asyncpg_update(number: str) -> None:
            if await raw.execute(update_sql, *update_values(number)) != "UPDATE 1":
                raise BenchFailure("the guarded update changed no row")

        statements = {
            "order read by number": {"orm": orm_read, "prepared": prepared_read, "asyncpg": asyncpg_read},
            "guarded status update": {"orm": orm_update, "prepared": prepared_update, "asyncpg": asyncpg_update},
        }
        rows = []
        for name, ways in statements.items():
            best: dict[str, float] = {}
            for round_no in range(sizes.rounds):
                order = list(ways)
                first = round_no % len(order)
                for way in order[first:] + order[:first]:  # rotate who goes first
                    cost = await _cpu_per_statement(ways[way], numbers, sizes.statements)
                    best[way] = min(best.get(way, cost), cost)
            note(f"{name}: " + ", ".join(f"{way} {us:.0f} µs" for way, us in best.items()))
            rows.append(
                {
                    "statement": name,
                    "sql": read_sql if name.startswith("order read") else update_sql,
                    **{f"{way}_us_cpu": round(us, 1) for way, us in best.items()},
                    "orm_vs_asyncpg": round(best["orm"] / best["asyncpg"], 2),
                    "building_share": round((best["orm"] - best["prepared"]) / best["orm"], 3),
                }
            )
        return {
            "rows": rows, "orders": sizes.orders, "statements_per_round": sizes.statements, "rounds": sizes.rounds,
            "postgres": await raw.fetchval("SHOW server_version"),
        }  # fmt: skip
    finally:
        await raw.close()
        await db.close_db()


async def _cpu_per_statement(statement, numbers: list[str], count: int) -> float:
    for number in numbers[:20]:  # warm: statement caches, pool
        await statement(number)
    started = time.process_time()
    for i in range(count):
        await statement(numbers[i % len(numbers)])
    return (time.process_time() - started) * 1e6 / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the benchmark works")
    parser.add_argument(
        "--database-url", default=os.environ.get("EHC_BENCH_ORM_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ehc_bench_orm")
    )
    args = parser.parse_args(argv)
    report = report_head(args.quick)
    try:
        report["figures"] = uvloop.run(run(QUICK if args.quick else FULL, args.database_url))
    except BenchFailure as exc:
        return report_failure(exc)
    return print_report(report)


if __name__ == "__main__":
    sys.exit(main())
