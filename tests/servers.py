"""Real server processes for tests that need TCP (the e2e and acceptance suites), and
the browser helpers. A plain module, imported once: its Redis database counter must be
one for every server a test run starts.

Every server gets storage of its own: a new SQLite file, or on PostgreSQL + Redis a new
database and its own Redis database number. Its keys are new too, so data sealed by
another server (or an earlier run) must never be visible to it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from cardcore import codes
from cardcore.settings import Settings
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"

# Redis database numbers handed to servers in turn; 0 belongs to the in-process suite,
# 13 to 15 to the benchmarks (bench/scan_load.py, bench/cashier.py, bench/codes.py).
_REDIS_DBS = itertools.cycle(range(1, 13))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _admin_sql(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(TEST_DATABASE_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _flush_redis(url: str) -> None:
    import redis.asyncio as redis

    client = redis.from_url(url)
    await client.flushdb()
    await client.aclose()


def run_async(coro):
    """Run a coroutine to the end from synchronous code, even where a loop is running (the
    sync Playwright API keeps one in the test thread)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextmanager
def isolated_storage(var_dir: Path):
    """(database_url, redis_url) used by nobody else; PostgreSQL databases are dropped afterwards."""
    if not TEST_DATABASE_URL:
        yield f"sqlite://{var_dir / 'ehc.sqlite3'}", TEST_REDIS_URL
        return
    name = f"ehc_e2e_{secrets.token_hex(4)}"
    run_async(_admin_sql(f'CREATE DATABASE "{name}"'))
    database_url = urlunsplit(urlsplit(TEST_DATABASE_URL)._replace(path=f"/{name}"))
    redis_url = ""
    if TEST_REDIS_URL:
        redis_url = urlunsplit(urlsplit(TEST_REDIS_URL)._replace(path=f"/{next(_REDIS_DBS)}"))
        run_async(_flush_redis(redis_url))
    try:
        yield database_url, redis_url
    finally:
        run_async(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    settings: Settings
    env: dict

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``python -m openplatform <args>`` against this server's configuration."""
        return run_command(self.env, *args, timeout=timeout)

    def seed_demo(self) -> dict:
        """``seed-demo --json`` on this server: the demo institution, terminal, partner app and admin."""
        seeded = self.run("seed-demo", "--json")
        assert seeded.returncode == 0, seeded.stderr
        return json.loads(seeded.stdout)


def process_env(ehc_env: dict) -> dict:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("EHC_")}, **ehc_env}
    env.pop("SANIC_WORKER_IDENTIFIER", None)
    return env


def run_command(ehc_env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m openplatform <args>`` with the configuration ``ehc_env``."""
    return subprocess.run(
        [sys.executable, "-m", "openplatform", *args],
        env=process_env(ehc_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_serve(ehc_env: dict, stderr_path: Path, *args: str) -> subprocess.Popen:
    """``python -m openplatform serve <args>`` in a process group of its own (the server and its
    workers, stopped together by ``stop_process_group``), its log in ``stderr_path``."""
    with open(stderr_path, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "openplatform", "serve", *args],
            env=process_env(ehc_env),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )


@contextmanager
def running_server(var_dir: Path, env_name: str = "test", before_serve=(), **extra_env: str):
    """Start ``serve --migrate`` on fresh storage; ``before_serve`` are CLI commands run first."""
    port = free_port()
    with isolated_storage(var_dir) as (database_url, redis_url):
        ehc_env = {
            "EHC_ENV": env_name,
            "EHC_VAR_DIR": str(var_dir),
            "EHC_PORT": str(port),
            "EHC_DATABASE_URL": database_url,
            "EHC_REDIS_URL": redis_url,
            "EHC_LOG_LEVEL": "WARNING",
            **extra_env,
        }
        server = LiveServer(f"http://127.0.0.1:{port}", Settings.from_env(ehc_env, dotenv=False), ehc_env)
        for command in before_serve:
            done = server.run(*command)
            assert done.returncode == 0, done.stderr
        stderr_path = var_dir / "server.stderr"
        process = start_serve(ehc_env, stderr_path, "--migrate")
        try:
            _wait_until_up(server.base_url, process, stderr_path)
            yield server
        finally:
            stop_process_group(process)


def _stop_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, so a killed run leaves no server behind."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM (Sanic's manager stops its workers), then SIGKILL whatever of the group is left."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def signal_and_wait(process: subprocess.Popen, log_path: Path, timeout_s: float = 30) -> None:
    """SIGTERM ``process`` and wait for it to stop; the test fails with the end of its log if it does not."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not stop in {timeout_s:.0f} s; its log ends:\n" + log_path.read_text()[-4000:])


def _wait_until_up(base_url: str, process: subprocess.Popen, stderr_path: Path) -> None:
    if not wait_until_healthy(f"{base_url}/healthz", process):
        raise RuntimeError(f"server did not start: {stderr_path.read_text()[-2000:]}")


def wait_until_healthy(url: str, process: subprocess.Popen, timeout_s: float = 60) -> bool:
    """Poll ``url`` until it answers 200 (True), or the process dies or time runs out (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def browser_or_skip():
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("EHC_REQUIRE_BROWSER") == "1":
        pytest.fail("EHC_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install chromium)")
    pytest.skip("chromium is not installed")


def compiled_codec_or_skip():
    """cardcore._codec, the compiled dynamic-code hot path (built by `make install`)."""
    try:
        from cardcore import _codec
    except ImportError:
        if os.environ.get("EHC_REQUIRE_CODEC") == "1":
            pytest.fail("EHC_REQUIRE_CODEC=1 but cardcore._codec is not built (python -m cardcore._codec_build)")
        pytest.skip("cardcore._codec is not built (no C compiler?)")
    return _codec


@contextmanager
def codec_module(module):
    """cardcore.codes on a compiled codec module, or on its pure-Python path (None)."""
    found, codes._compiled = codes._compiled, module
    try:
        yield
    finally:
        codes._compiled = found


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# --- payment channels (tests/e2e/payments.py): each channel module names its channel with a
# ``channel_code`` fixture.
