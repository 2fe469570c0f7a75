"""Cashier refusals, in the platform's one error hierarchy (API.md codes and statuses)."""

from __future__ import annotations

from cardcore.errors import PlatformError


class OrderNotFound(PlatformError):
    code, status, message = "ORDER_NOT_FOUND", 404, "order not found"


class RefundNotFound(PlatformError):
    code, status, message = "REFUND_NOT_FOUND", 404, "refund not found"


class NotificationNotFound(PlatformError):
    code, status, message = "NOTIFICATION_NOT_FOUND", 404, "notification not found"


class DuplicateOutTradeNo(PlatformError):
    code, status, message = "DUPLICATE_OUT_TRADE_NO", 409, "out_trade_no was already used for a different order"


class DuplicateOutRefundNo(PlatformError):
    code, status, message = "DUPLICATE_OUT_REFUND_NO", 409, "out_refund_no was already used for a different refund"


class OrderNotPayable(PlatformError):
    code, status, message = "ORDER_NOT_PAYABLE", 409, "the order cannot be paid any more"


class OrderAlreadyPaid(PlatformError):
    code, status, message = "ORDER_ALREADY_PAID", 409, "the order is paid; refund it instead"


class OrderNotRefundable(PlatformError):
    code, status, message = "ORDER_NOT_REFUNDABLE", 409, "only paid orders can be refunded"


class RefundExceedsPaid(PlatformError):
    code, status, message = "REFUND_EXCEEDS_PAID", 422, "refunds would exceed the paid amount"


class ChannelNotAvailable(PlatformError):
    code, status, message = "CHANNEL_NOT_AVAILABLE", 409, "this payment channel is not open for the institution"


class PayCodeRequired(PlatformError):
    code, status, message = "PAY_CODE_REQUIRED", 422, "scan the resident's combined pay code or a channel payment code"


class AmountMismatch(PlatformError):
    code, status, message = "AMOUNT_MISMATCH", 400, "the channel reports another amount than the order's"
