"""The platform as an operator starts it: ``serve``, ``seed-demo --json``, signed calls over TCP."""

import json
import time

import httpx
import pytest

from cardcore import signing
from openplatform.sdk import PlatformClient, build_request
from tests.servers import free_port, run_command, running_server, signal_and_wait, start_serve, stop_process_group


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


@pytest.fixture(scope="module")
def migrated_env(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("stop-at-start")
    env = {"EHC_ENV": "test", "EHC_VAR_DIR": str(var_dir), "EHC_LOG_LEVEL": "WARNING"}
    done = run_command(env, "migrate")
    assert done.returncode == 0, done.stderr
    return env


# Moments after the start when the worker is still starting on this kind of machine (it
# answers after 2–3 s): the manager is waiting for it to report, and a signal came first.
@pytest.mark.parametrize("after_s", [1.2, 1.6, 2.0])
def test_a_server_told_to_stop_while_its_worker_starts_stops(migrated_env, tmp_path, after_s):
    env = {**migrated_env, "EHC_PORT": str(free_port())}
    process = start_serve(env, tmp_path / "server.stderr")
    try:
        time.sleep(after_s)
        signal_and_wait(process, tmp_path / "server.stderr")
    finally:
        stop_process_group(process)
