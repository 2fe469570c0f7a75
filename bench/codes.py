"""Dynamic QR codes: issue+verify in process, and verify over HTTP, each against a baseline.

    .venv/bin/python bench/codes.py            # full run, the figures of BENCHMARKS.md
    .venv/bin/python bench/codes.py --quick    # CI: proves the benchmark still works (< 1 min)

Prints one JSON object on stdout; progress goes to stderr.

in_process — operations per second of one dynamic code issued and verified, no Redis or
database: ``issue_dynamic(...).format()`` + ``parse_code_text`` + ``open_valid`` + the
expiry check ("ours", on the codec the platform runs: the compiled hot path of
cardcore/_codec.c where `make install` built it, else the pure-Python one; ``codec`` says
which), against

- the same operations written with gmssl (``CryptSM4``, ``sm3_hash``): goal ours ≥ 20×;
- the bare primitives of one issue+verify — SM3 of 72 bytes, SM4 of one block, SM4⁻¹,
  SM3 — through OpenSSL in a tight loop with contexts reused the cheapest way available,
  no parsing, no bookkeeping ("limit"): goal ours ≥ 50 % of it;
- for context, the "floor": the same operations inline, for the plain dynamic form only,
  with none of the codec's checks and no function or object between the primitives —
  what pure Python costs around them at the least (``floor_vs_limit``, ``ours_vs_floor``).

The four run in interleaved rounds; each figure is the best round (noise only slows a
round down), the medians are reported next to them.

http — ``POST /inst/v1/codes/verify`` served by ``python -m openplatform serve
--workers 2`` on PostgreSQL + Redis, driven by wrk (one thread) replaying pre-signed
requests, each with its own nonce and a fresh dynamic code of one of the registered
cards; against ``bench/plain_app.py``, a bare Sanic JSON route on the same number of
workers, driven the same way in the same run. Each round drives both at every level of
connections (16, 64, 128): an endpoint's throughput is its best rate at any level, and the
goal (≥ 30 %) is verify's throughput over the bare route's; ``by_connections`` has both,
their ratio, latencies and CPU per request at each level. Any verify answer
other than 200, a socket error, or a run that used up its request pool fails the
benchmark (exit status 1). Each round also reports the CPU one request cost the server,
PostgreSQL, Redis, wrk and this process (``cpu_ms``, from /proc and wrk's rusage);
``cpu_ratio`` is the bare route's total over a verification's, the throughput ratio of a
machine doing nothing else, steadier than the measured one on a shared machine.

Needs: PostgreSQL (the database named in --database-url is dropped and created afresh),
Redis (only the --redis-url database is flushed; default db 15) and wrk (Debian package
``wrk``). Without wrk, --quick reports the HTTP part as skipped; the full run refuses.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import json
import math
import os
import random
import re
import secrets
import shutil
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from gmssl import sm3 as gmssl_sm3  # noqa: E402
from gmssl import sm4 as gmssl_sm4  # noqa: E402

from bench.harness import (  # noqa: E402
    BENCH_DIR,
    PLAIN_PATH,
    BenchFailure,
    CpuMeter,
    Processes,
    figures,
    flush_redis_db,
    note,
    prepare_platform,
    print_report,
    raw_request,
    report_failure,
    report_head,
    require_clean,
    run_wrk,
    wrk_version,
)
from cardcore import crypto  # noqa: E402
from cardcore.codes import (  # noqa: E402
    _PLAIN_DYNAMIC,
    codec,
    derive_vuid,
    issue_dynamic,
    new_empi_id,
    open_valid,
    parse_code_text,
)
from cardcore.keyvault import KeyVault  # noqa: E402

LUA_SCRIPT = BENCH_DIR / "verify.lua"
VERIFY_PATH = "/inst/v1/codes/verify"
WORKERS = 2
CODE_TTL_S = 600
SIGNATURE_WINDOW_S = 300

GOALS = {"ours_vs_gmssl": 20.0, "ours_vs_limit": 0.5, "http_ratio": 0.3}


@dataclass(frozen=True)
class Sizes:
    inproc_rounds: int
    inproc_batch_s: float
    cards: int
    warmup_s: int
    duration_s: int
    http_rounds: int
    # wrk's connections, one level after the other in every round: throughput is what each
    # endpoint reaches at its best level, and every level is reported.
    connection_levels: tuple[int, ...]
    wrk_threads: int = 1


FULL = Sizes(
    inproc_rounds=9, inproc_batch_s=0.25, cards=200, warmup_s=3, duration_s=10, http_rounds=2, connection_levels=(16, 64, 128)
)
QUICK = Sizes(inproc_rounds=3, inproc_batch_s=0.05, cards=40, warmup_s=1, duration_s=3, http_rounds=1, connection_levels=(16, 64))


# --- in process ----------------------------------------------------------------------------


def ours_loop(vault: KeyVault, vuids: list[str], expires_at_s: int):
    """Issue and verify with the platform's own functions, as the server calls them."""
    issue, parse, unseal, now = issue_dynamic, parse_code_text, open_valid, time.time
    mask = len(vuids) - 1

    def run(n: int) -> None:
        for i in range(n):
            vuid = vuids[i & mask]
            text = issue(vault, vuid, expires_at_s).format()
            code = parse(text)
            if now() > unseal(vault, code.vuid, code.valid).expires_at_s:
                raise BenchFailure("a fresh code reads as expired")

    return run


_VUID_RE = re.compile(r"[0-9A-F]{64}")
_VALID_RE = re.compile(r"[0-9A-F]{32}")
_HEAD = struct.Struct(">II")


class GmsslCodes:
    """The same operations written with gmssl: seal, format, parse and open one VALID.

    Keys are scheduled once (one cipher object per direction); padding is off, so
    ``crypt_ecb`` is exactly one SM4 block.
    """

    def __init__(self, protection_key: bytes) -> None:
        self._enc = gmssl_sm4.CryptSM4(gmssl_sm4.SM4_ENCRYPT, padding_mode=None)
        self._enc.set_key(protection_key, gmssl_sm4.SM4_ENCRYPT)
        self._dec = gmssl_sm4.CryptSM4(gmssl_sm4.SM4_DECRYPT, padding_mode=None)
        self._dec.set_key(protection_key, gmssl_sm4.SM4_DECRYPT)

    @staticmethod
    def _tag(vuid: str, head: bytes) -> bytes:
        return bytes.fromhex(gmssl_sm3.sm3_hash(list(vuid.encode("ascii") + head)))[:8]

    def seal(self, vuid: str, expires_at_s: int) -> str:
        if not _VUID_RE.fullmatch(vuid):
            raise ValueError("bad VUID")
        head = expires_at_s.to_bytes(4, "big") + secrets.token_bytes(4)
        return self._enc.crypt_ecb(head + self._tag(vuid, head)).hex().upper()

    @staticmethod
    def format(vuid: str, valid: str) -> str:
        return f"{vuid}:0:{valid}"

    @staticmethod
    def parse(text: str) -> tuple[str, str]:
        fields = text.strip(" \t\r\n").split(":")
        if len(fields) != 3 or fields[1] != "0" or not _VUID_RE.fullmatch(fields[0]) or not _VALID_RE.fullmatch(fields[2]):
            raise ValueError("not a dynamic code")
        return fields[0], fields[2]

    def open(self, vuid: str, valid: str) -> tuple[int, int]:
        if not _VALID_RE.fullmatch(valid):
            raise ValueError("bad VALID")
        block = self._dec.crypt_ecb(bytes.fromhex(valid))
        head = block[:8]
        if not hmac.compare_digest(block[8:], self._tag(vuid, head)):
            raise ValueError("VALID does not verify")
        return _HEAD.unpack(head)


def gmssl_loop(codes: GmsslCodes, vuids: list[str], expires_at_s: int):
    seal, fmt, parse, unseal, now = codes.seal, codes.format, codes.parse, codes.open, time.time
    mask = len(vuids) - 1

    def run(n: int) -> None:
        for i in range(n):
            vuid = vuids[i & mask]
            text = fmt(vuid, seal(vuid, expires_at_s))
            vuid_read, valid = parse(text)
            if now() > unseal(vuid_read, valid)[0]:
                raise BenchFailure("a fresh code reads as expired")

    return run


def limit_loops(protection_key: bytes) -> dict:
    """The bare SM3/SM4 calls of one issue+verify, one loop per way of calling SM3.

    SM4 has one OpenSSL entry from Python (``cryptography``): ECB contexts built once and
    ``update`` bound once. SM3 has three; the cheapest on this machine is the limit.
    """
    import hashlib

    sm4 = crypto.SM4Block(protection_key)
    enc, dec = sm4.encrypt_block, sm4.decrypt_block
    message, block = bytes(range(72)), bytes(range(16))
    loops = {}

    if "sm3" in hashlib.algorithms_available:
        fresh = hashlib.new("sm3").copy

        def hashlib_copy(n: int) -> None:
            for _ in range(n):
                h = fresh()
                h.update(message)
                h.digest()
                dec(enc(block))
                h = fresh()
                h.update(message)
                h.digest()

        new = hashlib.new

        def hashlib_new(n: int) -> None:
            for _ in range(n):
                new("sm3", message).digest()
                dec(enc(block))
                new("sm3", message).digest()

        loops["hashlib: copy of a fresh sm3 context"] = hashlib_copy
        loops["hashlib: new('sm3', data)"] = hashlib_new

    fresh_c = hashes.Hash(hashes.SM3()).copy

    def cryptography_copy(n: int) -> None:
        for _ in range(n):
            h = fresh_c()
            h.update(message)
            h.finalize()
            dec(enc(block))
            h = fresh_c()
            h.update(message)
            h.finalize()

    loops["cryptography: copy of a fresh Hash(SM3)"] = cryptography_copy
    return loops


def floor_loop(protection_key: bytes, vuids: list[str], expires_at_s: int):
    """The same issue+verify written inline for the one form every scan has, with none of the
    checks the codec promises (VUID and VALID shapes, key versions), no function between
    the primitives and no objects: what CPython itself costs around them (the "floor").

    Context for the goal against the limit, not a competitor: the platform cannot drop
    those checks. The primitives are called exactly as ours calls them.
    """
    import binascii

    block = crypto.SM4Block(protection_key)
    enc, dec = block.encrypt_block, block.decrypt_block
    fresh = crypto.new_sm3  # the SM3 context ours uses (hashlib's, else cryptography's)
    pack, unpack = _HEAD.pack, _HEAD.unpack
    plain = _PLAIN_DYNAMIC.fullmatch  # the pattern ours parses the plain form with
    unhex, now, compare = binascii.a2b_hex, time.time, hmac.compare_digest
    mask = len(vuids) - 1
    serials = iter(range(1 << 32))

    def run(n: int) -> None:
        for i in range(n):
            vuid = vuids[i & mask]
            head = pack(expires_at_s, next(serials))
            tag = fresh()
            tag.update(vuid.encode() + head)
            text = f"{vuid}:0:{enc(head + tag.digest()[:8]).hex().upper()}"
            match = plain(text)
            block = dec(unhex(match[2]))
            head = block[:8]
            tag = fresh()
            tag.update(match[1].encode() + head)
            if not compare(block[8:], tag.digest()[:8]) or now() > unpack(head)[0]:
                raise BenchFailure("a fresh code does not verify")

    return run


def _timed(run, n: int) -> float:
    """Seconds for n operations, collector off (as timeit does)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        run(n)
        return time.perf_counter() - started
    finally:
        if was_enabled:
            gc.enable()


def _batch_size(run, target_s: float) -> int:
    n = 1
    while True:
        elapsed = _timed(run, n)
        if elapsed >= 0.02 or n >= 1 << 24:
            return max(1, int(n * target_s / max(elapsed, 1e-9)))
        n *= 4


def check_same_operations(vault: KeyVault, codes: GmsslCodes, vuid: str, expires_at_s: int) -> None:
    """The gmssl version and ours produce VALIDs the other one opens: the same operations."""
    ours_text = issue_dynamic(vault, vuid, expires_at_s).format()
    if codes.open(*codes.parse(ours_text))[0] != expires_at_s:
        raise BenchFailure("gmssl version cannot open our VALID")
    gm_text = codes.format(vuid, codes.seal(vuid, expires_at_s))
    code = parse_code_text(gm_text)
    if open_valid(vault, code.vuid, code.valid).expires_at_s != expires_at_s:
        raise BenchFailure("our open_valid cannot open the gmssl version's VALID")


def bench_in_process(sizes: Sizes, work_dir: Path) -> dict:
    vault = KeyVault.generate(work_dir / "inproc-keys.json", dev=True)
    protection_key = bytes.fromhex(
        json.loads((work_dir / "inproc-keys.json").read_text())["keys"]["protection"][0]["key"]
    )
    rng = random.Random(7)
    vuids = [derive_vuid(vault, new_empi_id(), "01", f"{rng.randrange(10**17):017d}X") for _ in range(1024)]
    expires_at_s = int(time.time()) + CODE_TTL_S
    codes = GmsslCodes(protection_key)
    check_same_operations(vault, codes, vuids[0], expires_at_s)

    limits = limit_loops(protection_key)
    # Choose the cheapest SM3 call for the limit (best of a few short batches each).
    limit_costs = {}
    for name, run in limits.items():
        n = _batch_size(run, 0.05)
        limit_costs[name] = min(_timed(run, n) / n for _ in range(3))
    limit_name = min(limit_costs, key=limit_costs.get)

    variants = {
        "ours": ours_loop(vault, vuids, expires_at_s),
        "gmssl": gmssl_loop(codes, vuids, expires_at_s),
        "limit": limits[limit_name],
        "floor": floor_loop(protection_key, vuids, expires_at_s),
    }
    batch = {name: _batch_size(run, sizes.inproc_batch_s) for name, run in variants.items()}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for round_no in range(sizes.inproc_rounds):
        first = round_no % len(order)
        for name in order[first:] + order[:first]:  # rotate who goes first
            rates[name].append(batch[name] / _timed(variants[name], batch[name]))
    best = {name: max(values) for name, values in rates.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "ours_ops_s": round(best["ours"]),
        "gmssl_ops_s": round(best["gmssl"]),
        "limit_ops_s": round(best["limit"]),
        "ours_vs_gmssl": round(best["ours"] / best["gmssl"], 1),
        "ours_vs_limit": round(best["ours"] / best["limit"], 3),
        "ours_us_per_op": round(1e6 / best["ours"], 2),
        "limit_us_per_op": round(1e6 / best["limit"], 2),
        "floor_ops_s": round(best["floor"]),
        "floor_vs_limit": round(best["floor"] / best["limit"], 3),
        "ours_vs_floor": round(best["ours"] / best["floor"], 3),
        "median": {
            "ours_ops_s": round(median["ours"]),
            "gmssl_ops_s": round(median["gmssl"]),
            "limit_ops_s": round(median["limit"]),
            "ours_vs_gmssl": round(median["ours"] / median["gmssl"], 1),
            "ours_vs_limit": round(median["ours"] / median["limit"], 3),
            "floor_vs_limit": round(median["floor"] / median["limit"], 3),
        },
        "limit_sm3": limit_name,
        "limit_sm3_candidates_us": {name: round(cost * 1e6, 2) for name, cost in limit_costs.items()},
        "codec": codec(),
        "rounds": sizes.inproc_rounds,
        "ops_per_round": batch,
    }


# --- HTTP ---------------------------------------------------------------------------------


async def count_verify_events(database_url: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval("SELECT count(*) FROM code_event WHERE action = 'verify' AND result = 'ok'")
    finally:
        await connection.close()


def wrk(url: str, sizes, duration_s: int, script_args: list[str], connections: int) -> dict:
    """verify.lua under wrk with a benchmark's ``wrk_threads`` at ``connections``; the run's
    dict notes the connections."""
    run = run_wrk(url, LUA_SCRIPT, connections=connections, duration_s=duration_s, script_args=script_args, threads=sizes.wrk_threads)
    run["connections"] = connections
    return run


class RequestPool:
    """Pre-signed verify requests, each with a fresh dynamic code and its own nonce."""

    def __init__(self, vault: KeyVault, vuids: list[str], client_id: str, secret: str, host: str) -> None:
        self._vault = vault
        self._vuids = vuids
        self._client_id = client_id
        self._secret = secret
        self._host = host
        self._rng = random.Random()
        self._issued: set[str] = set()

    def write(self, path: Path, count: int) -> float:
        """Write ``count`` requests to ``path``; returns the signing time (unix seconds) of the first."""
        from openplatform.sdk import build_request

        expires_at_s = int(time.time()) + CODE_TTL_S
        signed_at = time.time()
        with open(path, "wb") as out:
            for _ in range(count):
                vuid = self._rng.choice(self._vuids)
                code = issue_dynamic(self._vault, vuid, expires_at_s)
                if code.valid in self._issued:  # a repeated serial would be refused as CODE_USED
                    continue
                self._issued.add(code.valid)
                text = code.format()
                headers, body = build_request(
                    self._client_id, self._secret, "POST", VERIFY_PATH, {"qr_code_text": text, "scene": "consultation"}
                )
                raw = raw_request("POST", VERIFY_PATH, self._host, headers, body)
                out.write(b"%d\n" % len(raw))
                out.write(raw)
        return signed_at


def bench_http(sizes: Sizes, work_dir: Path, database_url: str, redis_url: str, versions: dict) -> dict:
    from openplatform.sdk import PlatformClient
    from tests.factories import resident

    platform = prepare_platform(
        work_dir, database_url, redis_url, versions,
        EHC_DYNAMIC_CODE_TTL_S=str(CODE_TTL_S), EHC_SIGNATURE_WINDOW_S=str(SIGNATURE_WINDOW_S),
    )  # fmt: skip
    terminal = platform.demo["terminal"]

    processes = Processes(work_dir)
    try:
        server = platform.serve(processes, WORKERS)
        plain_url, plain = platform.serve_plain(processes, WORKERS)
        base_url = platform.base_url

        note(f"registering {sizes.cards} cards")
        rng = random.Random(20261122)
        vuids: list[str] = []
        with PlatformClient(base_url, terminal["client_id"], terminal["secret"]) as client:
            for _ in range(sizes.cards):
                response = client.post("/inst/v1/cards", resident(rng))
                if response.status_code not in (200, 201):
                    raise BenchFailure(f"card registration answered {response.status_code}: {response.text[:300]}")
                vuids.append(response.json()["health_card_id"])
        vuids = sorted(set(vuids))
        vault = KeyVault.load(platform.var_dir / "dev-keys.json")
        pool = RequestPool(vault, vuids, terminal["client_id"], terminal["secret"], urlsplit(base_url).netloc)
        pool_path = work_dir / "requests.bin"

        def verify_run(duration_s: int, count: int, connections: int) -> dict:
            signed_at = pool.write(pool_path, count)
            if time.time() - signed_at > SIGNATURE_WINDOW_S - duration_s - 30:
                raise BenchFailure("building the request pool took too long for the signature window")
            with CpuMeter(server) as cpu:
                run = wrk(base_url, sizes, duration_s, ["pool", str(pool_path), str(sizes.wrk_threads)], connections)
            pool_path.unlink()
            run["cpu_ms"] = cpu.per_unit_ms(run["requests"])
            return run

        # Warm-up: fills the card and client caches, and measures how many requests a run
        # needs. The first complete warm-up runs on cold caches, so the rate is taken from
        # the second one.
        estimate = None
        warm_count = 4000 * sizes.warmup_s
        warm_ok = complete = 0
        for _ in range(6):
            note(f"warm-up: {sizes.warmup_s} s with up to {warm_count} requests")
            warm = verify_run(sizes.warmup_s, warm_count, max(sizes.connection_levels))
            if warm["not_ok"] or sum(warm["socket_errors"].values()):
                require_clean(warm, "warm-up")
            warm_ok += warm["ok"]
            if warm["exhausted"]:
                warm_count *= 4
                continue
            complete += 1
            if complete == 2:
                estimate = warm["rps"]
                break
        if estimate is None:
            raise BenchFailure("the warm-up used up every request pool it was given")
        count = math.ceil(3 * estimate * sizes.duration_s) + 1000

        verify_runs, plain_runs = [], []
        for round_no in range(sizes.http_rounds):
            for connections in sizes.connection_levels:
                step = f"round {round_no + 1}/{sizes.http_rounds}, {connections} connections"
                note(f"{step}: plain {sizes.duration_s} s")
                with CpuMeter(plain) as cpu:
                    plain_run = wrk(plain_url, sizes, sizes.duration_s, ["get", PLAIN_PATH], connections)
                require_clean(plain_run, "plain endpoint")
                plain_run["cpu_ms"] = cpu.per_unit_ms(plain_run["requests"])
                plain_runs.append(plain_run)
                # The bare endpoint just measured bounds what verify can reach: on a busy
                # machine the warm-up's rate says little, and a pool that runs out fails the run.
                count = max(count, math.ceil(1.2 * plain_run["rps"] * sizes.duration_s) + 1000)
                note(f"{step}: verify {sizes.duration_s} s, pool of {count} requests")
                verify = verify_run(sizes.duration_s, count, connections)
                require_clean(verify, "verify")
                verify_runs.append(verify)
                count = max(count, math.ceil(3 * verify["rps"] * sizes.duration_s) + 1000)
        if server.poll() is not None or plain.poll() is not None:
            raise BenchFailure("a server died during the run")
    finally:
        processes.stop_all()

    ok_events = asyncio.run(count_verify_events(database_url))
    answered_ok = warm_ok + sum(run["ok"] for run in verify_runs)
    if ok_events < answered_ok:
        raise BenchFailure(f"{answered_ok} verifications answered 200 but only {ok_events} were recorded")
    best_verify, best_plain = _fastest(verify_runs), _fastest(plain_runs)
    return {
        **_comparison(best_verify, best_plain),
        "verify_connections": best_verify["connections"],
        "plain_connections": best_plain["connections"],
        "non_2xx": sum(run["not_ok"] for run in verify_runs),
        "requests": sum(run["requests"] for run in verify_runs),
        "verify_events_recorded": ok_events,
        "workers": WORKERS,
        "wrk": f"-t{sizes.wrk_threads} -c{'/'.join(map(str, sizes.connection_levels))} -d{sizes.duration_s}s",
        "cards": len(vuids),
        "by_connections": [
            {
                "connections": level,
                **_comparison(
                    _fastest([run for run in verify_runs if run["connections"] == level]),
                    _fastest([run for run in plain_runs if run["connections"] == level]),
                ),
            }
            for level in sizes.connection_levels
        ],
        "rounds": [
            {
                "connections": p["connections"],
                "plain": {**figures(p), "cpu_ms": p["cpu_ms"]},
                "verify": {**figures(v), "cpu_ms": v["cpu_ms"]},
            }
            for p, v in zip(plain_runs, verify_runs)
        ],
    }


def _fastest(runs: list[dict]) -> dict:
    return max(runs, key=lambda run: run["rps"])


def _comparison(verify: dict, plain: dict) -> dict:
    """Verify against the bare route: rates, their ratio, latencies and CPU per request."""
    return {
        "verify_rps": round(verify["rps"]),
        "plain_rps": round(plain["rps"]),
        "ratio": round(verify["rps"] / plain["rps"], 3),
        "verify_p50_ms": round(verify["latency_us"]["p50"] / 1000, 2),
        "verify_p99_ms": round(verify["latency_us"]["p99"] / 1000, 2),
        "plain_p50_ms": round(plain["latency_us"]["p50"] / 1000, 2),
        "plain_p99_ms": round(plain["latency_us"]["p99"] / 1000, 2),
        "cpu_ms_per_request": {"verify": verify["cpu_ms"], "plain": plain["cpu_ms"]},
        "cpu_ratio": cpu_ratio(verify["cpu_ms"], plain["cpu_ms"]),
    }


def cpu_ratio(verify_ms: dict | None, plain_ms: dict | None) -> float | None:
    """The bare route's CPU per request over a verification's, all processes counted: what
    the throughput ratio would be on a machine whose two cores did nothing else."""
    if not verify_ms or not plain_ms:
        return None
    return round(sum(plain_ms.values()) / sum(verify_ms.values()), 3)


# --- machine and main -------------------------------------------------------------------


def goals(in_process: dict, http: dict) -> dict:
    result = {
        "ours_vs_gmssl >= 20": in_process["ours_vs_gmssl"] >= GOALS["ours_vs_gmssl"],
        "ours_vs_limit >= 0.5": in_process["ours_vs_limit"] >= GOALS["ours_vs_limit"],
    }
    if "ratio" in http:
        result["http ratio >= 0.3"] = http["ratio"] >= GOALS["http_ratio"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dynamic-code issue+verify benchmark (prints JSON).")
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs: proves the benchmark works")
    parser.add_argument("--database-url", default=os.environ.get("EHC_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ehc_bench"))
    parser.add_argument("--redis-url", default=os.environ.get("EHC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--skip-http", action="store_true", help="in-process part only")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL

    have_wrk = shutil.which("wrk") is not None
    if not have_wrk and not args.quick and not args.skip_http:
        print("bench/codes.py: wrk is not installed (Debian: apt-get install wrk); the full run needs it "
              "for the HTTP figures. Use --quick to skip the HTTP part.", file=sys.stderr)  # fmt: skip
        return 2

    report = report_head(args.quick)
    work_dir = Path(tempfile.mkdtemp(prefix="ehc-bench-codes-"))
    try:
        note("in-process issue+verify: ours, gmssl, limit")
        report["in_process"] = bench_in_process(sizes, work_dir)
        if args.skip_http:
            report["http"] = {"skipped": "--skip-http"}
        elif not have_wrk:
            report["http"] = {"skipped": "wrk not installed"}
        else:
            report["machine"]["wrk"] = wrk_version()
            report["http"] = bench_http(sizes, work_dir, args.database_url, args.redis_url, report["machine"])
    except BenchFailure as exc:
        return report_failure(exc)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        if have_wrk and not args.skip_http:
            try:
                flush_redis_db(args.redis_url)
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real outcome
                note(f"could not flush {args.redis_url}: {exc}")
    report["goals"] = goals(report["in_process"], report["http"])
    return print_report(report)


if __name__ == "__main__":
    sys.exit(main())
