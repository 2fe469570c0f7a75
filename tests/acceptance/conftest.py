"""Acceptance scenarios: each scene and failure of the card and the cashier as people meet
them, over HTTP against a real server process (``python -m openplatform serve``, one per
module) with the mock gateways, on the backends of this test run (a SQLite file and the
in-process cache, or PostgreSQL and Redis when ``EHC_TEST_DATABASE_URL`` /
``EHC_TEST_REDIS_URL`` are set).

Codes are read by the scanner simulator (``mocks.scanner``) as a camera sees them, by
terminals registered by their institution and approved by an operator. Residents act
through the resident API and the mocks play their phones; hospitals sign their calls.
"""

from __future__ import annotations

import httpx
import pytest

from mocks.scanner import AsyncScanner, Credentials
from tests.conftest import Signer
from tests.servers import LiveServer, running_server


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> LiveServer:
    """A server of the module's own, on storage of its own; stopped when the module is done, so it
    never runs beside the servers of other suites."""
    with running_server(tmp_path_factory.mktemp("acceptance-var")) as server:
        yield server


@pytest.fixture(scope="module")
def demo(platform) -> dict:
    """The demo hospital (with an account at every mock payment channel), its terminal and an operator."""
    return platform.seed_demo()


@pytest.fixture
async def http(platform):
    """The test's HTTP client: the residents' phones, the payer's browser, the mock controls."""
    async with httpx.AsyncClient(base_url=platform.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def hospital(http, demo) -> Signer:
    """The demo hospital's HIS, signing as the institution."""
    return Signer(http, demo["institution"]["client_id"], demo["institution"]["secret"])


@pytest.fixture
def operator(http, demo) -> Signer:
    """The platform operator (admin API)."""
    return Signer(http, demo["admin"]["client_id"], demo["admin"]["secret"])


@pytest.fixture
def new_reader(http, platform, demo):
    """``await new_reader(name)``: a scanner terminal of the demo hospital, registered and approved."""

    async def register(name: str, institution: Credentials | None = None) -> AsyncScanner:
        institution = institution or Credentials(**demo["institution"])
        admin = Credentials(**demo["admin"])
        return await AsyncScanner.register(platform.base_url, institution, admin, name, http=http)

    return register

