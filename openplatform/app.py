"""Sanic application factory: the composition root of the platform."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

import ujson

from sanic import Sanic
from sanic_ext import Extend
from sanic_ext.extensions.openapi.extension import OpenAPIExtension

from cardcore import outbound
from cardcore.codeevents import EventFlusher
from cardcore.db import CORE_APPS
from cardcore.keyvault import KeyVault, KeyVaultError
from cardcore.runtime import Runtime
from cardcore.settings import Settings, SettingsError
from cardcore.providers import Providers
from cashier.worker import Worker
from openplatform import admin, cashier, docs, h5, health, institution, observability, partner, resident
from openplatform.errors import EnvelopeErrorHandler

log = logging.getLogger("ehc.app")

APP_NAME = "ehc"
# Every model app of the platform, in dependency order (label -> package).
MODEL_APPS = {**CORE_APPS, "cashier": "cashier"}


def startup_problems(settings: Settings) -> list[str]:
    """Reasons this configuration must not start; only production is this strict."""
    if settings.env != "prod":
        return []
    problems = settings.production_problems()
    if settings.key_file and not problems:
        try:
            if KeyVault.load(settings.key_file).is_dev:
                problems.append(f"EHC_KEY_FILE {settings.key_file} holds development keys.")
        except KeyVaultError as exc:
            problems.append(str(exc))
    return problems


def create_app(settings: Settings | None = None, name: str = APP_NAME) -> Sanic:
    settings = settings or Settings.from_env()
    problems = startup_problems(settings)
    if problems:
        raise SettingsError("refusing to start in production:\n- " + "\n- ".join(problems))

    app = Sanic(
        name,
        error_handler=EnvelopeErrorHandler(),
        log_config=_sanic_log_config(),
        dumps=partial(ujson.dumps, ensure_ascii=False, escape_forward_slashes=False),
    )
    app.config.update(
        ACCESS_LOG=False,  # our own access log in observability carries the request id
        FALLBACK_ERROR_FORMAT="json",
        PROXIES_COUNT=settings.proxies_count,
        REQUEST_MAX_SIZE=1_000_000,
        KEEP_ALIVE_TIMEOUT=75,
        OAS_UI_DEFAULT=None,
        OAS_UI_REDOC=False,
        OAS_UI_SWAGGER=False,
        OAS_URL_PREFIX="/docs",
        OAS_URI_TO_JSON="/openapi.json",
        OAS_IGNORE_HEAD=True,
        OAS_IGNORE_OPTIONS=True,
    )
    app.ctx.settings = settings
    # Only the OpenAPI document of sanic-ext: its built-in dependency injection would run a
    # signal handler on every request even when switched off in the config.
    Extend(
        app,
        extensions=[OpenAPIExtension],
        built_in_extensions=False,
        config={"cors": False, "http_auto_options": False, "http_auto_head": False, "injection": False},
    )
    _describe_api(app)

    observability.install(app)
    blueprints = (
        health.bp, docs.bp, institution.bp, partner.bp, admin.bp, resident.bp, h5.bp,
        cashier.api, cashier.pages, cashier.admin_api,
    )
    for blueprint in blueprints:
        app.blueprint(blueprint)
    if settings.mount_mocks:
        from mocks import mock_blueprints

        for blueprint in mock_blueprints():
            app.blueprint(blueprint)

    @app.before_server_start
    async def open_runtime(app: Sanic) -> None:
        observability.configure_logging(settings.log_level, settings.log_json)
        app.ctx.rt = await Runtime.start(settings, MODEL_APPS)
        app.ctx.providers = Providers.from_settings(settings)

    @app.after_server_start
    async def start_background_work(app: Sanic) -> None:
        app.ctx.event_flusher = EventFlusher(app.ctx.rt, settings.event_flush_ms / 1000).start()
        if settings.run_worker:
            app.ctx.worker = Worker(app.ctx.rt)
            # Not an app task: Sanic cancels those the moment it is told to stop, and a
            # delivery cut off there is sent again once its lease runs out.
            app.ctx.worker_task = asyncio.get_running_loop().create_task(app.ctx.worker.run(), name="cashier_worker")

    @app.before_server_stop
    async def finish_background_work(app: Sanic) -> None:
        worker = getattr(app.ctx, "worker", None)
        if worker is not None:
            # Deliveries under way finish and record their outcome (at most one channel timeout).
            worker.stop()
            try:
                await asyncio.wait_for(app.ctx.worker_task, settings.provider_timeout_s + 1)
            except asyncio.TimeoutError:  # cancelled: its leases run out and the rows are delivered later
                log.warning("cashier worker did not stop in time")
            except Exception:
                log.exception("cashier worker failed")
        flusher = getattr(app.ctx, "event_flusher", None)
        if flusher is not None:
            await flusher.stop()

    @app.after_server_stop
    async def close_runtime(app: Sanic) -> None:
        rt = getattr(app.ctx, "rt", None)
        if rt is not None:
            await rt.stop()
        await outbound.close_shared_session()

    return app


def _describe_api(app: Sanic) -> None:
    app.ext.openapi.describe(
        "电子健康卡开放平台 / E-health card open platform",
        version="1",
        description="Resident electronic health card, code verification and unified cashier. "
        "Signed calls: see the X-EHC-* headers.",
    )
    app.ext.openapi.add_security_scheme(
        "ehc_signature",
        "apiKey",
        location="header",
        name="X-EHC-Signature",
        description="hex(HMAC-SM3(secret, METHOD\\nPATH_WITH_QUERY\\nTIMESTAMP\\nNONCE\\nhex(SM3(body)))) "
        "with X-EHC-Client, X-EHC-Timestamp (unix ms) and X-EHC-Nonce",
    )
    app.ext.openapi.add_security_scheme(
        "resident_session",
        "http",
        scheme="bearer",
        description="token from /mp/v1/login/*; H5 pages use the ehc_session cookie plus the X-EHC-H5: 1 header",
    )


def _sanic_log_config() -> dict:
    """Sanic's own loggers stay quiet; the platform logs JSON through ``ehc.*``."""
    from sanic.log import LOGGING_CONFIG_DEFAULTS

    config = {**LOGGING_CONFIG_DEFAULTS}
    config["loggers"] = {**config["loggers"]}
    config["loggers"]["sanic.root"] = {**config["loggers"]["sanic.root"], "level": "WARNING"}
    return config
