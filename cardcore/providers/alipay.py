"""Alipay login: a mini-program / H5 ``auth_code`` becomes the resident's Alipay user id.

Uses python-alipay-sdk: ``alipay.system.oauth.token`` through ``AliPay.server_api``,
signed RSA2 (SHA256withRSA) with the app's private key, the answer checked against
Alipay's public key. The SDK is pointed at ``settings.alipay_gateway`` by setting its
``_gateway`` attribute; in dev and test that is the mock under ``/_mock/alipay/``.

Development key material: with mocks mounted the key files default to
``var/dev-alipay-app.pem`` (the app's private key) and ``var/dev-alipay-gateway.pub.pem``
(the mock gateway's public key); ``ensure_dev_keys`` creates them, and the mock
gateway's own pair, on first use.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from alipay import AliPay
from alipay.exceptions import AliPayException, AliPayValidationError
from alipay.utils import AliPayConfig
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cardcore.providers._threads import run_sync
from cardcore.providers.errors import LoginFailed, ProviderError, ProviderUnavailable

PROVIDER = "alipay"
OAUTH_TOKEN_METHOD = "alipay.system.oauth.token"

# sub_codes that mean "this auth_code is no good" (the resident's side).
CODE_REFUSED = {"isv.code-invalid", "isv.code-expired", "isv.auth-code-invalid"}


# --- development key material --------------------------------------------------


@dataclass(frozen=True)
class DevAlipayKeys:
    """Where the development RSA 2048 keys live under ``var_dir``."""

    app_private: Path  # the platform signs requests with it (EHC_ALIPAY_APP_PRIVATE_KEY_FILE)
    app_public: Path  # what would be uploaded to Alipay; the mock derives it from app_private
    gateway_private: Path  # the mock gateway signs its answers with it
    gateway_public: Path  # the platform checks answers with it (EHC_ALIPAY_PUBLIC_KEY_FILE)


def dev_key_paths(var_dir: str | os.PathLike) -> DevAlipayKeys:
    var_dir = Path(var_dir)
    return DevAlipayKeys(
        app_private=var_dir / "dev-alipay-app.pem",
        app_public=var_dir / "dev-alipay-app.pub.pem",
        gateway_private=var_dir / "dev-alipay-gateway.pem",
        gateway_public=var_dir / "dev-alipay-gateway.pub.pem",
    )


_dev_keys_lock = threading.Lock()


def ensure_dev_keys(var_dir: str | os.PathLike) -> DevAlipayKeys:
    """Create the development key pairs under ``var_dir`` unless they exist; safe across processes.

    A private key file is created at most once (linked into place, so two workers starting
    together agree on one key); its public key file is derived from it.
    """
    paths = dev_key_paths(var_dir)
    if all(p.exists() for p in (paths.app_private, paths.app_public, paths.gateway_private, paths.gateway_public)):
        return paths
    with _dev_keys_lock:
        for private, public in ((paths.app_private, paths.app_public), (paths.gateway_private, paths.gateway_public)):
            key = _private_key_once(private)
            pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            if not public.exists() or public.read_bytes() != pem:
                _write_replace(public, pem, mode=0o644)
    return paths


def _private_key_once(path: Path) -> rsa.RSAPrivateKey:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)  # fails if another process got there first; theirs wins
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _write_replace(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# --- the login client ------------------------------------------------------------


class AlipayLogin:
    """``user_id_from_auth_code(auth_code)``: who the resident is at Alipay."""

    def __init__(
        self,
        *,
        app_id: str,
        gateway: str,
        app_private_key_file: str | os.PathLike,
        alipay_public_key_file: str | os.PathLike,
        timeout: float = 10,
        dev_var_dir: str | os.PathLike | None = None,
        oauth_url: str = "",
    ) -> None:
        self.app_id = app_id
        self.gateway = gateway
        self.oauth_url = oauth_url
        self.app_private_key_file = Path(app_private_key_file) if app_private_key_file else None
        self.alipay_public_key_file = Path(alipay_public_key_file) if alipay_public_key_file else None
        self.timeout = timeout
        self._dev_var_dir = dev_var_dir
        self._sdk: AliPay | None = None
        self._sdk_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "AlipayLogin":
        dev = dev_key_paths(settings.var_dir)
        configured = {settings.alipay_app_private_key_file, settings.alipay_public_key_file}
        uses_dev_keys = bool(configured & {str(dev.app_private), str(dev.gateway_public)})
        return cls(
            app_id=settings.alipay_app_id,
            gateway=settings.alipay_gateway,
            app_private_key_file=settings.alipay_app_private_key_file,
            alipay_public_key_file=settings.alipay_public_key_file,
            timeout=settings.provider_timeout_s,
            dev_var_dir=settings.var_dir if uses_dev_keys and settings.env != "prod" else None,
            oauth_url=settings.alipay_oauth_url,
        )

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """Alipay's web authorisation page for H5 inside the Alipay app (auth_base: the user id only)."""
        query = urlencode({"app_id": self.app_id, "scope": "auth_base", "redirect_uri": redirect_uri, "state": state})
        return f"{self.oauth_url}?{query}"

    def __repr__(self) -> str:
        return f"AlipayLogin(app_id={self.app_id!r}, gateway={self.gateway!r})"

    def _client(self) -> AliPay:
        """The SDK object, built on first use (reads the key files; creates dev keys if due)."""
        with self._sdk_lock:
            if self._sdk is None:
                if not (self.app_id and self.gateway and self.app_private_key_file and self.alipay_public_key_file):
                    raise ProviderUnavailable(PROVIDER, "not configured")
                if self._dev_var_dir is not None:
                    ensure_dev_keys(self._dev_var_dir)
                try:
                    app_private = self.app_private_key_file.read_text()
                    alipay_public = self.alipay_public_key_file.read_text()
                except OSError as exc:
                    raise ProviderUnavailable(PROVIDER, f"key file unreadable: {exc.__class__.__name__}") from None
                sdk = AliPay(
                    appid=self.app_id,
                    app_private_key_string=app_private,
                    alipay_public_key_string=alipay_public,
                    sign_type="RSA2",
                    config=AliPayConfig(timeout=self.timeout),
                )
                sdk._gateway = self.gateway
                self._sdk = sdk
            return self._sdk

    async def user_id_from_auth_code(self, auth_code: str) -> str:
        """The Alipay user id (2088…) of the resident who authorised ``auth_code``."""
        if not auth_code:
            raise LoginFailed(PROVIDER, "empty auth_code")

        def exchange() -> dict:
            return self._client().server_api(OAUTH_TOKEN_METHOD, grant_type="authorization_code", code=auth_code)

        try:
            answer = await run_sync(exchange)
        except AliPayValidationError:
            raise ProviderError(PROVIDER, "the answer's signature does not verify", provider_code="bad-sign") from None
        except AliPayException as exc:
            raise _translate(exc) from None
        except OSError as exc:  # URLError, HTTPError, timeouts, refused connections
            raise ProviderUnavailable(PROVIDER, exc.__class__.__name__) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not JSON, or not Alipay's shape
            raise ProviderUnavailable(PROVIDER, f"unreadable answer: {exc.__class__.__name__}") from None
        user_id = answer.get("user_id") if isinstance(answer, dict) else None
        if not user_id or not isinstance(user_id, str):
            raise ProviderUnavailable(PROVIDER, "answer without user_id")
        return user_id


def error_of(exc: AliPayException) -> dict:
    """The ``{code, msg, sub_code, sub_msg}`` object of an Alipay error answer, as far as it can be read.

    python-alipay-sdk keeps the raw answer only in the exception's text.
    """
    text = str(exc)
    start = text.find("message:")
    raw = text[start + len("message:") :] if start >= 0 else ""
    try:
        document = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(document, dict):
        return {}
    for key, value in document.items():
        if key.endswith("_response") and isinstance(value, dict):
            return value
    return {}


def _translate(exc: AliPayException):
    error = error_of(exc)
    code = str(error.get("code", ""))
    sub_code = str(error.get("sub_code", ""))
    reason = str(error.get("sub_msg") or error.get("msg") or "")
    if sub_code in CODE_REFUSED:
        return LoginFailed(PROVIDER, reason, provider_code=sub_code)
    if code == "20000" or sub_code.startswith(("isp.", "aop.")):  # service unavailable on Alipay's side
        return ProviderUnavailable(PROVIDER, reason, provider_code=sub_code or code)
    return ProviderError(PROVIDER, reason, provider_code=sub_code or code or None)
