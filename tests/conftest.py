"""Test harness: the whole suite runs on the embedded defaults (SQLite + fakeredis), and on
PostgreSQL + Redis when ``EHC_TEST_DATABASE_URL`` / ``EHC_TEST_REDIS_URL`` are set."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx
import pytest
from sanic import Sanic

from cardcore import db, outbound
from cardcore.settings import Settings
from openplatform.app import MODEL_APPS, create_app
from openplatform.sdk import build_request

TEST_DATABASE_URL = os.environ.get("EHC_TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("EHC_TEST_REDIS_URL", "")
BACKEND = "postgres+redis" if TEST_DATABASE_URL else "sqlite+fakeredis"


def pytest_report_header(config):
    from cardcore.codes import codec

    return f"e-health card backends: {BACKEND}; dynamic-code codec: {codec()}"


async def reset_external_backends() -> None:
    """Start from empty PostgreSQL and Redis databases, so every run is repeatable."""
    if TEST_DATABASE_URL:
        import asyncpg

        conn = await asyncpg.connect(TEST_DATABASE_URL)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()
    if TEST_REDIS_URL:
        import redis.asyncio as redis

        client = redis.from_url(TEST_REDIS_URL)
        await client.flushdb()
        await client.aclose()


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("var")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def settings(var_dir) -> Settings:
    return Settings(
        env="test",
        port=free_port(),
        var_dir=var_dir,
        # Tests drive background work themselves (cashier.notifier.deliver_due, cashier.sweeper.sweep).
        run_worker=False,
        database_url=TEST_DATABASE_URL or f"sqlite://{var_dir / 'test.sqlite3'}",
        redis_url=TEST_REDIS_URL,
        registrations_per_hour=10_000,
        log_level="WARNING",
    ).resolved()


@pytest.fixture(scope="session", autouse=True)
async def outbound_session():
    """Channels built by tests outside a server call through the loop's shared session; closed at the end."""
    yield
    await outbound.close_shared_session()


@pytest.fixture(scope="session")
async def app(settings):
    await reset_external_backends()
    await db.migrate(settings.database_url, MODEL_APPS)
    Sanic.test_mode = True
    # Served workers carry this variable; without it sanic-ext prints a start-up banner
    # that links the Swagger UI, which the platform does not mount (no external CDN).
    os.environ.setdefault("SANIC_WORKER_IDENTIFIER", "pytest")
    application = create_app(settings, name="ehc_test")
    # Served on a real port too: the payment SDKs (wechatpy, python-alipay-sdk) make their
    # own HTTP requests, from worker threads, to the mock gateways at settings.base_url.
    server = await application.create_server(
        host=settings.host, port=settings.port, return_asyncio_server=True, access_log=False
    )
    await server.startup()
    await server.before_start()
    await server.after_start()
    await server.start_serving()
    # The test client reaches the same app in process (ASGI); Sanic allows that once marked.
    # What the platform sends to the mocked outside services (identity providers, channel
    # gateways) and what the mocks send back go over TCP to the port served above.
    application.asgi = True
    yield application
    await server.before_stop()
    server.close()
    await server.wait_closed()
    await server.after_stop()


@pytest.fixture(scope="session")
def rt(app):
    return app.ctx.rt


@pytest.fixture(scope="session")
async def http(app):
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


class Signer:
    """Signs requests as one client, the way an integrator's code would."""

    def __init__(self, http: httpx.AsyncClient, client_id: str, secret: str, terminal_id: str | None = None):
        self.http = http
        self.client_id = client_id
        self.secret = secret
        self.terminal_id = terminal_id

    def build(self, method: str, path: str, payload=None, **overrides):
        return build_request(
            self.client_id, self.secret, method, path, payload, terminal_id=self.terminal_id, **overrides
        )

    async def request(self, method: str, path: str, payload=None, **overrides) -> httpx.Response:
        headers, body = self.build(method, path, payload, **overrides)
        return await self.http.request(method, path, content=body, headers=headers)

    async def get(self, path: str, **overrides) -> httpx.Response:
        return await self.request("GET", path, **overrides)

    async def post(self, path: str, payload=None, **overrides) -> httpx.Response:
        return await self.request("POST", path, payload, **overrides)

    async def patch(self, path: str, payload=None, **overrides) -> httpx.Response:
        return await self.request("PATCH", path, payload, **overrides)

    def acting_for(self, terminal_id: str) -> "Signer":
        return Signer(self.http, self.client_id, self.secret, terminal_id)


@pytest.fixture(scope="session")
async def admin(http, rt) -> Signer:
    from cardcore import access
    from cardcore.models import ClientKind, ClientStatus

    client, secret = await access.register_client(rt, ClientKind.admin, "test admin", status=ClientStatus.approved)
    return Signer(http, client.client_id, secret)


async def register_institution(http, admin: Signer, approve: bool = True) -> Signer:
    reply = await http.post("/inst/v1/register", json={"name": "测试医院"})
    assert reply.status_code == 201, reply.text
    creds = reply.json()
    if approve:
        assert (await admin.post(f"/admin/v1/institutions/{creds['client_id']}/approve")).status_code == 200
    return Signer(http, creds["client_id"], creds["secret"])


async def register_terminal(http, admin: Signer, institution: Signer, approve: bool = True, **extra) -> Signer:
    reply = await institution.post("/inst/v1/terminals", {"name": "门诊挂号窗口", **extra})
    assert reply.status_code == 201, reply.text
    creds = reply.json()
    if approve:
        assert (await admin.post(f"/admin/v1/terminals/{creds['client_id']}/approve")).status_code == 200
    return Signer(http, creds["client_id"], creds["secret"])


@pytest.fixture
async def institution(http, admin) -> Signer:
    return await register_institution(http, admin)


@pytest.fixture
async def terminal(http, admin, institution) -> Signer:
    return await register_terminal(http, admin, institution)


@pytest.fixture
async def card(terminal) -> dict:
    """A card registered at the counter by ``terminal``."""
    from tests.factories import resident

    reply = await terminal.post("/inst/v1/cards", resident())
    assert reply.status_code == 201, reply.text
    return reply.json()
