"""Access management (SPEC §5): every caller of the signed APIs is a ``Client``."""

from __future__ import annotations

from enum import Enum

from tortoise import fields
from tortoise.models import Model


class ClientKind(str, Enum):
    institution = "institution"
    terminal = "terminal"
    partner_app = "partner_app"
    admin = "admin"


class ClientStatus(str, Enum):
    pending = "pending"
    approved = "approved"
    disabled = "disabled"


class Client(Model):
    client_id = fields.CharField(max_length=40, primary_key=True)
    kind = fields.CharEnumField(ClientKind, max_length=16)
    name = fields.CharField(max_length=128)
    status = fields.CharEnumField(ClientStatus, max_length=16, default=ClientStatus.pending)
    status_reason = fields.CharField(max_length=255, default="")
    # Terminals belong to an institution; other kinds have none.
    institution: fields.ForeignKeyNullableRelation["Client"] = fields.ForeignKeyField(
        "cardcore.Client", related_name="terminals", null=True, on_delete=fields.RESTRICT
    )
    # HMAC needs the secret itself, so it is sealed under the vault's data key, never hashed.
    secret_sealed = fields.TextField()
    disabled_functions = fields.JSONField(default=list)
    ip_allowlist = fields.JSONField(default=list)
    scopes = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "access_client"
        indexes = (("kind", "status"),)
