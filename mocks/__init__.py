"""Stand-ins for the world outside the platform, mounted under ``/_mock/`` in dev and test.

Each mock speaks its real service's protocol, so the platform's production code (and
the real SDKs) talk to them unchanged. They keep their state in the shared cache under
``mock:`` keys, so they behave the same with several workers. They never run in prod.
"""

from __future__ import annotations

import aiohttp
from sanic import Blueprint, Request, Sanic
from sanic.response import json

from cardcore import outbound

MOCK_PREFIX = "/_mock"

index = Blueprint("mock_index", url_prefix=MOCK_PREFIX)


def mock_blueprints() -> list[Blueprint]:
    """Every mock gateway; the app mounts them only when EHC_MOUNT_MOCKS is on."""
    from mocks import (
        alipay,
        alipay_trade,
        face,
        institution,
        insurance,
        registry,
        sms,
        unionpay,
        wechat,
        wechat_pay,
    )

    assert alipay_trade  # registers the trade methods on the Alipay gateway

    return [index, wechat.bp, wechat_pay.bp, alipay.bp, sms.bp, face.bp, registry.bp, institution.bp, unionpay.bp,
            insurance.bp]


def outbound_http(request: Request) -> aiohttp.ClientSession:
    """The client mocks use to call the platform (channel callbacks)."""
    return request.app.ctx.mock_http


@index.before_server_start
async def open_outbound_http(app: Sanic) -> None:
    # Callbacks go out concurrently, each on a connection kept open (up to 100).
    app.ctx.mock_http = outbound.new_session(10)


@index.after_server_stop
async def close_outbound_http(app: Sanic) -> None:
    await app.ctx.mock_http.close()


@index.get("/")
async def list_mocks(request: Request):
    """Which outside services are mocked here."""
    names = sorted({bp.name for bp in mock_blueprints()} - {"mock_index"})
    return json({"mocks": names})
