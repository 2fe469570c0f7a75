"""What every HTTP benchmark here needs: servers started and stopped as process groups, a
fresh database and Redis database, wrk replaying pre-signed requests, and the machine's
description that goes with every figure."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent


class BenchFailure(RuntimeError):
    """The benchmark could not produce honest figures."""


def note(message: str) -> None:
    """Progress on stderr (stdout carries the JSON report), prefixed with the benchmark's name."""
    print(f"[bench/{Path(sys.argv[0]).stem}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(server_group: int) -> dict[str, float] | None:
    """CPU time (user + system, seconds) used so far by the server's process group (the
    platform's workers, with the mocks mounted in them), PostgreSQL's processes and Redis;
    None where there is no /proc to read it from."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    ticks = {"server": 0, "postgres": 0, "redis": 0}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()  # from the state on: man 5 proc
        used = int(fields[11]) + int(fields[12])  # utime + stime
        if int(fields[2]) == server_group:
            ticks["server"] += used
        elif name == "postgres":
            ticks["postgres"] += used
        elif name == "redis-server":
            ticks["redis"] += used
    per_second = os.sysconf("SC_CLK_TCK")
    return {group: count / per_second for group, count in ticks.items()}


def _ended_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU time the server, PostgreSQL, Redis, wrk and this process spent while it was
    entered: what one order or request costs the machine, steadier between runs than a
    rate on a machine shared with others. PostgreSQL's and Redis's processes count if alive
    at the end (the servers' pools keep theirs); wrk is this process's child that ended."""

    def __init__(self, server: subprocess.Popen) -> None:
        self._group = server.pid  # started in a session of its own: its workers share its group
        self.spent: dict[str, float] | None = None

    def __enter__(self) -> "CpuMeter":
        self._before = cpu_seconds(self._group)
        self._own = time.process_time()
        self._children = _ended_children_cpu()
        return self

    def __exit__(self, *exc) -> None:
        after = cpu_seconds(self._group)
        if self._before is not None and after is not None:
            self.spent = {group: after[group] - self._before[group] for group in after}
            self.spent["wrk"] = _ended_children_cpu() - self._children
            self.spent["driver"] = time.process_time() - self._own

    def per_unit_ms(self, count: int) -> dict[str, float] | None:
        """Milliseconds of CPU per order or request, by group."""
        if self.spent is None or count <= 0:
            return None
        return {group: round(seconds * 1000 / count, 3) for group, seconds in self.spent.items()}


class Processes:
    """Servers this benchmark started; all of them are stopped on the way out."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._started: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log_path = self._log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            # Its own session: the server and the workers it spawns form one process group.
            process = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._started.append((name, process, log_path))
        return process

    def log_tail(self, process: subprocess.Popen, chars: int = 3000) -> str:
        for _, started, log_path in self._started:
            if started is process:
                return log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop_all(self) -> None:
        from tests.servers import stop_process_group

        for _, process, _ in reversed(self._started):
            stop_process_group(process, grace_s=20)
        self._started.clear()


def wait_until_up(url: str, process: subprocess.Popen, processes: Processes, timeout_s: float = 60) -> None:
    from tests.servers import wait_until_healthy

    if not wait_until_healthy(url, process, timeout_s):
        raise BenchFailure(f"server behind {url} did not start:\n{processes.log_tail(process)}")


async def recreate_database(database_url: str) -> None:
    import asyncpg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) or name in ("test", "postgres", "template0", "template1"):
        raise BenchFailure(f"refusing to drop and recreate database {name!r}: give the benchmark its own database")
    admin_url = parts._replace(path="/postgres").geturl()
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def server_versions(database_url: str, redis_url: str) -> dict:
    import asyncpg
    import redis.asyncio as aioredis

    connection = await asyncpg.connect(database_url)
    try:
        postgres = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    client = aioredis.from_url(redis_url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return {"postgres": postgres, "redis": info.get("redis_version")}


def flush_redis_db(redis_url: str) -> None:
    import redis

    db = int(urlsplit(redis_url).path.lstrip("/") or 0)
    if db == 0:
        raise BenchFailure("refusing to flush Redis database 0: give the benchmark its own database")
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


def raw_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    """One HTTP/1.1 request as wrk's pool scripts replay it, byte for byte."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode("ascii") + body


def run_wrk(
    url: str, script: Path, *, connections: int, duration_s: int, script_args: list[str], threads: int = 1
) -> dict:
    """wrk with one of bench/'s Lua scripts; the script's BENCH_RESULT line, plus ``rps`` and
    ``first_error`` (the BENCH_FIRST_ERROR lines joined)."""
    argv = [
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s", "--timeout", "10s",
        "-s", str(script), url, "--", *script_args,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 180)
    result, errors = None, []
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line.removeprefix("BENCH_RESULT "))
        elif line.startswith("BENCH_FIRST_ERROR "):
            errors.append(line.removeprefix("BENCH_FIRST_ERROR "))
    if done.returncode != 0 or result is None:
        raise BenchFailure(f"wrk failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result["first_error"] = " | ".join(errors) or None
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def latency_figures(run: dict) -> dict:
    return {
        "rps": round(run["rps"]),
        "p50_ms": round(run["latency_us"]["p50"] / 1000, 2),
        "p99_ms": round(run["latency_us"]["p99"] / 1000, 2),
        "requests": run["requests"],
    }


def machine_info() -> dict:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import cryptography
    from cryptography.hazmat.backends.openssl import backend

    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "nproc": nproc,
        "cpu_model": cpu_model,
        "python": sys.version.split()[0],
        "platform": f"{os.uname().sysname} {os.uname().release} {os.uname().machine}",
        "openssl_hashlib": ssl.OPENSSL_VERSION,
        "openssl_cryptography": f"{backend.openssl_version_text()} (cryptography {cryptography.__version__})",
    }


def report_head(quick: bool, **extra) -> dict:
    """The first fields of a benchmark's report: which script, how it ran, when, on what."""
    return {
        "benchmark": f"bench/{Path(sys.argv[0]).name}",
        "mode": "quick" if quick else "full",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **extra,
    }


def print_report(report: dict) -> int:
    """The report as JSON on stdout; exit status 0."""
    print(json.dumps(report, ensure_ascii=False, indent=2, default=str))
    return 0


def report_failure(exc: BenchFailure) -> int:
    """Why the benchmark could not produce honest figures, on stderr; exit status 1."""
    print(f"bench/{Path(sys.argv[0]).name} FAILED: {exc}", file=sys.stderr)
    return 1


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    output = done.stdout or done.stderr
    return output.splitlines()[0].strip() if output else "wrk"


def require_clean(run: dict, what: str) -> None:
    """A verify.lua run in which every request answered 2xx, none failed on the socket, and the
    pool lasted."""
    problems = []
    if run["requests"] == 0:
        problems.append("no request completed")
    if run["not_ok"] or run["status_errors"]:
        problems.append(f"{run['not_ok']} answers were not 2xx (first: {run['first_error']})")
    if sum(run["socket_errors"].values()):
        problems.append(f"socket errors {run['socket_errors']}")
    if run["exhausted"]:
        problems.append(f"the request pool ran out ({run['loaded']} requests); the run would have replayed requests")
    if problems:
        raise BenchFailure(f"{what}: " + "; ".join(problems))


def figures(run: dict) -> dict:
    """A verify.lua run's throughput and latency."""
    return {**latency_figures(run), "non_2xx": run["not_ok"]}


# --- the platform under test ----------------------------------------------------------------


PLAIN_APP = BENCH_DIR / "plain_app.py"
PLAIN_PATH = "/plain"


@dataclass
class Platform:
    """A platform configured on fresh storage, migrated and seeded; ``demo`` is
    ``seed-demo --json``'s answer (the demo clients and their secrets)."""

    env: dict[str, str]
    var_dir: Path
    port: int
    demo: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        """``python -m openplatform <args>`` on this platform's configuration; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "openplatform", *args], env=self.env, cwd=self.var_dir, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise BenchFailure(f"openplatform {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def serve(self, processes: Processes, workers: int) -> subprocess.Popen:
        argv = [sys.executable, "-m", "openplatform", "serve", "--workers", str(workers)]
        server = processes.start("platform", argv, self.env, self.var_dir)
        wait_until_up(f"{self.base_url}/healthz", server, processes)
        return server

    def serve_plain(self, processes: Processes, workers: int) -> tuple[str, subprocess.Popen]:
        """The baseline: a bare Sanic JSON route on as many workers; (its URL, the process)."""
        port = free_port()
        argv = [sys.executable, str(PLAIN_APP), "--port", str(port), "--workers", str(workers)]
        plain = processes.start("plain", argv, self.env, self.var_dir)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/healthz", plain, processes)
        return url, plain


def prepare_platform(work_dir: Path, database_url: str, redis_url: str, machine: dict, **settings: str) -> Platform:
    """Fresh database and Redis database, migrations, the demo seeded; ``settings`` are
    extra ``EHC_*`` variables. The servers' versions go into ``machine``."""
    note(f"recreating database {urlsplit(database_url).path.lstrip('/')} and flushing {redis_url}")
    asyncio.run(recreate_database(database_url))
    flush_redis_db(redis_url)
    machine.update(asyncio.run(server_versions(database_url, redis_url)))
    var_dir = work_dir / "var"
    var_dir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EHC_", "SANIC_", "PROMETHEUS_"))}
    env.update(
        PYTHONPATH=str(BENCH_DIR.parent), EHC_ENV="test", EHC_DATABASE_URL=database_url, EHC_REDIS_URL=redis_url,
        EHC_VAR_DIR=str(var_dir), EHC_PORT=str(port), EHC_LOG_LEVEL="WARNING", **settings,
    )  # fmt: skip
    platform = Platform(env, var_dir, port)
    platform.cli("migrate")
    platform.demo = json.loads(platform.cli("seed-demo", "--json"))
    return platform
