"""The HTTP baseline of ``bench/codes.py``: a bare Sanic app with one JSON route.

Served the way ``python -m openplatform serve`` serves the platform (the same worker
manager, worker count, JSON encoder and no access log), so the ratio of the two measures
what the platform does per request, not how Sanic is started::

    python bench/plain_app.py --port 8100 --workers 2
    curl http://127.0.0.1:8100/plain        # {"result":"ok"}
"""

from __future__ import annotations

import argparse
from functools import partial

import ujson
from sanic import Request, Sanic
from sanic.response import json
from sanic.worker.loader import AppLoader

PATH = "/plain"


def create_app() -> Sanic:
    app = Sanic("ehc_bench_plain", dumps=partial(ujson.dumps, ensure_ascii=False, escape_forward_slashes=False))
    app.config.update(ACCESS_LOG=False, KEEP_ALIVE_TIMEOUT=75)

    @app.get(PATH)
    async def plain(request: Request):
        return json({"result": "ok"})

    @app.get("/healthz")
    async def healthz(request: Request):
        return json({"status": "ok"})

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    loader = AppLoader(factory=create_app)
    app = loader.load()
    app.prepare(host=args.host, port=args.port, workers=args.workers, single_process=args.workers == 1, motd=False)
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
