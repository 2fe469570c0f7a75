"""Scan load: many reader terminals verify fresh dynamic codes at once, screenshots replayed among them.

    .venv/bin/python bench/scan_load.py            # the figures of BENCHMARKS.md
    .venv/bin/python bench/scan_load.py --quick    # CI: proves the scenario still works (< 1 min)

``python -m openplatform serve --workers 2`` on PostgreSQL + Redis. The demo hospital
registers ``terminals`` reader terminals (an operator approves each) and ``cards`` cards.
Then, per run, a pool of requests is built before the clock starts, so the load generator
costs the two cores almost nothing while it runs:

- fresh dynamic codes of those cards, sealed with the server's own key vault by the
  function issuance uses (``cardcore.codes.seal_valid``), valid for ``CODE_TTL_S``;
- a sample of them drawn on a phone screen by each phone preset of the scanner simulator
  and decoded with zxing-cpp, which must read back every issued text exactly; the decoded
  texts are what those requests carry (scanning is not on the hot path);
- replays, ``replay_share`` of the requests: a code already verified, shown again at
  another terminal (a screenshot), a few hundred requests after its original; the wrk
  script holds a replay back until its original's answer has come back (one wrk thread,
  so it sees every answer);
- every request signed by its terminal (HMAC-SM3, its own nonce) and tagged with an
  ``X-Request-Id`` the platform echoes, so each answer is matched to its request.

wrk (one thread, ``connections`` connections, ``duration_s`` seconds) sends them; its Lua
script (bench/scan_load.lua) checks every answer: a fresh code must get 200 naming its
card as a dynamic code, a replay 409 CODE_USED. Anything else, a socket error, or a pool
that runs out fails the benchmark (exit status 1): zero valid codes refused and zero
replays accepted are proved per request, and checked again against the platform's own
record of verifications (its code statistics). The baseline is the same two workers answering
``GET /healthz`` under the same wrk settings in the same run; ``ratio`` = verify
throughput / baseline throughput.

Needs PostgreSQL (the --database-url database is dropped and created afresh), Redis (only
the --redis-url database is flushed) and wrk (Debian package ``wrk``). Prints one JSON
object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    BenchFailure,
    Processes,
    flush_redis_db,
    latency_figures,
    note,
    prepare_platform,
    raw_request,
    report_head,
    run_wrk,
    wrk_version,
)
from cardcore.codes import CodeText, seal_valid  # noqa: E402
from cardcore.keyvault import KeyVault  # noqa: E402
from mocks.scanner import PRESETS, Credentials, Scanner, camera_view, code_picture, decode  # noqa: E402
from openplatform.sdk import PlatformClient, build_request  # noqa: E402

LUA_SCRIPT = Path(__file__).resolve().parent / "scan_load.lua"
VERIFY_PATH = "/inst/v1/codes/verify"
BASELINE_PATH = "/healthz"
WORKERS = 2
# Validity of the pool's codes (EHC_DYNAMIC_CODE_TTL_S of the server too): twice the default 60 s,
# so a pool built on a busy machine is not partly expired before its run ends.
CODE_TTL_S = 120
RUN_MARGIN_S = 15  # wrk reading the pool, answers still in flight at the end
SIGNATURE_WINDOW_S = 300
PHONE_PRESETS = [name for name, preset in PRESETS.items() if preset.medium == "phone"]
SCENES = ("consultation", "pharmacy", "examination", "registration", "report")
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/ehc_bench_scan"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
# Spent codes live in Redis: a database emptied by someone else mid-run would let replays
# through. A key of our own, planted after the flush and looked for after every run, tells.
SENTINEL_KEY = "bench:scan_load:sentinel"


@dataclass(frozen=True)
class Sizes:
    terminals: int
    cards: int
    connections: int
    warmup_s: int
    duration_s: int
    rounds: int
    decode_sample: int  # codes per pool drawn and decoded before the run
    replay_share: float = 0.1
    replay_spread: int = 400  # a replay comes up to this many requests after its original


FULL = Sizes(terminals=64, cards=200, connections=32, warmup_s=3, duration_s=20, rounds=3, decode_sample=42)
QUICK = Sizes(terminals=8, cards=20, connections=8, warmup_s=1, duration_s=2, rounds=1, decode_sample=6)


# --- the request pool -------------------------------------------------------------------------


@dataclass
class Pool:
    """One run's requests, written for bench/scan_load.lua, and what went into them."""

    path: Path
    fresh: int
    replays: int
    sealed_at: float
    signed_at: float
    decoded: list[dict]


class PoolBuilder:
    """Fresh codes of the registered cards, replays of them, signed by the terminals in turn."""

    def __init__(
        self, vault: KeyVault, vuids: list[str], terminals: list[Credentials], host: str, sizes: Sizes
    ) -> None:
        self._vault, self._vuids, self._terminals = vault, vuids, terminals
        self._host, self._sizes = host, sizes
        self._rng = random.Random()
        self._issued: set[str] = set()

    def _fresh_codes(self, count: int) -> list[tuple[str, str]]:
        """(vuid, text) of ``count`` codes never issued before in this benchmark."""
        expires_at_s = int(time.time()) + CODE_TTL_S
        codes = []
        while len(codes) < count:
            vuid = self._rng.choice(self._vuids)
            text = CodeText.dynamic(vuid, seal_valid(self._vault, vuid, expires_at_s)).format()
            if text not in self._issued:  # a repeated serial would rightly be refused as used
                self._issued.add(text)
                codes.append((vuid, text))
        return codes

    def _scanned(self, codes: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[dict]]:
        """A sample read by the scanner simulator: the texts its decoder returned, and how it went."""
        readings = []
        sample = min(self._sizes.decode_sample, len(codes))
        for index in range(sample):
            vuid, issued = codes[index]
            preset = PRESETS[PHONE_PRESETS[index % len(PHONE_PRESETS)]]
            seed = self._rng.randrange(2**31)
            reading = decode(camera_view(code_picture(issued, "phone"), preset, seed))
            readings.append({"preset": preset.name, "seed": seed, "decoded": reading.decoded,
                             "exact": reading.text == issued, "decode_ms": reading.decode_ms})  # fmt: skip
            if reading.text is not None:
                codes[index] = (vuid, reading.text)
        return codes, readings

    def _order(self, fresh: list[tuple[str, str]]) -> list[tuple[str, str, str, int | None]]:
        """(kind, vuid, text, original's position) in sending order, replays a little after originals.

        bench/scan_load.lua holds a replay back until its original's answer has come back.
        """
        sizes = self._sizes
        chance = sizes.replay_share / (1 - sizes.replay_share)  # replays per fresh code
        due: list[tuple[int, int, str, str]] = []  # (position, original's position, vuid, text)
        ordered: list[tuple[str, str, str, int | None]] = []
        fresh_iter = iter(fresh)
        while True:
            position = len(ordered)
            if due and due[0][0] <= position:
                _, original, vuid, text = heapq.heappop(due)
                ordered.append(("r", vuid, text, original))
                continue
            item = next(fresh_iter, None)
            if item is None:
                break
            ordered.append(("f", *item, None))
            if self._rng.random() < chance:
                later = position + 1 + self._rng.randrange(sizes.replay_spread)
                heapq.heappush(due, (later, position, *item))
        return ordered  # replays still due past the end are left out

    def write(self, path: Path, requests: int) -> Pool:
        sealed_at = time.time()
        fresh_count = math.ceil(requests * (1 - self._sizes.replay_share))
        fresh, readings = self._scanned(self._fresh_codes(fresh_count))
        ordered = self._order(fresh)
        signed_at = time.time()
        run_id = secrets.token_hex(3)

        def tag(kind: str, position: int) -> str:
            return f"scan-{run_id}-{kind}{position:08d}"

        with open(path, "wb") as out:
            for index, (kind, vuid, text, original) in enumerate(ordered):
                terminal = self._terminals[index % len(self._terminals)]
                body = {"qr_code_text": text, "scene": SCENES[index % len(SCENES)]}
                headers, content = build_request(*astuple(terminal), "POST", VERIFY_PATH, body)
                raw = raw_request("POST", VERIFY_PATH, self._host, {"X-Request-Id": tag(kind, index), **headers}, content)
                after = "-" if original is None else tag("f", original)
                out.write(f"{tag(kind, index)} {kind} {vuid} {after} {len(raw)}\n".encode("ascii"))
                out.write(raw)
        replays = sum(1 for kind, *_ in ordered if kind == "r")
        return Pool(path, len(ordered) - replays, replays, sealed_at, signed_at, readings)


# --- wrk ------------------------------------------------------------------------------------------


class RedisWatch:
    """Proves the platform's Redis database was not emptied by another process during a run."""

    def __init__(self, redis_url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url)
        self._url = redis_url
        self._client.set(SENTINEL_KEY, b"1")

    def check(self, what: str) -> None:
        if not self._client.exists(SENTINEL_KEY):
            raise BenchFailure(
                f"{what}: the Redis database {self._url} was emptied by another process during the run, "
                "spent codes included, so its answers prove nothing; give the benchmark a Redis database "
                "nobody else flushes (--redis-url)"
            )

    def close(self) -> None:
        self._client.close()


def wrk(url: str, sizes: Sizes, duration_s: int, script_args: list[str]) -> dict:
    return run_wrk(url, LUA_SCRIPT, connections=sizes.connections, duration_s=duration_s, script_args=script_args)


def problems_of(run: dict, what: str) -> list[str]:
    """Why a run's figures cannot stand: wrong answers, lost requests, a pool that ran dry."""
    problems = []
    if run["requests"] == 0:
        problems.append("no request completed")
    if sum(run["socket_errors"].values()):
        problems.append(f"socket errors {run['socket_errors']}")
    if run["exhausted"]:
        problems.append(f"the request pool ran out ({run['loaded']} requests); it would have sent some twice")
    wrong = {k: run[k] for k in ("fresh_bad", "replay_bad", "get_bad", "untagged", "duplicated") if run[k]}
    if wrong:
        problems.append(f"wrong answers {wrong} (first: {run['first_error']})")
    return [f"{what}: {problem}" for problem in problems]


def unanswered(run: dict) -> tuple[int, int]:
    """Fresh codes and replays sent but not answered when wrk stopped (at most one per connection)."""
    fresh = run["sent_fresh"] - run["fresh_ok"] - run["fresh_bad"]
    return fresh, run["sent_replay"] - run["replay_used"] - run["replay_bad"]


def load_figures(run: dict) -> dict:
    fresh_in_flight, replays_in_flight = unanswered(run)
    return {
        **latency_figures(run),
        "fresh": {"sent": run["sent_fresh"], "verified_200": run["fresh_ok"], "refused": run["fresh_bad"],
                  "unanswered_at_stop": fresh_in_flight},
        "replays": {"sent": run["sent_replay"], "refused_409_code_used": run["replay_used"],
                    "accepted_or_other": run["replay_bad"], "unanswered_at_stop": replays_in_flight,
                    "held_for_the_original_answer": run["held_back"]},
    }  # fmt: skip


# --- the platform ---------------------------------------------------------------------------------


def verification_counts(base_url: str, admin: Credentials) -> dict[str, int]:
    """The platform's own record of verifications by result (``GET /admin/v1/code-stats``)."""
    with PlatformClient(base_url, admin.client_id, admin.secret) as operator:
        reply = operator.get("/admin/v1/code-stats?group_by=action,result")
    if reply.status_code != 200:
        raise BenchFailure(f"code statistics answered {reply.status_code}: {reply.text[:300]}")
    return {row["result"]: row["count"] for row in reply.json()["items"] if row["action"] == "verify"}


def register_readers_and_cards(base_url: str, demo: dict, sizes: Sizes):
    """Terminals registered by the demo hospital and approved by the operator, and the cards' VUIDs."""
    from tests.factories import resident

    institution, admin = Credentials(**demo["institution"]), Credentials(**demo["admin"])
    terminals = []
    for number in range(1, sizes.terminals + 1):
        with Scanner.register(base_url, institution, admin, f"扫码终端 {number:03d}") as reader:
            terminals.append(reader.credentials)
    rng = random.Random(20261122)
    vuids = set()
    with PlatformClient(base_url, institution.client_id, institution.secret) as hospital:
        for _ in range(sizes.cards):
            reply = hospital.post("/inst/v1/cards", resident(rng))
            if reply.status_code not in (200, 201):
                raise BenchFailure(f"card registration answered {reply.status_code}: {reply.text[:300]}")
            vuids.add(reply.json()["health_card_id"])
    return terminals, sorted(vuids)


# --- the benchmark --------------------------------------------------------------------------------


def bench(sizes: Sizes, work_dir: Path, database_url: str, redis_url: str, report: dict) -> list[str]:
    report["machine"]["wrk"] = wrk_version()

    platform = prepare_platform(
        work_dir, database_url, redis_url, report["machine"],
        EHC_DYNAMIC_CODE_TTL_S=str(CODE_TTL_S), EHC_SIGNATURE_WINDOW_S=str(SIGNATURE_WINDOW_S),
    )  # fmt: skip
    processes = Processes(work_dir)
    problems: list[str] = []
    server = None
    watch = RedisWatch(redis_url)  # after the flush: nothing may empty the database from here on
    try:
        server = platform.serve(processes, WORKERS)
        base_url, demo, var_dir = platform.base_url, platform.demo, platform.var_dir
        note(f"registering {sizes.terminals} terminals and {sizes.cards} cards")
        terminals, vuids = register_readers_and_cards(base_url, demo, sizes)
        vault = KeyVault.load(var_dir / "dev-keys.json")  # the server's own
        builder = PoolBuilder(vault, vuids, terminals, urlsplit(base_url).netloc, sizes)
        pool_path = work_dir / "requests.pool"
        readings: list[dict] = []

        def load_run(duration_s: int, count: int) -> tuple[dict, Pool]:
            pool = builder.write(pool_path, count)
            readings.extend(pool.decoded)
            if time.time() - pool.sealed_at + duration_s + RUN_MARGIN_S > CODE_TTL_S:
                took = time.time() - pool.sealed_at
                raise BenchFailure(f"building the pool took {took:.0f} s: its codes would expire in the run")
            run = wrk(base_url, sizes, duration_s, ["pool", str(pool_path)])
            watch.check("a run of scans")
            pool_path.unlink()
            return run, pool

        # Warm-ups: the first fills the caches, the last unexhausted one says how many requests a run needs.
        count, warms = 2000 * sizes.warmup_s, []
        while len(warms) < 2 or warms[-1]["exhausted"]:
            if len(warms) == 6:
                raise BenchFailure("the warm-up used up every request pool it was given")
            note(f"warm-up: {sizes.warmup_s} s with up to {count} requests")
            warm, _ = load_run(sizes.warmup_s, count)
            warms.append(warm)
            problems += problems_of({**warm, "exhausted": 0}, "warm-up")  # a short pool is what it measures
            if warm["exhausted"]:
                count *= 4
        count = math.ceil(3 * warms[-1]["rps"] * sizes.duration_s) + 500

        loads, baselines = [], []
        for round_no in range(1, sizes.rounds + 1):
            note(f"round {round_no}/{sizes.rounds}: baseline GET {BASELINE_PATH}, {sizes.duration_s} s")
            baseline = wrk(base_url, sizes, sizes.duration_s, ["get", BASELINE_PATH])
            problems += problems_of(baseline, f"baseline round {round_no}")
            baselines.append(baseline)
            note(f"round {round_no}/{sizes.rounds}: scans, {sizes.duration_s} s, pool of {count} requests")
            run, _ = load_run(sizes.duration_s, count)
            problems += problems_of(run, f"load round {round_no}")
            loads.append(run)
            count = max(count, math.ceil(3 * run["rps"] * sizes.duration_s) + 500)
        if server.poll() is not None:
            raise BenchFailure("the platform died during the run")
        recorded = verification_counts(base_url, Credentials(**demo["admin"]))
    except BenchFailure as exc:
        if server is not None:
            raise BenchFailure(f"{exc}\nthe platform's log ends:\n{processes.log_tail(server)}") from None
        raise
    finally:
        processes.stop_all()
        watch.close()

    problems += cross_checked([*warms, *loads], recorded, readings)
    best = max(loads, key=lambda run: run["rps"])
    best_baseline = max(baselines, key=lambda run: run["rps"])
    every = [*warms, *loads]
    report["decode_sample"] = {
        "codes": len(readings),
        "presets": PHONE_PRESETS,
        "decoded_exactly": sum(r["exact"] for r in readings),
        "mean_decode_ms": round(sum(r["decode_ms"] for r in readings) / max(1, len(readings)), 2),
    }
    report["baseline"] = {"path": BASELINE_PATH, **latency_figures(best_baseline)}
    report["load"] = load_figures(best)
    report["ratio"] = round(best["rps"] / best_baseline["rps"], 3)
    report["totals"] = {  # warm-up and every round
        "fresh_codes_verified": sum(run["fresh_ok"] for run in every),
        "valid_codes_refused": sum(run["fresh_bad"] for run in every),
        "replays_refused": sum(run["replay_used"] for run in every),
        "replays_accepted": sum(run["replay_bad"] for run in every),
    }
    report["platform_record"] = {  # its code statistics
        "verify_ok": recorded.get("ok", 0),
        "verify_code_used": recorded.get("CODE_USED", 0),
    }
    report["rounds"] = [
        {"baseline": latency_figures(b), "load": load_figures(r), "ratio": round(r["rps"] / b["rps"], 3)}
        for b, r in zip(baselines, loads)
    ]
    return problems


def cross_checked(runs: list[dict], recorded: dict[str, int], readings: list[dict]) -> list[str]:
    """What wrk saw against the platform's own record of verifications, and the sampled decodes."""
    problems = []
    in_flight = [unanswered(run) for run in runs]
    expected = {
        # Requests in flight when wrk stopped may have been answered unseen: recorded, not counted.
        "ok": (sum(run["fresh_ok"] for run in runs), sum(fresh for fresh, _ in in_flight)),
        "CODE_USED": (sum(run["replay_used"] for run in runs), sum(replays for _, replays in in_flight)),
    }
    for result, (seen, unseen) in expected.items():
        if not seen <= recorded.get(result, 0) <= seen + unseen:
            problems.append(f"the platform recorded {recorded.get(result, 0)} verifications {result}; "
                            f"wrk saw {seen} (+{unseen} in flight)")  # fmt: skip
    if other := {result: n for result, n in recorded.items() if result not in expected}:
        problems.append(f"the platform recorded other verification results: {other}")
    exact = sum(r["exact"] for r in readings)
    if exact != len(readings):
        problems.append(f"{len(readings) - exact} of {len(readings)} sampled codes did not read back exactly")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs: proves it works")
    parser.add_argument(
        "--database-url", default=os.environ.get("EHC_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="dropped and created afresh (default: ehc_bench_scan on the local PostgreSQL)",
    )  # fmt: skip
    parser.add_argument(
        "--redis-url", default=os.environ.get("EHC_BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="flushed before and after (default: database 13 of the local Redis)",
    )  # fmt: skip
    parser.add_argument("--duration", type=int, help="seconds of each measured run")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.duration:
        sizes = Sizes(**{**asdict(sizes), "duration_s": args.duration})
    if shutil.which("wrk") is None:
        print("bench/scan_load.py: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    report = report_head(
        args.quick, setup={"workers": WORKERS, "wrk_threads": 1, "code_ttl_s": CODE_TTL_S, **asdict(sizes)}
    )
    # The machine may be shared: how busy it was belongs with the figures.
    report["machine"]["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    work_dir = Path(tempfile.mkdtemp(prefix="ehc-bench-scan-"))
    try:
        problems = bench(sizes, work_dir, args.database_url, args.redis_url, report)
    except BenchFailure as exc:
        problems = [str(exc)]
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        try:
            flush_redis_db(args.redis_url)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real outcome
            note(f"could not flush {args.redis_url}: {exc}")
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["passed"] = not problems
    report["problems"] = problems
    print(json.dumps(report, ensure_ascii=False, indent=2))
    if problems:
        print("bench/scan_load.py FAILED:\n- " + "\n- ".join(problems), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
