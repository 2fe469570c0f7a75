"""Resident accounts (统一用户体系): a WeChat openid, an Alipay user id or a phone number,
holding its own card and managing family members' cards."""

from __future__ import annotations

from enum import Enum

from tortoise import fields
from tortoise.models import Model


class LoginChannel(str, Enum):
    wechat = "wechat"  # H5 web authorisation (openid of the official account)
    wechat_mini = "wechat_mini"  # mini-program (openid of the mini-program)
    alipay = "alipay"
    phone = "phone"  # plain browser, phone + SMS


class Relation(str, Enum):
    """Relation of a managed person to the managing resident (after GB/T 4761)."""

    spouse = "spouse"
    child = "child"
    parent = "parent"
    grandparent = "grandparent"
    grandchild = "grandchild"
    sibling = "sibling"
    other = "other"


class ResidentAccount(Model):
    account_id = fields.CharField(max_length=24, primary_key=True)
    channel = fields.CharEnumField(LoginChannel, max_length=12)
    # Blind index of the channel's user id; the id itself is not needed after login.
    subject_index = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "resident_account"
        unique_together = (("channel", "subject_index"),)


# An account managing a family member's card; a card may have several managers.
class CardManager(Model):
    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[ResidentAccount] = fields.ForeignKeyField(
        "cardcore.ResidentAccount", related_name="managed", on_delete=fields.CASCADE
    )
    card = fields.ForeignKeyField("cardcore.Card", related_name="managers", on_delete=fields.CASCADE)
    relation = fields.CharEnumField(Relation, max_length=12)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "card_manager"
        unique_together = (("account", "card"),)
