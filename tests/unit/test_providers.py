"""Provider clients and mocks without a server: settings, keys, signatures, codes, errors."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl

import pytest
import requests
from alipay import AliPay
from alipay.exceptions import AliPayException, AliPayValidationError
from cryptography.hazmat.primitives import serialization
from requests.adapters import BaseAdapter
from wechatpy.exceptions import WeChatClientException

from cardcore.identity import Identity
from cardcore.providers import LoginFailed, ProviderError, ProviderUnavailable, WeChatLogin, _threads
from cardcore.providers import alipay as alipay_provider
from cardcore.providers import wechat as wechat_provider
from cardcore.settings import Settings
from mocks import alipay as alipay_mock
from mocks.registry import seed_people
from mocks.sms import extract_code


# --- settings ---------------------------------------------------------------------------


def test_provider_settings_point_at_the_mocks_in_dev_and_test(tmp_path):
    settings = Settings.from_env({"EHC_VAR_DIR": str(tmp_path), "EHC_PORT": "8123"})
    mock = "http://127.0.0.1:8123/_mock"
    assert settings.wechat_api_base == f"{mock}/wechat/"
    assert settings.wechat_oauth_base == f"{mock}/wechat/connect/"
    assert settings.alipay_gateway == f"{mock}/alipay/gateway.do"
    assert settings.sms_url == f"{mock}/sms"
    assert (settings.face_url, settings.registry_url) == (f"{mock}/face", f"{mock}/registry")
    assert settings.alipay_app_private_key_file == str(tmp_path / "dev-alipay-app.pem")
    assert settings.alipay_public_key_file == str(tmp_path / "dev-alipay-gateway.pub.pem")
    assert settings.wechat_app_id and settings.wechat_mini_app_id and settings.alipay_app_id
    assert settings.production_problems()  # and such a configuration never passes for production
    assert any("EHC_SMS_URL points at a mock" in p for p in settings.production_problems())


def test_provider_settings_come_from_the_environment():
    settings = Settings.from_env(
        {"EHC_SMS_URL": "https://sms.example.cn/api", "EHC_WECHAT_APP_ID": "wx1234", "EHC_PROVIDER_TIMEOUT_S": "3"}
    )
    assert settings.sms_url == "https://sms.example.cn/api"
    assert (settings.wechat_app_id, settings.provider_timeout_s) == ("wx1234", 3)
    assert settings.face_url.endswith("/_mock/face")


def test_without_mocks_the_sdks_point_at_the_real_services():
    settings = Settings.from_env({"EHC_MOUNT_MOCKS": "0"})
    assert settings.wechat_api_base == "https://api.weixin.qq.com/"
    assert settings.wechat_oauth_base == "https://open.weixin.qq.com/connect/"
    assert settings.alipay_gateway == "https://openapi.alipay.com/gateway.do"
    assert settings.sms_url == "" and settings.wechat_app_id == "" and settings.alipay_app_private_key_file == ""
    assert not any("/_mock/" in p for p in settings.production_problems())


# --- SMS code extraction ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, code",
    [
        ("您的验证码为 482913，5 分钟内有效。", "482913"),
        ("验证码：1234", "1234"),
        ("code 12345678 expires in 5 min", "12345678"),
        ("【电子健康卡】您的验证码为 004711，请勿泄露。", "004711"),
        ("致电 13912345678 或 400 客服", None),  # a phone number is not a code, 3 digits are too few
        ("no code here", None),
    ],
)
def test_the_inbox_finds_the_code_in_a_message(text, code):
    assert extract_code(text) == code


# --- registry seed ----------------------------------------------------------------------


def test_the_registry_seed_is_deterministic_and_valid():
    people = seed_people()
    assert people == seed_people() and len(people) == 50
    assert len({p["id_number"] for p in people}) == 50
    for person in people:
        Identity.model_validate(person)  # GB 11643 check digit, embedded birth date and sex


# --- Alipay development keys and RSA2 both ways -------------------------------------------


def test_dev_keys_are_created_once_and_private_ones_are_private(tmp_path):
    paths = alipay_provider.ensure_dev_keys(tmp_path)
    files = (paths.app_private, paths.app_public, paths.gateway_private, paths.gateway_public)
    first = {p: p.read_bytes() for p in files}
    assert alipay_provider.ensure_dev_keys(tmp_path) == paths
    assert {p: p.read_bytes() for p in first} == first
    for private, public in ((paths.app_private, paths.app_public), (paths.gateway_private, paths.gateway_public)):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        assert key.key_size == 2048
        assert key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == public.read_bytes()
    assert paths.app_private.read_bytes() != paths.gateway_private.read_bytes()


def test_workers_starting_together_agree_on_one_key(tmp_path):
    script = (
        "import sys; from cardcore.providers.alipay import ensure_dev_keys as ensure; "
        "p = ensure(sys.argv[1]); print(p.app_private.read_text() + p.gateway_public.read_text())"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = {worker.communicate(timeout=60)[0] for worker in workers}
    assert all(worker.returncode == 0 for worker in workers)
    assert len(outputs) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["dev-alipay-app.pem", "dev-alipay-app.pub.pem", "dev-alipay-gateway.pem", "dev-alipay-gateway.pub.pem"]
    )


@pytest.fixture(scope="module")
def dev_keys(tmp_path_factory):
    return alipay_provider.ensure_dev_keys(tmp_path_factory.mktemp("alipay-keys"))


def sdk_for(paths) -> AliPay:
    return AliPay(
        appid="2021000000000001",
        app_private_key_string=paths.app_private.read_text(),
        alipay_public_key_string=paths.gateway_public.read_text(),
    )


def test_the_mock_accepts_what_the_sdk_signs_and_nothing_else(dev_keys):
    sdk = sdk_for(dev_keys)
    query = sdk.sign_data(sdk.build_body("alipay.system.oauth.token", grant_type="authorization_code", code="c 1+2"))
    params = dict(parse_qsl(query, keep_blank_values=True))
    app_public = serialization.load_pem_public_key(dev_keys.app_public.read_bytes())
    assert alipay_mock.signature_ok(app_public, alipay_mock.signing_string(params), params["sign"])
    altered = alipay_mock.signing_string({**params, "code": "c 1+3"})
    assert not alipay_mock.signature_ok(app_public, altered, params["sign"])


def test_the_sdk_accepts_what_the_mock_signs_and_refuses_an_altered_answer(dev_keys):
    sdk = sdk_for(dev_keys)
    gateway_private = serialization.load_pem_private_key(dev_keys.gateway_private.read_bytes(), password=None)
    key = "alipay_system_oauth_token_response"
    inner = {"user_id": "2088000000000001", "access_token": "t", "expires_in": 1296000}
    signed = alipay_mock.answer(key, inner, gateway_private).body.decode()
    assert sdk._verify_and_return_sync_response(signed, key) == inner

    altered = alipay_mock.answer(key, inner, gateway_private, tamper=lambda i: {**i, "user_id": "2088000000000002"})
    with pytest.raises(AliPayValidationError):
        sdk._verify_and_return_sync_response(altered.body.decode(), key)


def alipay_error(sub_code: str, code: str = "40002") -> AliPayException:
    raw = json.dumps({"error_response": {"code": code, "msg": "m", "sub_code": sub_code, "sub_msg": "说明"}})
    return AliPayException(code, raw)


@pytest.mark.parametrize(
    "error, outcome",
    [
        (alipay_error("isv.code-invalid"), LoginFailed),
        (alipay_error("isv.invalid-signature"), ProviderError),
        (alipay_error("isp.unknow-error", code="20000"), ProviderUnavailable),
        (AliPayException("40002", "not json"), ProviderError),
    ],
)
def test_alipay_errors_map_to_platform_errors(error, outcome):
    translated = alipay_provider._translate(error)
    assert type(translated) is outcome and translated.details == {"provider": "alipay"}


def test_alipay_is_unavailable_until_configured():
    login = alipay_provider.AlipayLogin(app_id="", gateway="", app_private_key_file="", alipay_public_key_file="")
    with pytest.raises(ProviderUnavailable):
        asyncio.run(login.user_id_from_auth_code("code"))


# --- WeChat --------------------------------------------------------------------------------


class RecordingAdapter(BaseAdapter):
    """A requests transport that answers from a script and records what was asked."""

    def __init__(self, answers: list[dict]):
        super().__init__()
        self.answers = answers
        self.urls: list[str] = []

    def send(self, request, **kwargs):
        self.urls.append(request.url)
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(self.answers.pop(0)).encode()
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


def login_for(settings: Settings) -> WeChatLogin:
    return WeChatLogin.from_settings(settings)


@pytest.fixture
def wechat(tmp_path):
    return login_for(Settings.from_env({"EHC_VAR_DIR": str(tmp_path), "EHC_PORT": "8123"}))


def test_mini_program_login_asks_code2session_only(wechat):
    adapter = RecordingAdapter([{"openid": "o-1", "session_key": "a2V5"}])
    wechat._mini._http.mount("http://", adapter)
    assert asyncio.run(wechat.openid_from_mini_code("js-code")) == ("o-1", "a2V5")
    [url] = adapter.urls  # no cgi-bin/token first: code2Session needs no access token
    path, _, query = url.partition("?")
    assert path == "http://127.0.0.1:8123/_mock/wechat/sns/jscode2session"
    assert dict(parse_qsl(query)) == {
        "appid": wechat.mini_app_id,
        "secret": wechat._mini_app_secret,
        "js_code": "js-code",
        "grant_type": "authorization_code",
    }


def test_oauth_code_exchange_asks_the_configured_api_base(wechat):
    token = {"access_token": "t", "expires_in": 7200, "refresh_token": "r", "openid": "o-2", "scope": "snsapi_base"}
    adapter = RecordingAdapter([token])
    wechat._session.mount("http://", adapter)
    assert asyncio.run(wechat.openid_from_oauth_code("c")) == "o-2"
    assert adapter.urls[0].startswith("http://127.0.0.1:8123/_mock/wechat/sns/oauth2/access_token?appid=")


def test_an_answer_without_openid_is_unavailable(wechat):
    wechat._mini._http.mount("http://", RecordingAdapter([{"session_key": "x"}]))
    with pytest.raises(ProviderUnavailable):
        asyncio.run(wechat.openid_from_mini_code("c"))


@pytest.mark.parametrize(
    "errcode, outcome",
    [
        (40029, LoginFailed),
        (40163, LoginFailed),
        (40013, ProviderError),
        (40125, ProviderError),
        (-1, ProviderUnavailable),
        (None, ProviderUnavailable),
    ],
)
def test_wechat_errcodes_map_to_platform_errors(errcode, outcome):
    translated = wechat_provider._translate(WeChatClientException(errcode, "msg"))
    assert type(translated) is outcome and translated.details == {"provider": "wechat"}


def test_authorize_url_is_wechats_with_the_redirect_encoded(wechat):
    url = wechat.authorize_url("https://ehc.example.cn/h5/login?next=/h5/", "abc-1")
    assert url == (
        "http://127.0.0.1:8123/_mock/wechat/connect/oauth2/authorize?appid=" + wechat.app_id
        + "&redirect_uri=https%3A%2F%2Fehc.example.cn%2Fh5%2Flogin%3Fnext%3D%2Fh5%2F"
        "&response_type=code&scope=snsapi_base&state=abc-1#wechat_redirect"
    )
    with pytest.raises(ValueError):
        wechat.authorize_url("https://ehc.example.cn/", "a&b")
    with pytest.raises(ValueError):
        wechat.authorize_url("/relative", "a")


def test_secrets_stay_out_of_reprs(wechat):
    assert wechat._app_secret not in repr(wechat) and wechat._mini_app_secret not in repr(wechat)


# --- the thread bound -----------------------------------------------------------------------


async def test_sdk_calls_run_in_threads_at_most_the_bound_at_once(monkeypatch):
    monkeypatch.setattr(_threads, "MAX_CONCURRENT_SDK_CALLS", 2)
    _threads._semaphores.clear()
    lock, state = threading.Lock(), {"active": 0, "peak": 0}
    loop_thread = threading.get_ident()

    def call(i):
        assert threading.get_ident() != loop_thread
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
        time.sleep(0.01)
        with lock:
            state["active"] -= 1
        return i

    try:
        assert await asyncio.gather(*(_threads.run_sync(call, i) for i in range(8))) == list(range(8))
    finally:
        _threads._semaphores.clear()
    assert state["peak"] <= 2


def test_sdk_calls_do_not_wait_for_the_default_executor():
    # An SDK call may wait on an in-process mock whose answer needs the default executor;
    # with every default thread busy, the SDK call must still run. A loop of its own: the
    # busy pool must not stay the default executor of the loop later tests share.
    async def with_default_threads_busy() -> str:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        release = threading.Event()
        blocked = loop.run_in_executor(None, release.wait)
        try:
            return await asyncio.wait_for(_threads.run_sync(lambda: "answered"), timeout=5)
        finally:
            release.set()
            await blocked

    assert asyncio.run(with_default_threads_busy()) == "answered"
