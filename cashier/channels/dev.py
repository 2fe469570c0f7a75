"""Development merchant accounts: one per channel, for the mock gateways under ``/_mock/``.

``mock_merchant_configs(settings)`` is what the demo institution's ``ChannelAccount`` rows
are made of, and what the mock gateways accept (they call it with the same settings).
Key material is generated on first use under ``settings.var_dir`` and kept there:

- ``dev-channel-secrets.json``: the WeChat Pay API key and the insurance HMAC key;
- ``dev-wechat-apiclient.{key,crt}.pem``: the WeChat Pay merchant API certificate;
- ``dev-unionpay-{merchant,gateway}.{key,crt}.pem``: the UnionPay merchant's signing
  certificate (its serial number is ``certId``) and the mock UnionPay's own;
- Alipay: the platform's development app keys (``cardcore.providers.alipay.ensure_dev_keys``):
  in development the platform's Alipay app is also the demo institution's payment app.

Every file is created at most once (linked into place), so several workers agree on it.
"""

from __future__ import annotations

import json
import secrets
import threading
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from cardcore.providers.alipay import ensure_dev_keys
from cashier.channels._common import create_once
from cashier.channels.base import MerchantConfig

WECHAT_MCH_ID = "1900000109"
ALIPAY_SELLER_ID = "2088000000000009"
UNIONPAY_MER_ID = "777290058110048"
INSURANCE_ORG_CODE = "H61011300001"  # 定点医疗机构编码
INSURANCE_APP_ID = "ybdev000000000000001"

_lock = threading.Lock()


def mock_merchant_configs(settings) -> dict[str, MerchantConfig]:
    """channel code -> the development merchant account at the mock gateway of this server."""
    return dict(
        _configs(
            settings.base_url.rstrip("/"),
            str(settings.var_dir),
            settings.wechat_app_id,
            settings.wechat_mini_app_id,
            settings.alipay_app_id,
        )
    )


@lru_cache(maxsize=16)
def _configs(base_url: str, var_dir: str, wechat_app_id: str, wechat_mini_app_id: str, alipay_app_id: str):
    var = Path(var_dir)
    with _lock:
        keys = _secrets(var)
        wechat_key, wechat_cert = _key_and_certificate(
            var, "dev-wechat-apiclient", f"{WECHAT_MCH_ID} 商户API证书"
        )
        union_key, union_cert = _key_and_certificate(
            var, "dev-unionpay-merchant", f"{UNIONPAY_MER_ID} 签名证书"
        )
        _, gateway_cert = _key_and_certificate(var, "dev-unionpay-gateway", "China UnionPay 验签证书 (mock)")
        alipay = ensure_dev_keys(var)
    return (
        (
            "wechat",
            MerchantConfig(
                channel="wechat",
                app_id=wechat_app_id,
                merchant_id=WECHAT_MCH_ID,
                gateway=f"{base_url}/_mock/wechat/",
                secrets={
                    "api_key": keys["wechat_api_key"],
                    "sign_type": "HMAC-SHA256",
                    "mini_app_id": wechat_mini_app_id,
                    "mch_cert": wechat_cert,
                    "mch_key": wechat_key,
                },
            ),
        ),
        (
            "alipay",
            MerchantConfig(
                channel="alipay",
                app_id=alipay_app_id,
                merchant_id=ALIPAY_SELLER_ID,
                gateway=f"{base_url}/_mock/alipay/gateway.do",
                secrets={
                    "app_private_key": alipay.app_private.read_text(),
                    "alipay_public_key": alipay.gateway_public.read_text(),
                },
            ),
        ),
        (
            "unionpay",
            MerchantConfig(
                channel="unionpay",
                app_id="",
                merchant_id=UNIONPAY_MER_ID,
                gateway=f"{base_url}/_mock/unionpay",
                secrets={"sign_key": union_key, "sign_cert": union_cert, "verify_cert": gateway_cert},
            ),
        ),
        (
            "insurance",
            MerchantConfig(
                channel="insurance",
                app_id=INSURANCE_APP_ID,
                merchant_id=INSURANCE_ORG_CODE,
                gateway=f"{base_url}/_mock/insurance",
                secrets={"hmac_key": keys["insurance_hmac_key"]},
            ),
        ),
    )


def unionpay_gateway_signing_key(settings) -> tuple[str, str]:
    """(private key PEM, certificate PEM) the mock UnionPay signs its answers and notifications with."""
    with _lock:
        return _key_and_certificate(
            Path(settings.var_dir), "dev-unionpay-gateway", "China UnionPay 验签证书 (mock)"
        )


# --- files created once ---------------------------------------------------------------


def _secrets(var: Path) -> dict[str, str]:
    def make() -> bytes:
        values = {"wechat_api_key": secrets.token_hex(16), "insurance_hmac_key": secrets.token_hex(32)}
        return json.dumps(values, indent=2).encode()

    return json.loads(create_once(var / "dev-channel-secrets.json", make))


def _key_and_certificate(var: Path, stem: str, common_name: str) -> tuple[str, str]:
    """(RSA 2048 private key PEM, self-signed certificate PEM) under ``var``."""

    def make_key() -> bytes:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    key_pem = create_once(var / f"{stem}.key.pem", make_key)

    def make_certificate() -> bytes:
        key = serialization.load_pem_private_key(key_pem, password=None)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        now = datetime.now(timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number() >> 96)  # UnionPay certIds are short decimals
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM)

    cert_pem = create_once(var / f"{stem}.crt.pem", make_certificate, mode=0o644)
    return key_pem.decode(), cert_pem.decode()
