"""The benchmarks still work: each runs once in its quick mode and proves what it claims
(not a timed test: their figures live in BENCHMARKS.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cardcore import codes
from cashier import notifier
from mocks.scanner import PRESETS
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL
from tests.servers import isolated_storage

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_scanner_reads_every_preset_back_exactly():
    result = run_bench("scanner.py")
    assert [row["preset"] for row in result["presets"]] == list(PRESETS)
    assert all(row["decoded"] == row["attempts"] > 0 for row in result["presets"]), result["presets"]
    assert result["total"]["mismatches"] == 0 and result["baseline"]["mismatches"] == 0
    assert result["passed"] is True


def test_outbound_http_bench_measures_every_client_at_every_concurrency():
    result = run_bench("outbound_http.py")
    rows = result["figures"]["rows"]
    assert [row["concurrent_senders"] for row in rows] == [1, 8, notifier.CONCURRENT_DELIVERIES]
    for row in rows:
        figures = [value for name, value in row.items() if name.endswith("us_cpu_per_request")]
        assert len(figures) == 3 and all(value > 0 for value in figures), row
    gateway = result["figures"]["gateway_calls"]
    assert gateway["requests.Session us_cpu_per_call"] > 0 and gateway["GatewaySession (urllib3) us_cpu_per_call"] > 0


needs_postgres = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="the ORM benchmark runs on PostgreSQL: set EHC_TEST_DATABASE_URL"
)
needs_postgres_and_redis = pytest.mark.skipif(
    not (TEST_DATABASE_URL and TEST_REDIS_URL),
    reason="the HTTP benchmarks run on PostgreSQL + Redis: set EHC_TEST_DATABASE_URL and EHC_TEST_REDIS_URL",
)
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (Debian: apt-get install wrk)")


@needs_postgres_and_redis
@needs_wrk
def test_scan_load_refuses_every_replay_and_no_fresh_code(tmp_path):
    with isolated_storage(tmp_path) as (database_url, redis_url):
        result = run_bench("scan_load.py", "--database-url", database_url, "--redis-url", redis_url)
    assert result["passed"] is True, result["problems"]
    totals = result["totals"]
    assert totals["valid_codes_refused"] == 0 and totals["replays_accepted"] == 0
    assert totals["fresh_codes_verified"] > 0 and totals["replays_refused"] > 0
    assert result["platform_record"]["verify_ok"] >= totals["fresh_codes_verified"]
    sample = result["decode_sample"]
    assert sample["decoded_exactly"] == sample["codes"] > 0
    assert result["load"]["rps"] > 0 and result["baseline"]["rps"] > 0


@needs_postgres_and_redis
@needs_wrk
def test_codes_benchmark_compares_like_with_like(tmp_path):
    with isolated_storage(tmp_path) as (database_url, redis_url):
        result = run_bench("codes.py", "--database-url", database_url, "--redis-url", redis_url)
    in_process = result["in_process"]
    assert in_process["ours_ops_s"] > 0 and in_process["gmssl_ops_s"] > 0 and in_process["limit_ops_s"] > 0
    assert in_process["floor_ops_s"] > 0
    assert in_process["codec"] == codes.codec()
    assert in_process["floor_vs_limit"] == round(in_process["floor_ops_s"] / in_process["limit_ops_s"], 3)
    http = result["http"]
    # Every verification answered ok and the platform recorded each one.
    assert http["verify_rps"] > 0 and http["plain_rps"] > 0 and http["non_2xx"] == 0
    assert http["verify_events_recorded"] >= http["requests"] > 0
    # What a request cost every process, from /proc and wrk's rusage.
    verify_cpu, plain_cpu = http["cpu_ms_per_request"]["verify"], http["cpu_ms_per_request"]["plain"]
    assert verify_cpu["server"] > 0 and verify_cpu["redis"] > 0 and verify_cpu["wrk"] > 0
    assert plain_cpu["server"] > 0 and plain_cpu["wrk"] > 0
    assert 0 < http["cpu_ratio"] == round(sum(plain_cpu.values()) / sum(verify_cpu.values()), 3)
    # Both endpoints are driven at every level of connections; throughput is each one's best.
    levels = http["by_connections"]
    assert [level["connections"] for level in levels] == [16, 64]
    assert http["verify_rps"] == max(level["verify_rps"] for level in levels)
    assert http["plain_rps"] == max(level["plain_rps"] for level in levels)
    assert http["verify_connections"] in (16, 64) and http["plain_connections"] in (16, 64)
    assert {level["connections"] for level in levels} == {r["connections"] for r in http["rounds"]}
    assert set(result["goals"]) == {"ours_vs_gmssl >= 20", "ours_vs_limit >= 0.5", "http ratio >= 0.3"}


@needs_postgres_and_redis
@needs_wrk
def test_cashier_benchmark_delivers_every_paid_order_once(tmp_path):
    with isolated_storage(tmp_path) as (database_url, redis_url):
        result = run_bench("cashier.py", "--database-url", database_url, "--redis-url", redis_url)
    end_to_end = result["end_to_end"]
    # delivery_figures fails the run on an unpaid order or a duplicate notification.
    assert end_to_end["orders"] == 150 and end_to_end["orders_per_s"] > 0
    cpu = end_to_end["cpu_ms_per_order"]  # from /proc: the platform runs on Linux here
    assert set(cpu) == {"server", "postgres", "redis", "wrk", "driver"}
    assert cpu["server"] > 0 and cpu["postgres"] > 0 and cpu["redis"] > 0 and cpu["driver"] > 0
    assert cpu["wrk"] == 0  # wrk runs only in the create-order part
    assert result["create_order"]["create"]["non_2xx"] == 0 and result["create_order"]["create"]["rps"] > 0


@needs_postgres
def test_orm_benchmark_sends_each_statement_three_ways(tmp_path):
    with isolated_storage(tmp_path) as (database_url, _):
        # The run itself fails if a way reads another order or its update changes no row.
        result = run_bench("orm_statements.py", "--database-url", database_url)
    rows = result["figures"]["rows"]
    assert [row["statement"] for row in rows] == ["order read by number", "guarded status update"]
    assert rows[0]["sql"].startswith("SELECT ") and rows[1]["sql"].startswith('UPDATE "cashier_order" SET ')
    for row in rows:
        assert row["orm_us_cpu"] > 0 and row["prepared_us_cpu"] > 0 and row["asyncpg_us_cpu"] > 0
        assert row["orm_vs_asyncpg"] > 0 and row["building_share"] < 1
