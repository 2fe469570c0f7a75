import asyncio
import json as jsonlib

from sanic import Request

from openplatform.errors import EnvelopeErrorHandler

async def test_healthz_is_up_and_carries_a_request_id(http):
    reply = await http.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}
    assert len(reply.headers["X-Request-Id"]) >= 8


async def test_inbound_request_id_is_echoed(http):
    reply = await http.get("/healthz", headers={"X-Request-Id": "lb-1234567890"})
    assert reply.headers["X-Request-Id"] == "lb-1234567890"


async def test_readyz_checks_database_and_cache(http):
    reply = await http.get("/readyz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ready", "database": "ok", "cache": "ok"}


async def test_metrics_are_prometheus_text(http):
    await http.get("/healthz")
    reply = await http.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    assert 'ehc_http_requests_total{method="GET",route="healthz",status="200"}' in reply.text


async def test_unknown_path_gets_the_error_envelope(http):
    reply = await http.get("/no/such/thing")
    assert reply.status_code == 404
    body = reply.json()
    assert body["code"] == "NOT_FOUND"
    assert body["request_id"] == reply.headers["X-Request-Id"]


async def test_openapi_document_lists_the_signed_apis(http):
    spec = (await http.get("/docs/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    for path in ("/inst/v1/register", "/inst/v1/terminals", "/admin/v1/institutions/{client_id}/approve", "/admin/v1/audit-events"):
        assert path.replace("institutions", "{kind}") in spec["paths"] or path in spec["paths"], path
    assert "ehc_signature" in spec["components"]["securitySchemes"]
    page = await http.get("/docs")
    assert page.status_code == 200 and "/docs/openapi.json" in page.text


async def test_mocks_are_mounted_outside_production(http):
    reply = await http.get("/_mock/")
    assert reply.status_code == 200 and "mocks" in reply.json()


def test_mocks_are_absent_when_switched_off(settings):
    from dataclasses import replace

    from openplatform.app import create_app

    app = create_app(replace(settings, mount_mocks=False), name="ehc_no_mocks")
    assert not any(route.path.startswith("_mock") for route in app.router.routes)


async def test_openapi_document_lists_the_cashier(http):
    spec = (await http.get("/docs/openapi.json")).json()
    paths = spec["paths"]
    for path in ("/cashier/v1/orders", "/cashier/v1/micropay", "/cashier/v1/bills", "/mp/v1/payment-accounts",
                 "/admin/v1/notifications"):
        assert path in paths, path
    create = paths["/cashier/v1/orders"]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert {"out_trade_no", "amount_fen", "notify_url"} <= set(schema["required"])
    close = paths["/cashier/v1/orders/{order_no}/close"]["post"]["requestBody"]
    assert close["required"] is False and "reason" in close["content"]["application/json"]["schema"]["properties"]
    assert any("/refunds" in p for p in paths) and any(p.startswith("/cashier/notify/") for p in paths)


def test_a_request_its_client_abandoned_is_logged_as_cancelled_not_as_a_failure(app, caplog):
    # Sanic cancels the handler of a request whose client hung up.
    request = Request(b"/cashier/v1/orders", {}, "1.1", "POST", None, app)
    with caplog.at_level("INFO", logger="ehc.errors"):
        answer = EnvelopeErrorHandler().default(request, asyncio.CancelledError())
    assert answer.status == 503 and jsonlib.loads(answer.body)["code"] == "SERVICE_UNAVAILABLE"
    assert [r.levelname for r in caplog.records if r.name == "ehc.errors"] == ["INFO"]
    assert "client closed the connection" in caplog.records[-1].getMessage()
