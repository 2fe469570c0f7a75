"""Command line: ``python -m openplatform serve | worker | migrate | seed-demo | create-admin | keys``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from functools import partial

from cardcore import db
from cardcore.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"configuration error: {exc}")


def cmd_serve(args: argparse.Namespace) -> None:
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from cardcore.codes import codec
    from openplatform.app import create_app, startup_problems

    settings = _settings()
    problems = startup_problems(settings)
    if problems:
        sys.exit("refusing to start in production:\n" + "\n".join(f"- {p}" for p in problems))
    workers = args.workers or settings.workers
    if workers > 1 and settings.uses_fakeredis:
        sys.exit("several workers need a shared Redis: set EHC_REDIS_URL (the in-process fake is per process)")
    if workers > 1:
        # Each worker writes its own metric files; /metrics adds them up.
        metrics_dir = settings.var_dir / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    if args.migrate:
        asyncio.run(_migrate(settings))
    _end_the_startup_wait_on_shutdown()
    loader = AppLoader(factory=partial(create_app, settings))
    app = loader.load()
    app.prepare(host=settings.host, port=settings.port, workers=workers, single_process=workers == 1, motd=False)
    print(
        f"serving the e-health card platform at {settings.base_url} ({settings.env}, {workers} worker(s), "
        f"dynamic codes on the {codec()} codec)",
        flush=True,
    )
    Sanic.serve(primary=app, app_loader=loader)


def _end_the_startup_wait_on_shutdown() -> None:
    """A SIGTERM or SIGINT while a worker is starting must still stop the server.

    Sanic's manager waits for every worker to report that it started before it acts on
    anything else. A signal in that wait terminates the workers, which then never report,
    and the manager waited for them forever (sanic-org/sanic#2997). The wait now ends once
    a shutdown has begun, and the manager goes on to stop as it does after start-up.
    """
    from sanic.worker.manager import WorkerManager

    all_started = WorkerManager._all_workers_ack  # serve runs once per process: wrapped once

    def all_started_or_shutting_down(manager: WorkerManager) -> bool:
        return manager._shutting_down or all_started(manager)

    WorkerManager._all_workers_ack = all_started_or_shutting_down


async def _migrate(settings: Settings) -> None:
    from openplatform.app import MODEL_APPS

    await db.migrate(settings.database_url, MODEL_APPS)


def cmd_migrate(args: argparse.Namespace) -> None:
    asyncio.run(_migrate(_settings()))
    print("migrations applied")


def cmd_worker(args: argparse.Namespace) -> None:
    """Deliver hospital notifications and sweep orders, without serving HTTP."""
    from cardcore.runtime import Runtime
    from cashier.worker import run_standalone
    from openplatform.app import MODEL_APPS
    from openplatform.observability import configure_logging

    from openplatform.app import startup_problems

    settings = _settings()
    problems = startup_problems(settings)
    if problems:
        sys.exit("refusing to start in production:\n" + "\n".join(f"- {p}" for p in problems))

    async def run() -> None:
        configure_logging(settings.log_level, settings.log_json)
        rt = await Runtime.start(settings, MODEL_APPS)
        try:
            await run_standalone(rt)
        finally:
            await rt.stop()

    print(f"cashier worker on {settings.env} ({'PostgreSQL' if not settings.uses_sqlite else 'SQLite'})", flush=True)
    asyncio.run(run())


def cmd_seed_demo(args: argparse.Namespace) -> None:
    from openplatform.demo import seed_demo

    settings = _settings()
    if settings.env == "prod":
        sys.exit("seed-demo creates well-known demo credentials and is not available in production")
    result = asyncio.run(seed_demo(settings))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        from openplatform.demo import print_table

        print_table(result)


def cmd_create_admin(args: argparse.Namespace) -> None:
    from openplatform.demo import create_admin

    result = asyncio.run(create_admin(_settings(), args.name))
    print(json.dumps(result, ensure_ascii=False, indent=2))


def cmd_keys(args: argparse.Namespace) -> None:
    from pathlib import Path

    from cardcore.keyvault import PURPOSES, KeyVault, KeyVaultError

    try:
        if args.keys_command == "generate":
            if Path(args.file).exists():
                sys.exit(f"{args.file} exists; a key file is never overwritten")
            KeyVault.generate(args.file, dev=False)
            print(f"new key file {args.file} (mode 0600); point EHC_KEY_FILE at it")
            return
        vault = KeyVault.open_for(_settings())
        if args.keys_command == "rotate":
            version = vault.rotate(args.purpose)
            print(f"{args.purpose} key is now version {version}; earlier versions stay usable for what they issued")
        else:
            print(json.dumps({p: vault.versions(p) for p in PURPOSES}))
    except KeyVaultError as exc:
        sys.exit(f"key vault: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m openplatform", description="E-health card open platform")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the platform (EHC_HOST/EHC_PORT)")
    serve.add_argument("--workers", type=int, default=0, help="worker processes (default EHC_WORKERS)")
    serve.add_argument("--migrate", action="store_true", help="apply migrations before serving")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("worker", help="deliver hospital notifications and sweep orders (serve runs one too)").set_defaults(
        func=cmd_worker
    )

    seed = sub.add_parser("seed-demo", help="create the demo institution, terminal, app and admin (idempotent)")
    seed.add_argument("--json", action="store_true", help="print credentials as JSON")
    seed.set_defaults(func=cmd_seed_demo)

    admin = sub.add_parser("create-admin", help="create an approved admin client and print its credentials once")
    admin.add_argument("name")
    admin.set_defaults(func=cmd_create_admin)

    keys = sub.add_parser("keys", help="manage the key vault (key bytes are never printed)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_sub.add_parser("generate", help="write a new production key file")
    generate.add_argument("file")
    rotate = keys_sub.add_parser("rotate", help="add a new version of a key (restart the workers afterwards)")
    rotate.add_argument("purpose", choices=["security", "protection", "data"])
    keys_sub.add_parser("versions", help="list the key versions of EHC_KEY_FILE")
    keys.set_defaults(func=cmd_keys)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
