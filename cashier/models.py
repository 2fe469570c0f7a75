"""Cashier storage (tortoise app label ``cashier``). Money is integer fen everywhere."""

from __future__ import annotations

from enum import Enum

from tortoise import fields
from tortoise.models import Model


class OrderStatus(str, Enum):
    created = "created"
    paying = "paying"
    paid = "paid"
    closed = "closed"
    refunding = "refunding"
    refunded = "refunded"
    partially_refunded = "partially_refunded"


class RefundStatus(str, Enum):
    processing = "processing"
    succeeded = "succeeded"
    failed = "failed"


class NotificationStatus(str, Enum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


# An institution's merchant account at one channel; keys sealed under the vault's data key.
class ChannelAccount(Model):
    id = fields.BigIntField(primary_key=True)
    institution_id = fields.CharField(max_length=40)
    channel = fields.CharField(max_length=16)
    app_id = fields.CharField(max_length=64, default="")
    merchant_id = fields.CharField(max_length=64, default="")
    sub_merchant_id = fields.CharField(max_length=64, default="")
    gateway = fields.CharField(max_length=255, default="")
    secrets_sealed = fields.TextField()
    enabled = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "cashier_channel_account"
        unique_together = (("institution_id", "channel"),)


class Order(Model):
    order_no = fields.CharField(max_length=32, primary_key=True)
    institution_id = fields.CharField(max_length=40)
    out_trade_no = fields.CharField(max_length=64)
    # SM3 of the creation request, so a repeated out_trade_no is told apart from a conflicting one.
    request_digest = fields.CharField(max_length=64)
    amount_fen = fields.BigIntField()
    subject = fields.CharField(max_length=128)
    order_type = fields.CharField(max_length=16)
    health_card_id = fields.CharField(max_length=64, null=True)
    notify_url = fields.CharField(max_length=512)
    return_url = fields.CharField(max_length=512, default="")
    status = fields.CharEnumField(OrderStatus, max_length=20, default=OrderStatus.created)
    channel = fields.CharField(max_length=16, null=True)
    method = fields.CharField(max_length=24, null=True)
    channel_trade_no = fields.CharField(max_length=64, default="")
    paid_fen = fields.BigIntField(default=0)
    insurance_fen = fields.BigIntField(default=0)
    refunded_fen = fields.BigIntField(default=0)  # succeeded plus in-flight refunds
    expires_at = fields.DatetimeField()
    paid_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)
    # Why the channel refused the last attempt (counter payments), shown to the institution.
    failure_reason = fields.CharField(max_length=255, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "cashier_order"
        unique_together = (("institution_id", "out_trade_no"),)
        indexes = (("status", "expires_at"), ("status", "updated_at"), ("institution_id", "paid_at"))


class Refund(Model):
    refund_no = fields.CharField(max_length=32, primary_key=True)
    order: fields.ForeignKeyRelation[Order] = fields.ForeignKeyField(
        "cashier.Order", related_name="refunds", on_delete=fields.RESTRICT
    )
    institution_id = fields.CharField(max_length=40)
    out_refund_no = fields.CharField(max_length=64)
    amount_fen = fields.BigIntField()
    reason = fields.CharField(max_length=255, default="")
    status = fields.CharEnumField(RefundStatus, max_length=12, default=RefundStatus.processing)
    channel_refund_no = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "cashier_refund"
        unique_together = (("institution_id", "out_refund_no"),)
        indexes = (("status", "updated_at"), ("institution_id", "finished_at"))


# Transactional outbox: written in the same transaction (or statement) as the state change it reports.
class Notification(Model):
    id = fields.BigIntField(primary_key=True)
    institution_id = fields.CharField(max_length=40)
    order_no = fields.CharField(max_length=32, db_index=True)
    out_trade_no = fields.CharField(max_length=64)
    event = fields.CharField(max_length=24)
    url = fields.CharField(max_length=512)
    body = fields.TextField()
    status = fields.CharEnumField(NotificationStatus, max_length=10, default=NotificationStatus.pending)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    lease_owner = fields.CharField(max_length=32, null=True)
    lease_until = fields.DatetimeField(null=True)
    last_error = fields.CharField(max_length=255, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    delivered_at = fields.DatetimeField(null=True)

    class Meta:
        table = "cashier_notification"
        indexes = (("status", "next_attempt_at"),)


class NotificationAttempt(Model):
    id = fields.BigIntField(primary_key=True)
    notification: fields.ForeignKeyRelation[Notification] = fields.ForeignKeyField(
        "cashier.Notification", related_name="attempt_log", on_delete=fields.CASCADE
    )
    number = fields.IntField()
    http_status = fields.IntField(null=True)
    outcome = fields.CharField(max_length=16)  # delivered | refused | error
    detail = fields.CharField(max_length=255, default="")
    duration_ms = fields.IntField(default=0)
    at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "cashier_notification_attempt"


# A resident account's payment account at a channel (免密/代扣 agreement), so that the
# dynamic code can carry the channel's payment code as TOKEN (二码合一).
class PaymentAgreement(Model):
    id = fields.BigIntField(primary_key=True)
    account_id = fields.CharField(max_length=24, db_index=True)
    channel = fields.CharField(max_length=16)
    agreement_id = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "cashier_payment_agreement"
        unique_together = (("account_id", "channel"),)
