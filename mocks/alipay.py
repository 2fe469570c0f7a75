"""Mock Alipay open-platform gateway (``gateway.do``) with real RSA2 signatures both ways.

python-alipay-sdk talks to it unchanged once its ``_gateway`` is
``<base_url>/_mock/alipay/gateway.do``:

- every request's ``sign`` is checked (SHA256withRSA over the sorted ``k=v`` pairs of all
  non-empty parameters but ``sign``) against the app's public key — the one derived from
  ``EHC_ALIPAY_APP_PRIVATE_KEY_FILE``, as if the app had uploaded it;
- every answer is ``{"<method>_response": {...}, "sign": "..."}``, signed over the exact
  text of the inner object with the mock gateway's private key
  (``var/dev-alipay-gateway.pem``, whose public half is ``EHC_ALIPAY_PUBLIC_KEY_FILE``).

Methods are looked up in ``GATEWAY_METHODS`` (method name -> async handler); add one with
``@gateway_method("alipay.trade.query")``. A handler gets the request, the common
parameters and the parsed ``biz_content``, and returns the inner answer object (or a page
for the browser) or raises ``GatewayError``; ``request.ctx.finish_answer(request, response)``,
when a handler sets it, gets the signed answer last. The trade methods live in ``alipay_trade``.

Mock control: ``POST /_mock/alipay/auth {user_id?, tamper_response?}`` → ``{auth_code, user_id}``
plays the resident authorising the mini-program (``my.getAuthCode``). With
``tamper_response: true`` the gateway's answer for that code is altered after signing
(another user id), as a man in the middle would, so the SDK must refuse it.
"""

from __future__ import annotations

import asyncio
import base64
import json as jsonlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json, redirect

from cardcore.providers.alipay import ensure_dev_keys
from mocks._common import body_of, cache, dumps, loads, settings_of

bp = Blueprint("mock_alipay", url_prefix="/_mock/alipay")

AUTH_CODE_TTL_S = 300
_KEY_AUTH_CODE = "mock:alipay:auth_code:{}"
_BEIJING = timezone(timedelta(hours=8))


class GatewayError(Exception):
    """An Alipay error answer: ``{code, msg, sub_code, sub_msg}``.

    ``key`` is where it goes: ``None`` for ``<method>_response``, or ``"error_response"``.
    ``signed``: whether the gateway signs it (it cannot when it does not know the app).
    """

    def __init__(self, code: str, msg: str, sub_code: str, sub_msg: str, *, key: str | None = None, signed=True):
        super().__init__(sub_code)
        self.body = {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}
        self.key = key
        self.signed = signed


def invalid_arguments(sub_code: str, sub_msg: str, **kwargs) -> GatewayError:
    return GatewayError("40002", "Invalid Arguments", sub_code, sub_msg, **kwargs)


GatewayHandler = Callable[[Request, dict, dict], Awaitable[dict]]
GATEWAY_METHODS: dict[str, GatewayHandler] = {}


def gateway_method(name: str):
    """Register the handler of one gateway method, e.g. ``@gateway_method("alipay.trade.query")``."""

    def register(handler: GatewayHandler) -> GatewayHandler:
        GATEWAY_METHODS[name] = handler
        return handler

    return register


# --- keys ----------------------------------------------------------------------


@lru_cache(maxsize=8)
def _load_private(path: str, mtime_ns: int):
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def _private_key(path: Path):
    return _load_private(str(path), path.stat().st_mtime_ns)


async def gateway_keys(request: Request):
    """(app public key, gateway private key) for this installation's settings."""
    settings = settings_of(request)
    dev = await asyncio.to_thread(ensure_dev_keys, settings.var_dir)
    app_public = _private_key(Path(settings.alipay_app_private_key_file)).public_key()
    return app_public, _private_key(dev.gateway_private)


def signing_string(params: dict[str, str]) -> str:
    """What an Alipay request signature covers: sorted ``k=v`` of non-empty parameters except ``sign``."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v != "")


def sign(private_key, text: str) -> str:
    return base64.b64encode(private_key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def signature_ok(public_key, text: str, signature: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature), text.encode(), padding.PKCS1v15(), hashes.SHA256())
        return True
    except (InvalidSignature, ValueError):
        return False


def answer(key: str, inner: dict, private_key=None, *, tamper=None) -> HTTPResponse:
    """``{"<key>": inner, "sign": …}`` with the signature over the exact inner text."""
    inner_text = dumps(inner)
    text = '{"' + key + '":' + inner_text
    if private_key is not None:
        signature = sign(private_key, inner_text)
        if tamper is not None:
            text = '{"' + key + '":' + dumps(tamper(inner))
        text += ',"sign":"' + signature + '"'
    text += "}"
    return HTTPResponse(text.encode(), content_type="application/json;charset=utf-8")


# --- the gateway -------------------------------------------------------------------


def _parameters(request: Request) -> dict[str, str]:
    params = {k: v[0] for k, v in request.get_args(keep_blank_values=True).items()}
    if request.method == "POST" and request.content_type.startswith("application/x-www-form-urlencoded"):
        params.update({k: v[0] for k, v in request.get_form(keep_blank_values=True).items()})
    return params


@bp.route("/gateway.do", methods=["GET", "POST"])
async def gateway(request: Request):
    params = _parameters(request)
    method = params.get("method", "")
    response_key = method.replace(".", "_") + "_response" if method else "error_response"
    try:
        app_public, gateway_private = await gateway_keys(request)
    except (OSError, ValueError):  # no app key to check requests with: Alipay would not know the app
        unavailable = GatewayError("20000", "Service Currently Unavailable", "isp.unknow-error", "app key unreadable")
        return answer("error_response", unavailable.body)
    try:
        _check_common(params, settings_of(request).alipay_app_id, app_public)
        handler = GATEWAY_METHODS.get(method)
        if handler is None:
            raise invalid_arguments("isv.invalid-method", "不存在的方法名", key="error_response", signed=False)
        try:
            biz = jsonlib.loads(params.get("biz_content") or "{}")
        except ValueError:
            raise invalid_arguments("isv.invalid-biz-content", "biz_content 不是合法的 JSON") from None
        inner = await handler(request, params, biz if isinstance(biz, dict) else {})
    except GatewayError as exc:
        response = answer(exc.key or response_key, exc.body, gateway_private if exc.signed else None)
    else:
        if isinstance(inner, HTTPResponse):  # a page for the payer's browser (alipay.trade.wap.pay)
            return inner
        tamper = getattr(request.ctx, "alipay_tamper", None)
        response = answer(response_key, inner, gateway_private, tamper=tamper)
    finish = getattr(request.ctx, "finish_answer", None)  # e.g. a fault that drops the answer
    return await finish(request, response) if finish else response


def _check_common(params: dict[str, str], app_id: str, app_public) -> None:
    required = (("app_id", "isv.missing-app-id"), ("method", "isv.missing-method"), ("sign", "isv.missing-signature"))
    for name, sub_code in required:
        if not params.get(name):
            raise GatewayError("40001", "Missing Required Arguments", sub_code, f"缺少 {name} 参数", signed=False)
    if params["app_id"] != app_id:
        raise invalid_arguments("isv.invalid-app-id", "无效的AppID参数", signed=False)
    if params.get("sign_type", "RSA") != "RSA2":
        raise invalid_arguments("isv.invalid-signature-type", "无效的签名类型", signed=False)
    if not signature_ok(app_public, signing_string(params), params["sign"]):
        raise invalid_arguments(
            "isv.invalid-signature", "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配", signed=False
        )


# --- alipay.system.oauth.token -----------------------------------------------------


@gateway_method("alipay.system.oauth.token")
async def oauth_token(request: Request, params: dict, biz: dict) -> dict:
    if params.get("grant_type") != "authorization_code":
        raise invalid_arguments("isv.grant-type-invalid", "不支持的 grant_type", key="error_response")
    code = params.get("code", "")
    record = loads(await cache(request).getdel(_KEY_AUTH_CODE.format(code))) if code else None
    if record is None or record["app_id"] != params["app_id"]:
        raise invalid_arguments("isv.code-invalid", "授权码code无效", key="error_response")
    if record.get("tamper"):
        request.ctx.alipay_tamper = lambda inner: {**inner, "user_id": _other_user_id(inner["user_id"])}
    now = datetime.now(_BEIJING).strftime("%Y-%m-%d %H:%M:%S")
    access_token = "authusrB" + secrets.token_hex(16)
    return {
        "access_token": access_token,
        "alipay_user_id": record["user_id"],
        "auth_start": now,
        "expires_in": 1296000,
        "re_expires_in": 2592000,
        "refresh_token": "authusrB" + secrets.token_hex(16),
        "user_id": record["user_id"],
    }


def _other_user_id(user_id: str) -> str:
    last = user_id[-1:]
    return user_id[:-1] + ("1" if last != "1" else "2")


_USER_COOKIE = "mock_alipay_user"


def random_user_id() -> str:
    return "2088" + "".join(secrets.choice("0123456789") for _ in range(12))


@bp.get("/oauth2/publicAppAuthorize.htm")
async def web_authorise(request: Request):
    """The authorisation page of H5 inside the Alipay app: straight back with an auth_code.

    ``user_id`` (mock only) picks the Alipay user; without it the browser keeps one user (a cookie).
    """
    app_id = request.args.get("app_id", "")
    redirect_uri = request.args.get("redirect_uri", "")
    if app_id != settings_of(request).alipay_app_id or not redirect_uri.startswith(("http://", "https://")):
        return json({"code": "INVALID_REQUEST", "message": "app_id or redirect_uri is wrong"}, status=400)
    user_id = request.args.get("user_id") or request.cookies.get(_USER_COOKIE) or random_user_id()
    auth_code = secrets.token_hex(16)
    record = {"user_id": user_id, "app_id": app_id, "tamper": False}
    await cache(request).set(_KEY_AUTH_CODE.format(auth_code), dumps(record), ex=AUTH_CODE_TTL_S)
    query = urlencode({"app_id": app_id, "source": "alipay_wallet", "scope": request.args.get("scope", "auth_base"),
                       "auth_code": auth_code, "state": request.args.get("state", "")})
    response = redirect(f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{query}")
    response.add_cookie(_USER_COOKIE, user_id, path="/_mock/alipay/", httponly=True, samesite="Lax", max_age=2_592_000)
    return response


@bp.post("/auth")
async def authorise(request: Request):
    """Mock control: the resident authorises the app in Alipay; returns the auth_code it would get."""
    body = body_of(request)
    user_id = str(body.get("user_id") or random_user_id())
    if not (user_id.isdigit() and len(user_id) == 16 and user_id.startswith("2088")):
        return json({"code": "INVALID_USER_ID", "message": "an Alipay user id is 16 digits starting 2088"}, status=400)
    auth_code = secrets.token_hex(16)
    record = {
        "user_id": user_id,
        "app_id": settings_of(request).alipay_app_id,
        "tamper": bool(body.get("tamper_response")),
    }
    await cache(request).set(_KEY_AUTH_CODE.format(auth_code), dumps(record), ex=AUTH_CODE_TTL_S)
    return json({"auth_code": auth_code, "user_id": user_id})
