"""Health endpoints: liveness, readiness (database and cache) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from sanic import Blueprint, Request
from sanic.response import json

from cardcore import db
from openplatform.errors import envelope
from openplatform.observability import metrics_response

bp = Blueprint("health")
log = logging.getLogger("ehc.health")


@bp.get("/healthz")
async def healthz(request: Request):
    """The process is up."""
    return json({"status": "ok"})


@bp.get("/readyz")
async def readyz(request: Request):
    """The database and the cache answer; a load balancer routes traffic only when 200."""
    rt = request.app.ctx.rt
    checks = {}
    for name, probe in (("database", db.ping), ("cache", rt.redis.ping)):
        try:
            await asyncio.wait_for(probe(), timeout=2)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; the reason goes to the log only
            log.warning("readiness check failed", extra={"check": name, "error": exc.__class__.__name__})
            checks[name] = "unavailable"
    if all(v == "ok" for v in checks.values()):
        return json({"status": "ready", **checks})
    return envelope(request, 503, "NOT_READY", "database or cache unavailable", details=checks)


@bp.get("/metrics")
async def metrics(request: Request):
    return metrics_response()
