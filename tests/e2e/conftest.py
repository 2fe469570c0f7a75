"""Fixtures for tests that need a real server process: the synchronous SDKs (wechatpy,
python-alipay-sdk) make their own HTTP requests, so they cannot use the in-process app.

``live_server`` starts ``python -m openplatform serve --migrate`` once per test module
(``tests.servers.running_server``: mocks mounted, fresh storage and keys, a free port) and
gives the test the ``Settings`` the server runs with.
"""

from __future__ import annotations

import httpx
import pytest

from tests.servers import CHROMIUM, browser_or_skip, running_server


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("live-var")) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield instance
        instance.close()


@pytest.fixture
async def web():
    """The payer's browser and the test's own HTTP client."""
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


@pytest.fixture
async def mock(web, live_server, channel_code):
    """The channel's mock control (payer and faults); faults are cleared afterwards."""
    from tests.e2e.payments import MockControl

    control = MockControl(web, live_server.base_url, channel_code)
    yield control
    await control.clear_faults()
