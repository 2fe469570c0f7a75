"""Unified cashier: orders, payment channels, callbacks, notifications, refunds,
reconciliation. Uses cardcore, never the web layer; its blueprint is mounted by openplatform."""
