"""Demo bootstrap for development and tests: well-known, approved clients."""

from __future__ import annotations

import logging

from cardcore import access
from cardcore.keyvault import KeyVaultError
from cardcore.models import Client, ClientKind, ClientStatus
from cardcore.runtime import Runtime
from cardcore.settings import Settings

log = logging.getLogger("ehc.demo")

DEMO_CLIENTS = (
    # (key in the output, client id, kind, name, institution)
    ("institution", "ins_demo", ClientKind.institution, "演示医院 Demo Hospital", None),
    ("terminal", "trm_demo", ClientKind.terminal, "演示医院 门诊挂号窗口 1", "ins_demo"),
    ("partner_app", "app_demo", ClientKind.partner_app, "演示城市 APP", None),
    ("admin", "adm_demo", ClientKind.admin, "平台运营 Demo Operator", None),
)


async def _ensure(rt: Runtime, client_id: str, kind: ClientKind, name: str, institution_id: str | None) -> str:
    existing = await Client.get_or_none(client_id=client_id)
    if existing is not None:
        try:
            return rt.vault.decrypt_text(existing.secret_sealed)
        except KeyVaultError:
            # The database outlived the key vault it was seeded with (a new var/ dir):
            # the old demo secret is unreadable, so the demo client gets a new one.
            log.warning("demo client %s re-issued: its secret was sealed under other keys", client_id)
            _, secret = await access.rotate_secret(rt, client_id, kind)
            return secret
    _, secret = await access.register_client(
        rt, kind, name, institution_id=institution_id, status=ClientStatus.approved, client_id=client_id
    )
    return secret


async def _ensure_mock_channels(rt: Runtime) -> None:
    """The demo hospital and the platform get an account at every mock payment channel."""
    from cashier.accounts import PLATFORM_ACCOUNT, save_account
    from cashier.channels.dev import mock_merchant_configs

    for config in mock_merchant_configs(rt.settings).values():
        for institution_id in ("ins_demo", PLATFORM_ACCOUNT):
            await save_account(rt, institution_id, config)


async def seed_demo(settings: Settings) -> dict:
    from openplatform.app import MODEL_APPS

    rt = await Runtime.start(settings, MODEL_APPS)
    try:
        result = {}
        for key, client_id, kind, name, institution_id in DEMO_CLIENTS:
            secret = await _ensure(rt, client_id, kind, name, institution_id)
            result[key] = {"client_id": client_id, "secret": secret}
        await _ensure_mock_channels(rt)
        result["base_url"] = settings.base_url
        return result
    finally:
        await rt.stop()


async def create_admin(settings: Settings, name: str) -> dict:
    from openplatform.app import MODEL_APPS

    rt = await Runtime.start(settings, MODEL_APPS)
    try:
        client, secret = await access.register_client(rt, ClientKind.admin, name, status=ClientStatus.approved)
        return {"client_id": client.client_id, "secret": secret}
    finally:
        await rt.stop()


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Demo credentials for {result['base_url']}")
    table.add_column("role")
    table.add_column("client id")
    table.add_column("secret")
    for key, _, _, _, _ in DEMO_CLIENTS:
        table.add_row(key, result[key]["client_id"], result[key]["secret"])
    Console().print(table)
