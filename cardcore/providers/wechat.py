"""WeChat login: H5 OAuth (official account 公众号) and mini-program ``wx.login`` codes, via wechatpy.

wechatpy is pointed at ``settings.wechat_api_base`` / ``settings.wechat_oauth_base``
through instance attributes (``API_BASE_URL``, ``OAUTH_BASE_URL``); in dev and test those
are the mock under ``/_mock/wechat/``, in production the real WeChat hosts.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import requests
from wechatpy import WeChatClient, WeChatOAuth
from wechatpy.exceptions import WeChatClientException

from cardcore.providers._threads import run_sync
from cardcore.providers.errors import LoginFailed, ProviderError, ProviderUnavailable

PROVIDER = "wechat"

# WeChat errcodes that mean "this code is no good" (the resident's side, not ours).
CODE_REFUSED = {
    40029,  # invalid code
    40163,  # code been used
    40030,  # invalid refresh_token
    42003,  # code expired (oauth)
}
# WeChat errcodes that mean "try again later".
CODE_BUSY = {-1, 45009, 45011}  # system busy, API daily quota, API minute quota

OAUTH_SCOPES = ("snsapi_base", "snsapi_userinfo")
_STATE = re.compile(r"^[A-Za-z0-9_-]{0,128}$")  # WeChat: a-zA-Z0-9, at most 128 bytes; passed back unchanged


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout: wechatpy's OAuth calls pass none."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method, url, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().request(method, url, **kwargs)


class _MiniProgramClient(WeChatClient):
    """wechatpy's client for the mini-program login, pointed at the configured API base.

    ``jscode2session`` needs no access token, but wechatpy adds one to every call and would
    fetch it first (``cgi-bin/token``) — which in production replaces the token that other
    services of the same mini-program hold. ``access_token`` is therefore ``None`` here,
    which requests leaves out of the query string.
    """

    @property
    def access_token(self):
        return None

    def fetch_access_token(self):
        return self._fetch_access_token(
            url=f"{self.API_BASE_URL}token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


class WeChatLogin:
    """Turns WeChat login codes into the resident's openid.

    - H5 pages inside WeChat: send the browser to ``authorize_url(redirect_uri, state)``;
      WeChat comes back to ``redirect_uri?code=…&state=…``; then ``openid_from_oauth_code(code)``.
    - Mini-program: ``wx.login()`` gives a code; ``openid_from_mini_code(code)``.
    """

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str,
        mini_app_id: str,
        mini_app_secret: str,
        api_base: str = "https://api.weixin.qq.com/",
        oauth_base: str = "https://open.weixin.qq.com/connect/",
        timeout: float = 10,
    ) -> None:
        self.app_id = app_id
        self.mini_app_id = mini_app_id
        self._app_secret = app_secret
        self._mini_app_secret = mini_app_secret
        self.api_base = _with_slash(api_base)
        self.oauth_base = _with_slash(oauth_base)
        self.timeout = timeout
        self._session = _TimeoutSession(timeout)
        mini = _MiniProgramClient(mini_app_id, mini_app_secret, timeout=timeout, auto_retry=False)
        mini.API_BASE_URL = f"{self.api_base}cgi-bin/"
        mini.wxa.API_BASE_URL = self.api_base
        mini._http = _TimeoutSession(timeout)
        self._mini = mini

    @classmethod
    def from_settings(cls, settings) -> "WeChatLogin":
        return cls(
            app_id=settings.wechat_app_id,
            app_secret=settings.wechat_app_secret,
            mini_app_id=settings.wechat_mini_app_id,
            mini_app_secret=settings.wechat_mini_app_secret,
            api_base=settings.wechat_api_base,
            oauth_base=settings.wechat_oauth_base,
            timeout=settings.provider_timeout_s,
        )

    def __repr__(self) -> str:  # never show the secrets
        return f"WeChatLogin(app_id={self.app_id!r}, mini_app_id={self.mini_app_id!r}, api_base={self.api_base!r})"

    def _oauth(self, redirect_uri: str = "", scope: str = "snsapi_base", state: str = "") -> WeChatOAuth:
        # A fresh object per use: WeChatOAuth keeps the last token on itself.
        oauth = WeChatOAuth(self.app_id, self._app_secret, redirect_uri, scope=scope, state=state)
        oauth.API_BASE_URL = self.api_base
        oauth.OAUTH_BASE_URL = self.oauth_base
        oauth._http = self._session
        return oauth

    def authorize_url(self, redirect_uri: str, state: str, scope: str = "snsapi_base") -> str:
        """Where to send the browser for WeChat's consent; it returns to ``redirect_uri`` with ``code`` and ``state``."""
        if scope not in OAUTH_SCOPES:
            raise ValueError(f"scope is one of {', '.join(OAUTH_SCOPES)}")
        if urlsplit(redirect_uri).scheme not in ("http", "https"):
            raise ValueError("redirect_uri must be an absolute http(s) URL")
        if not _STATE.match(state):
            raise ValueError("state is at most 128 letters, digits, '_' or '-'")
        return self._oauth(redirect_uri, scope, state).authorize_url

    async def openid_from_oauth_code(self, code: str) -> str:
        """The openid of the resident who approved the H5 OAuth request that produced ``code``."""
        if not code:
            raise LoginFailed(PROVIDER, "empty code")
        answer = await self._call(lambda: self._oauth().fetch_access_token(code))
        return _field(answer, "openid")

    async def openid_from_mini_code(self, code: str) -> tuple[str, str]:
        """``(openid, session_key)`` for a mini-program ``wx.login`` code."""
        if not code:
            raise LoginFailed(PROVIDER, "empty code")
        answer = await self._call(lambda: self._mini.wxa.code_to_session(code))
        return _field(answer, "openid"), _field(answer, "session_key")

    @staticmethod
    async def _call(fn):
        try:
            return await run_sync(fn)
        except WeChatClientException as exc:
            raise _translate(exc) from None
        except requests.RequestException as exc:
            raise ProviderUnavailable(PROVIDER, exc.__class__.__name__) from None
        except ValueError as exc:  # an answer that is not JSON
            raise ProviderUnavailable(PROVIDER, f"unreadable answer: {exc.__class__.__name__}") from None


def _translate(exc: WeChatClientException):
    if exc.errcode is None:  # HTTP error status; wechatpy keeps the response
        status = getattr(exc.response, "status_code", None)
        return ProviderUnavailable(PROVIDER, f"HTTP {status}")
    errcode = int(exc.errcode)
    if errcode in CODE_REFUSED:
        return LoginFailed(PROVIDER, str(exc.errmsg), provider_code=str(errcode))
    if errcode in CODE_BUSY:
        return ProviderUnavailable(PROVIDER, str(exc.errmsg), provider_code=str(errcode))
    return ProviderError(PROVIDER, str(exc.errmsg), provider_code=str(errcode))


def _field(answer, name: str) -> str:
    value = answer.get(name) if isinstance(answer, dict) else None
    if not value or not isinstance(value, str):
        raise ProviderUnavailable(PROVIDER, f"answer without {name}")
    return value
