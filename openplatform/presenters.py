"""Response shapes shared by several blueprints."""

from __future__ import annotations

from cardcore.clock import iso
from cardcore.models import Client


def client_view(client: Client) -> dict:
    return {
        "client_id": client.client_id,
        "kind": client.kind.value,
        "name": client.name,
        "status": client.status.value,
        "status_reason": client.status_reason,
        "institution_id": client.institution_id,
        "disabled_functions": client.disabled_functions,
        "ip_allowlist": client.ip_allowlist,
        "scopes": client.scopes,
        "created_at": iso(client.created_at),
        "updated_at": iso(client.updated_at),
    }


def credentials_view(client: Client, secret: str) -> dict:
    """A client with its secret: returned once, when the secret is made."""
    return {**client_view(client), "secret": secret}


def page(items: list, next_cursor: str | None) -> dict:
    return {"items": items, "next_cursor": next_cursor}
