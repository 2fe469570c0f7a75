"""Request ids, structured logs with personal data masked, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import random
import sys
import time
from bisect import bisect_left
from datetime import datetime, timezone
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw

from cardcore.pii import mask_mapping, mask_text

REQUEST_ID_HEADER = "X-Request-Id"
_INBOUND_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_STANDARD_RECORD_KEYS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

HTTP_REQUESTS = Counter("ehc_http_requests_total", "HTTP requests served", ["method", "route", "status"])
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
HTTP_LATENCY = Histogram("ehc_http_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS_S)
REFUSALS = Counter("ehc_signed_request_refusals_total", "Signed requests refused", ["code"])


def request_id_of(request: Request | None) -> str:
    if request is None:
        return ""
    rid = getattr(request.ctx, "request_id", None)
    if rid is None:
        rid = request.ctx.request_id = _new_request_id(request)
    return rid


def _new_request_id(request: Request) -> str:
    inbound = request.headers.get(REQUEST_ID_HEADER, "")
    # A correlation id, not a secret: the fast generator spares a getrandom() call per request.
    return inbound if _INBOUND_REQUEST_ID.match(inbound) else f"{random.getrandbits(128):032x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; message and extra fields pass through the PII mask."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_text(record.getMessage()),
        }
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_RECORD_KEYS}
        if extra:
            entry.update(mask_mapping(extra))
        if record.exc_info:
            entry["exc"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", as_json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("ehc")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


access_log = logging.getLogger("ehc.access")


@lru_cache(maxsize=4096)
def _series(metric, *labels):
    """A metric's child for these label values, looked up once: ``labels()`` locks and
    converts on every call, and routes, methods and statuses are few."""
    return metric.labels(*(str(label) for label in labels))


class RequestTally:
    """This process's requests and their latencies, added to the Prometheus metrics in batches.

    With several workers every metric update takes a lock, asks the OS for the process id
    and writes the shared metrics file; the three updates of each request cost more than
    the rest of the middleware. Requests are counted here instead, and ``flush`` adds the
    counts to the metrics: every ``FLUSH_S`` in each server worker, before this process
    answers a scrape, and when the worker stops. Another worker's requests reach a
    scrape at most ``FLUSH_S`` late.
    """

    FLUSH_S = 1.0
    _BOUNDS = (*LATENCY_BUCKETS_S, float("inf"))  # a histogram's buckets, +Inf last

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[str, list] = {}  # route -> [sum of seconds, count per bucket]

    def record(self, method: str, route: str, status: int, elapsed_s: float) -> None:
        key = (method, route, status)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        per_route = self._latency.get(route)
        if per_route is None:
            per_route = self._latency[route] = [0.0, [0] * len(self._BOUNDS)]
        per_route[0] += elapsed_s
        # The first bucket whose upper bound is >= the latency, as Histogram.observe picks it.
        per_route[1][bisect_left(self._BOUNDS, elapsed_s)] += 1

    def flush(self) -> None:
        requests, self._requests = self._requests, {}
        latency, self._latency = self._latency, {}
        for labels, count in requests.items():
            _series(HTTP_REQUESTS, *labels).inc(count)
        for route, (total_s, counts) in latency.items():
            # What ``observe`` adds, for a whole batch: the sum, and each bucket's count
            # (buckets hold their own counts; the exposition makes them cumulative).
            histogram = _series(HTTP_LATENCY, route)
            histogram._sum.inc(total_s)
            for bucket, count in zip(histogram._buckets, counts):
                if count:
                    bucket.inc(count)

    async def flush_every_period(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_S)
            try:
                self.flush()
            except Exception:  # e.g. the metrics directory went away: keep serving, say so
                logging.getLogger("ehc.metrics").exception("request metrics could not be written")


REQUEST_TALLY = RequestTally()


def install(app: Sanic) -> None:
    @app.after_server_start
    async def start_metrics_flush(app: Sanic) -> None:
        app.ctx.metrics_flush = asyncio.get_running_loop().create_task(
            REQUEST_TALLY.flush_every_period(), name="metrics_flush"
        )

    @app.before_server_stop
    async def stop_metrics_flush(app: Sanic) -> None:
        task = getattr(app.ctx, "metrics_flush", None)
        if task is not None:
            task.cancel()
        REQUEST_TALLY.flush()

    @app.on_request(priority=100)
    async def start_request(request: Request) -> None:
        request.ctx.started = time.perf_counter()

    @app.on_response(priority=100)
    async def finish_request(request: Request, response: HTTPResponse) -> None:
        response.headers[REQUEST_ID_HEADER] = request_id_of(request)
        started = getattr(request.ctx, "started", None)
        if started is None:
            return
        elapsed = time.perf_counter() - started
        route = request.route.path if request.route else "(unmatched)"
        REQUEST_TALLY.record(request.method, route, response.status, elapsed)
        if not access_log.isEnabledFor(logging.INFO):  # spare building the record's fields
            return
        access_log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            extra={
                "request_id": request_id_of(request),
                "status": response.status,
                "duration_ms": round(elapsed * 1000, 2),
                "client_id": getattr(request.ctx, "client_id", None),
            },
        )


def metrics_response() -> HTTPResponse:
    REQUEST_TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return raw(body, content_type="text/plain; version=0.0.4; charset=utf-8")
