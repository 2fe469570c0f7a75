"""The one settings object, read from ``EHC_*`` environment variables and an optional ``.env``."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

ENVIRONMENTS = ("dev", "test", "prod")


class SettingsError(ValueError):
    """A setting has a value the platform cannot run with."""


def _env_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Settings:
    env: str = "dev"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    base_url: str = ""
    var_dir: Path = Path("var")
    database_url: str = ""
    redis_url: str = ""
    key_file: str = ""
    mount_mocks: bool | None = None
    dynamic_code_ttl_s: int = 60
    issuer_id: str = ""
    family_limit: int = 5
    signature_window_s: int = 300
    nonce_ttl_s: int = 600
    client_cache_ttl_s: int = 30
    event_flush_ms: int = 250  # how often each server worker writes queued code events
    registrations_per_hour: int = 30
    proxies_count: int = 0
    log_level: str = "INFO"
    log_json: bool = True
    # outside services (identity side); empty values are filled in by resolved():
    # with mocks mounted they point at /_mock/ on base_url and use development key
    # material under var_dir, otherwise at the real WeChat and Alipay endpoints.
    wechat_app_id: str = ""  # official account (公众号) used for H5 OAuth
    wechat_app_secret: str = ""
    wechat_mini_app_id: str = ""  # mini-program (小程序)
    wechat_mini_app_secret: str = ""
    wechat_api_base: str = ""  # https://api.weixin.qq.com/
    wechat_oauth_base: str = ""  # https://open.weixin.qq.com/connect/
    alipay_app_id: str = ""
    alipay_gateway: str = ""  # https://openapi.alipay.com/gateway.do
    alipay_oauth_url: str = ""  # https://openauth.alipay.com/oauth2/publicAppAuthorize.htm (H5 login)
    alipay_app_private_key_file: str = ""  # the app's RSA private key (PEM)
    alipay_public_key_file: str = ""  # Alipay's RSA public key (PEM), checks its answers
    sms_url: str = ""
    sms_sign_name: str = "电子健康卡"
    face_url: str = ""
    registry_url: str = ""
    provider_timeout_s: int = 10
    # cashier
    order_expire_minutes: int = 30
    micropay_wait_s: int = 30  # how long a counter payment waits for a resident still entering a password
    run_worker: bool = True  # serve also runs the background worker (notifications, sweeper)
    worker_poll_ms: int = 500
    notify_lease_s: int = 60  # a claimed notification returns to the queue when its worker died
    sweep_interval_s: int = 30
    channel_query_after_s: int = 60  # a payment or refund silent this long is asked about at the channel

    # Environment variable name for each field, e.g. EHC_DATABASE_URL.
    @staticmethod
    def env_name(name: str) -> str:
        return f"EHC_{name.upper()}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, dotenv: bool = True) -> "Settings":
        if environ is None:
            if dotenv:
                _load_dotenv()
            environ = dict(os.environ)
        values: dict = {}
        for f in fields(cls):
            raw = environ.get(cls.env_name(f.name))
            if raw is None:
                continue
            try:
                values[f.name] = _convert(f.name, f.type, raw)
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"{cls.env_name(f.name)}: {exc}") from None
        return cls(**values).resolved()

    def resolved(self) -> "Settings":
        """Fill the defaults that depend on other settings and check the values."""
        if self.env not in ENVIRONMENTS:
            raise SettingsError(f"EHC_ENV must be one of {', '.join(ENVIRONMENTS)}, not {self.env!r}")
        changes: dict = {}
        var_dir = Path(self.var_dir)
        changes["var_dir"] = var_dir
        if not self.database_url:
            changes["database_url"] = f"sqlite://{var_dir / 'ehc.sqlite3'}"
        if self.mount_mocks is None:
            changes["mount_mocks"] = self.env != "prod"
        if not self.base_url:
            changes["base_url"] = f"http://{self.host}:{self.port}"
        mocks = changes.get("mount_mocks", self.mount_mocks) and self.env != "prod"
        changes.update(self._provider_defaults(changes.get("base_url", self.base_url), var_dir, mocks))
        if self.provider_timeout_s < 1:
            raise SettingsError("EHC_PROVIDER_TIMEOUT_S must be at least 1 second")
        if self.dynamic_code_ttl_s < 10:
            raise SettingsError("EHC_DYNAMIC_CODE_TTL_S must be at least 10 seconds")
        if self.workers < 1:
            raise SettingsError("EHC_WORKERS must be at least 1")
        if not 1 <= self.order_expire_minutes <= 7 * 24 * 60:
            raise SettingsError("EHC_ORDER_EXPIRE_MINUTES must be between 1 and 10080")
        for name in ("worker_poll_ms", "notify_lease_s", "sweep_interval_s", "channel_query_after_s"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{self.env_name(name)} must be at least 1")
        if self.event_flush_ms < 10:
            raise SettingsError("EHC_EVENT_FLUSH_MS must be at least 10 milliseconds")
        return replace(self, **changes)

    def _provider_defaults(self, base_url: str, var_dir: Path, mocks: bool) -> dict:
        """Outside-service settings left empty: the mocks on this server (never in prod), or the real services."""
        mock = f"{base_url.rstrip('/')}/_mock"
        if mocks:
            defaults = {
                "wechat_app_id": "wx0de0000000e4c001",
                "wechat_app_secret": "dev-wechat-h5-secret",
                "wechat_mini_app_id": "wx0de0000000e4c002",
                "wechat_mini_app_secret": "dev-wechat-mini-secret",
                "wechat_api_base": f"{mock}/wechat/",
                "wechat_oauth_base": f"{mock}/wechat/connect/",
                "alipay_app_id": "2021000000000001",
                "alipay_gateway": f"{mock}/alipay/gateway.do",
                "alipay_oauth_url": f"{mock}/alipay/oauth2/publicAppAuthorize.htm",
                "alipay_app_private_key_file": str(var_dir / "dev-alipay-app.pem"),
                "alipay_public_key_file": str(var_dir / "dev-alipay-gateway.pub.pem"),
                "sms_url": f"{mock}/sms",
                "face_url": f"{mock}/face",
                "registry_url": f"{mock}/registry",
            }
        else:
            defaults = {
                "wechat_api_base": "https://api.weixin.qq.com/",
                "wechat_oauth_base": "https://open.weixin.qq.com/connect/",
                "alipay_gateway": "https://openapi.alipay.com/gateway.do",
                "alipay_oauth_url": "https://openauth.alipay.com/oauth2/publicAppAuthorize.htm",
            }
        return {name: value for name, value in defaults.items() if not getattr(self, name)}

    @property
    def provider_urls(self) -> dict[str, str]:
        """Where each outside service is reached, by setting name."""
        names = (
            "wechat_api_base", "wechat_oauth_base", "alipay_gateway", "alipay_oauth_url", "sms_url", "face_url", "registry_url",
        )
        return {name: getattr(self, name) for name in names}

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    @property
    def uses_fakeredis(self) -> bool:
        return not self.redis_url

    @property
    def dev_key_file(self) -> Path:
        return Path(self.var_dir) / "dev-keys.json"

    def production_problems(self) -> list[str]:
        """Why this configuration must not serve real residents; empty when it may."""
        problems = []
        if self.uses_sqlite:
            problems.append(
                "EHC_DATABASE_URL points at SQLite; production needs PostgreSQL "
                "(postgres://user:password@host:5432/dbname)."
            )
        if self.uses_fakeredis:
            problems.append(
                "EHC_REDIS_URL is not set, so the in-process fake Redis would be used; "
                "production needs a real Redis shared by every worker (redis://host:6379/0)."
            )
        if not self.key_file:
            problems.append(
                "EHC_KEY_FILE is not set, so generated development keys would be used; "
                "production needs the key file issued for this platform."
            )
        elif Path(self.key_file).resolve() == self.dev_key_file.resolve():
            problems.append(f"EHC_KEY_FILE points at the development key file {self.key_file}.")
        if self.mount_mocks:
            problems.append(
                "EHC_MOUNT_MOCKS is on; the mock payment, WeChat, Alipay, SMS and registry "
                "gateways must never be reachable in production."
            )
        for name, url in self.provider_urls.items():
            if "/_mock/" in url:
                problems.append(f"{self.env_name(name)} points at a mock gateway ({url}).")
        return problems


def _convert(name: str, annotation, raw: str):
    text = str(annotation)
    if "bool" in text:
        return _env_bool(raw)
    if "int" in text:
        return int(raw)
    if "Path" in text:
        return Path(raw)
    return raw


def _load_dotenv() -> None:
    path = Path(os.environ.get("EHC_DOTENV", ".env"))
    if path.is_file():
        from dotenv import load_dotenv

        load_dotenv(path, override=False)
