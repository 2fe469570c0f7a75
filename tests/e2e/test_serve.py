"""The platform as an operator starts it: ``serve``, ``seed-demo --json``, signed calls over TCP."""

import json

import httpx
import pytest

from cardcore import signing
from openplatform.sdk import PlatformClient, build_request
from tests.servers import running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("serve-var"), env_name="dev") as live:
        seeded = live.run("seed-demo", "--json")
        assert seeded.returncode == 0, seeded.stderr
        yield live.base_url, json.loads(seeded.stdout), live.run


def test_healthz(server):
    base_url, _, _ = server
    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base_url}/readyz").status_code == 200


def test_seed_demo_is_idempotent_and_prints_working_credentials(server):
    base_url, creds, run = server
    again = json.loads(run("seed-demo", "--json").stdout)
    assert again == creds
    assert set(creds) == {"institution", "terminal", "partner_app", "admin", "base_url"}
    for role in ("institution", "terminal"):
        with PlatformClient(base_url, creds[role]["client_id"], creds[role]["secret"]) as client:
            assert client.get("/inst/v1/me").status_code == 200
    with PlatformClient(base_url, creds["admin"]["client_id"], creds["admin"]["secret"]) as admin:
        assert admin.get("/admin/v1/functions").status_code == 200


def test_replayed_retimed_and_altered_requests_are_refused(server):
    base_url, creds, _ = server
    ins = creds["institution"]
    payload = {"name": "挂号窗口 9"}
    headers, body = build_request(ins["client_id"], ins["secret"], "POST", "/inst/v1/terminals", payload)
    first = httpx.post(f"{base_url}/inst/v1/terminals", content=body, headers=headers)
    assert first.status_code == 201
    replay = httpx.post(f"{base_url}/inst/v1/terminals", content=body, headers=headers)
    assert (replay.status_code, replay.json()["code"]) == (401, "REPLAYED_REQUEST")

    old = signing.now_ms() - 301_000
    headers, body = build_request(ins["client_id"], ins["secret"], "POST", "/inst/v1/terminals", payload, timestamp_ms=old)
    stale = httpx.post(f"{base_url}/inst/v1/terminals", content=body, headers=headers)
    assert (stale.status_code, stale.json()["code"]) == (401, "STALE_REQUEST")

    headers, body = build_request(ins["client_id"], ins["secret"], "POST", "/inst/v1/terminals", payload)
    altered = body[:-2] + bytes([body[-2] ^ 0x01]) + body[-1:]
    refused = httpx.post(f"{base_url}/inst/v1/terminals", content=altered, headers=headers)
    assert (refused.status_code, refused.json()["code"]) == (401, "BAD_SIGNATURE")
