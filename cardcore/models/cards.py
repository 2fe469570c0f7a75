"""Card accounts (虚拟化账户) and the record of every code issued, verified and used."""

from __future__ import annotations

from enum import Enum

from tortoise import fields
from tortoise.models import Model


class CardStatus(str, Enum):
    active = "active"
    frozen = "frozen"  # 挂失
    cancelled = "cancelled"  # 注销


class AuthLevel(str, Enum):
    weak = "weak"  # L1: real-name data verified
    strong = "strong"  # L2: second factor passed


class Card(Model):
    health_card_id = fields.CharField(max_length=64, primary_key=True)  # the VUID
    person = fields.OneToOneField("cardcore.Person", related_name="card", on_delete=fields.RESTRICT)
    # The identity document the VUID derives from (SPEC §3: VUID = SM4 of id_type ‖ id_number).
    identifier = fields.OneToOneField("cardcore.PersonIdentifier", related_name="card", on_delete=fields.RESTRICT)
    security_key_version = fields.SmallIntField()
    status = fields.CharEnumField(CardStatus, max_length=10, default=CardStatus.active)
    auth_level = fields.CharEnumField(AuthLevel, max_length=6, default=AuthLevel.weak)
    registered_by = fields.CharField(max_length=40)  # client id of the institution or channel
    # The resident account that holds the card as its own ("self"); one card per account.
    holder_account = fields.OneToOneField(
        "cardcore.ResidentAccount", related_name="own_card", null=True, on_delete=fields.SET_NULL
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "card"


# One issuance or verification of a code (seed 002 §5.1.2: query, analysis, monitoring).
class CodeEvent(Model):

    id = fields.BigIntField(primary_key=True)
    # Given when the event is queued: writing the same queued event twice is a no-op.
    uid = fields.CharField(max_length=32, unique=True, null=True)
    action = fields.CharField(max_length=8)  # issue | verify
    health_card_id = fields.CharField(max_length=64, null=True, db_index=True)
    code_type = fields.CharField(max_length=8, default="")  # static | dynamic | combined
    scene = fields.CharField(max_length=16, default="")
    result = fields.CharField(max_length=32)  # "ok" or the API error code
    client_id = fields.CharField(max_length=40, default="")
    institution_id = fields.CharField(max_length=40, null=True)
    terminal_id = fields.CharField(max_length=40, null=True)
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "code_event"
        indexes = (("institution_id", "created_at"),)


# Card usage reported by an institution (用卡数据上报).
class UsageReport(Model):

    id = fields.BigIntField(primary_key=True)
    health_card_id = fields.CharField(max_length=64, db_index=True)
    scene = fields.CharField(max_length=16)
    department = fields.CharField(max_length=64, default="")
    occurred_at = fields.DatetimeField()
    institution_id = fields.CharField(max_length=40)
    terminal_id = fields.CharField(max_length=40, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "card_usage"


# Who read or changed a person's data, acting for whom, and why (SPEC §8).
class AuditEvent(Model):

    id = fields.BigIntField(primary_key=True)
    actor = fields.CharField(max_length=40)
    terminal_id = fields.CharField(max_length=40, null=True)
    action = fields.CharField(max_length=32)
    subject = fields.CharField(max_length=64, db_index=True)  # health card id or EMPI id
    detail = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "audit_event"
