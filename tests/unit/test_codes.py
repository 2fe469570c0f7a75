"""VUID derivation, the QR text codec and the sealed VALID field of dynamic codes."""

import json
import re

import pytest
from gmssl import func as gmssl_func
from gmssl import sm3 as gmssl_sm3
from gmssl import sm4 as gmssl_sm4
from hypothesis import given
from hypothesis import strategies as st

from cardcore import codes, errors
from cardcore.codes import CodeText, derive_vuid, issue_dynamic, open_valid, parse_code_text, seal_valid
from cardcore.keyvault import KeyVault
from tests.servers import codec_module, compiled_codec_or_skip

EMPI_ID = "0123456789ABCDEF"
ID_TYPE = "01"
ID_NUMBER = "11010119900307777X"
VUID_SHAPE = re.compile(r"[0-9A-F]{64}")
EXPIRES_AT = 1_900_000_000

VUID = "A" * 64
OTHER_VUID = "B" * 64
VALID = "0123456789ABCDEF0123456789ABCDEF"
WECHAT_TOKEN = "134567890123456789"
ALIPAY_TOKEN = "2851234567890123456789012"
ISSUER = "ehc.sn.gov.cn"


@pytest.fixture(scope="module", autouse=True, params=["compiled", "pure Python"])
def codec(request):
    """Every test here runs on both codecs: the compiled hot path and the pure-Python one."""
    with codec_module(compiled_codec_or_skip() if request.param == "compiled" else None):
        yield request.param


@pytest.fixture
def vault_path(tmp_path):
    return tmp_path / "keys.json"


@pytest.fixture
def vault(vault_path):
    return KeyVault.generate(vault_path, dev=True)


def stored_key(path, purpose: str, version: int = 1) -> bytes:
    versions = json.loads(path.read_text())["keys"][purpose]
    return bytes.fromhex(next(item["key"] for item in versions if item["version"] == version))


def reference_vuid(root_key: bytes, empi_id: str, identity: bytes) -> str:
    """The seed 002 §5.1.3 derivation spelled out with gmssl, as an independent check."""

    def sm4(key: bytes, data: bytes, iv: bytes | None = None) -> bytes:
        cipher = gmssl_sm4.CryptSM4()
        cipher.set_key(key, gmssl_sm4.SM4_ENCRYPT)
        padded_out = cipher.crypt_ecb(data) if iv is None else cipher.crypt_cbc(iv, data)
        return padded_out[: len(data)]  # gmssl appends one PKCS#7 block to whole-block input

    diversifier = bytes.fromhex(empi_id)
    user_key = sm4(root_key, diversifier + bytes(255 - b for b in diversifier))
    if len(identity) <= 31:
        block_data = identity + b"\x80" + bytes(31 - len(identity))
    else:
        block_data = bytes.fromhex(gmssl_sm3.sm3_hash(gmssl_func.bytes_to_list(identity)))
    return sm4(user_key, block_data, iv=bytes(16)).hex().upper()


# --- VUID --------------------------------------------------------------------------


def test_vuid_is_64_uppercase_hex_and_deterministic(vault, vault_path):
    vuid = derive_vuid(vault, EMPI_ID, ID_TYPE, ID_NUMBER)
    assert VUID_SHAPE.fullmatch(vuid)
    assert derive_vuid(vault, EMPI_ID, ID_TYPE, ID_NUMBER) == vuid
    assert derive_vuid(KeyVault.load(vault_path), EMPI_ID, ID_TYPE, ID_NUMBER) == vuid


@pytest.mark.parametrize("id_number", [ID_NUMBER, "X" * 29, "X" * 30, "护照号码" * 5])
def test_vuid_follows_the_pboc_diversified_sm4_derivation(vault, vault_path, id_number):
    identity = (ID_TYPE + id_number).encode()
    expected = reference_vuid(stored_key(vault_path, "security"), EMPI_ID, identity)
    assert derive_vuid(vault, EMPI_ID, ID_TYPE, id_number) == expected


def test_vuid_differs_between_people_and_between_empi_ids(vault):
    vuids = {
        derive_vuid(vault, EMPI_ID, ID_TYPE, ID_NUMBER),
        derive_vuid(vault, EMPI_ID, ID_TYPE, "110101199003071234"),
        derive_vuid(vault, EMPI_ID, "03", ID_NUMBER),
        derive_vuid(vault, "0123456789ABCDEE", ID_TYPE, ID_NUMBER),
        derive_vuid(vault, codes.new_empi_id(), ID_TYPE, ID_NUMBER),
    }
    assert len(vuids) == 5


@pytest.mark.parametrize(
    "id_number",
    ["X" * 29, "X" * 30, "Y" * 100, "粤港澳通行证号码很长很长很长", "H12345678"],
    ids=["31-bytes", "32-bytes-hashed", "long", "utf8", "short"],
)
def test_vuid_accepts_identities_of_any_length(vault, id_number):
    vuid = derive_vuid(vault, EMPI_ID, "99", id_number)
    assert VUID_SHAPE.fullmatch(vuid)
    assert vuid != derive_vuid(vault, EMPI_ID, "99", id_number + "0")


def test_vuid_survives_rotating_the_protection_key(vault):
    before = derive_vuid(vault, EMPI_ID, ID_TYPE, ID_NUMBER)
    vault.rotate("protection")
    assert derive_vuid(vault, EMPI_ID, ID_TYPE, ID_NUMBER) == before


def test_old_vuids_are_reproducible_by_key_version_after_rotating_the_security_key(vault):
    before = derive_vuid(vault, EMPI_ID, ID_TYPE, ID_NUMBER)
    assert vault.rotate("security") == 2
    assert derive_vuid(vault, EMPI_ID, ID_TYPE, ID_NUMBER) != before
    assert derive_vuid(vault, EMPI_ID, ID_TYPE, ID_NUMBER, key_version=1) == before
    assert derive_vuid(vault, EMPI_ID, ID_TYPE, ID_NUMBER, key_version=2) == derive_vuid(
        vault, EMPI_ID, ID_TYPE, ID_NUMBER
    )


@pytest.mark.parametrize(
    ("empi_id", "id_type", "id_number"),
    [
        ("0123456789abcdef", ID_TYPE, ID_NUMBER),
        ("0123456789ABCDE", ID_TYPE, ID_NUMBER),
        ("0123456789ABCDEF0", ID_TYPE, ID_NUMBER),
        (EMPI_ID, "", ID_NUMBER),
        (EMPI_ID, ID_TYPE, ""),
    ],
)
def test_vuid_refuses_bad_inputs(vault, empi_id, id_type, id_number):
    with pytest.raises(ValueError):
        derive_vuid(vault, empi_id, id_type, id_number)


def test_new_empi_ids_are_16_uppercase_hex_and_random():
    ids = {codes.new_empi_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[0-9A-F]{16}", empi_id) for empi_id in ids)


# --- QR text codec ---------------------------------------------------------------------


VALID_TEXTS = {
    f"{VUID}:1": CodeText(VUID, "static"),
    f"{VUID}:1:{ISSUER}": CodeText(VUID, "static", issuer=ISSUER),
    f"{VUID}:1:SX.EHC": CodeText(VUID, "static", issuer="SX.EHC"),
    f"{VUID}:0:{VALID}": CodeText(VUID, "dynamic", valid=VALID),
    f"{VUID}:0:{VALID}:{ISSUER}": CodeText(VUID, "dynamic", valid=VALID, issuer=ISSUER),
    f"{VUID}:0:{VALID}:{WECHAT_TOKEN}": CodeText(VUID, "combined", valid=VALID, token=WECHAT_TOKEN),
    f"{VUID}:0:{VALID}:{ALIPAY_TOKEN}": CodeText(VUID, "combined", valid=VALID, token=ALIPAY_TOKEN),
    f"{VUID}:0:{VALID}:{WECHAT_TOKEN}:{ISSUER}": CodeText(
        VUID, "combined", valid=VALID, token=WECHAT_TOKEN, issuer=ISSUER
    ),
    f"{VUID}:0:{VALID}:Ab3xYz0123:a_b-c.d": CodeText(
        VUID, "combined", valid=VALID, token="Ab3xYz0123", issuer="a_b-c.d"
    ),
}


@pytest.mark.parametrize("text", VALID_TEXTS)
def test_parser_reads_every_valid_form(text):
    code = parse_code_text(text)
    assert code == VALID_TEXTS[text]
    assert code.format() == text


@pytest.mark.parametrize("suffix", ["\r\n", "\n", "\r", " ", "\t"])
def test_parser_forgives_whitespace_a_scanner_adds_at_the_ends(suffix):
    assert parse_code_text(f"{suffix}{VUID}:1{suffix}") == CodeText(VUID, "static")


def test_builders_choose_the_kind():
    assert CodeText.static(VUID).format() == f"{VUID}:1"
    assert CodeText.dynamic(VUID, VALID).kind == "dynamic"
    combined = CodeText.dynamic(VUID, VALID, token=WECHAT_TOKEN, issuer=ISSUER)
    assert combined.kind == "combined"
    assert combined.format() == f"{VUID}:0:{VALID}:{WECHAT_TOKEN}:{ISSUER}"


def test_a_code_text_changed_by_replace_is_checked_like_a_new_one():
    code = CodeText.dynamic(VUID, VALID)
    assert code._replace(valid=VALID[::-1]) == CodeText.dynamic(VUID, VALID[::-1])
    with pytest.raises(ValueError):
        code._replace(vuid=VUID.lower())
    with pytest.raises(ValueError):
        code._replace(kind="static")


MALFORMED_TEXTS = {
    "empty": "",
    "only-whitespace": " \r\n",
    "vuid-only": VUID,
    "lowercase-vuid": f"{VUID.lower()}:1",
    "short-vuid": f"{VUID[:-1]}:1",
    "long-vuid": f"{VUID}A:1",
    "non-hex-vuid": f"{VUID[:-1]}G:1",
    "empty-vuid": ":1",
    "flag-2": f"{VUID}:2",
    "flag-01": f"{VUID}:01",
    "empty-flag": f"{VUID}:",
    "static-with-valid": f"{VUID}:1:{VALID}",
    "static-with-two-extra": f"{VUID}:1:{VALID}:{ISSUER}",
    "static-trailing-colon": f"{VUID}:1:",
    "dynamic-without-valid": f"{VUID}:0",
    "dynamic-empty-valid": f"{VUID}:0:",
    "lowercase-valid": f"{VUID}:0:{VALID.lower()}",
    "short-valid": f"{VUID}:0:{VALID[:-1]}",
    "long-valid": f"{VUID}:0:{VALID}0",
    "dynamic-trailing-colon": f"{VUID}:0:{VALID}:",
    "token-too-short": f"{VUID}:0:{VALID}:123456789",
    "token-too-long": f"{VUID}:0:{VALID}:{'1' * 65}",
    "token-with-dash": f"{VUID}:0:{VALID}:1345-67890123",
    "token-with-underscore": f"{VUID}:0:{VALID}:1345_67890123",
    "issuer-without-dot": f"{VUID}:0:{VALID}:{WECHAT_TOKEN}:EHC",
    "issuer-then-token": f"{VUID}:0:{VALID}:{ISSUER}:{WECHAT_TOKEN}",
    "issuer-leading-dot": f"{VUID}:1:.ehc.cn",
    "issuer-trailing-dot": f"{VUID}:1:ehc.cn.",
    "issuer-double-dot": f"{VUID}:1:ehc..cn",
    "issuer-too-long": f"{VUID}:1:{'e' * 30}.{'c' * 34}",
    "issuer-bad-char": f"{VUID}:1:ehc.sn/gov",
    "six-fields": f"{VUID}:0:{VALID}:{WECHAT_TOKEN}:{ISSUER}:x.y",
    "double-colon": f"{VUID}::1",
    "leading-colon": f":{VUID}:1",
    "internal-space": f"{VUID}: 1",
    "internal-tab": f"{VUID}:0:\t{VALID}",
    "internal-newline": f"{VUID}:0:{VALID}\n:{WECHAT_TOKEN}",
    "fullwidth-colon": f"{VUID}：1",
    "chinese-issuer": f"{VUID}:1:健康卡.cn",
    "nul": f"{VUID}:1\x00",
    "over-256-chars": f"{VUID}:1:" + "a." * 100 + "a",
    "url": "https://example.com/?code=1",
}


@pytest.mark.parametrize("text", MALFORMED_TEXTS.values(), ids=MALFORMED_TEXTS.keys())
def test_parser_rejects_malformed_text(text):
    with pytest.raises(errors.CodeMalformed) as caught:
        parse_code_text(text)
    assert caught.value.code == "CODE_MALFORMED"
    assert VUID not in caught.value.message


@pytest.mark.parametrize("value", [None, 42, VUID.encode() + b":1"])
def test_parser_rejects_what_is_not_text(value):
    with pytest.raises(errors.CodeMalformed):
        parse_code_text(value)


@pytest.mark.parametrize(
    "fields",
    [
        {"vuid": VUID.lower(), "kind": "static"},
        {"vuid": VUID, "kind": "static", "valid": VALID},
        {"vuid": VUID, "kind": "dynamic"},
        {"vuid": VUID, "kind": "dynamic", "valid": VALID, "token": WECHAT_TOKEN},
        {"vuid": VUID, "kind": "combined", "valid": VALID},
        {"vuid": VUID, "kind": "static", "issuer": "no-dot"},
        {"vuid": VUID, "kind": "printed"},
    ],
)
def test_code_text_cannot_be_built_with_bad_fields(fields):
    with pytest.raises(ValueError):
        CodeText(**fields)


hex_upper = "0123456789ABCDEF"
vuids = st.text(hex_upper, min_size=64, max_size=64)
valids = st.text(hex_upper, min_size=32, max_size=32)
tokens = st.text("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=10, max_size=64)
issuer_labels = st.text("abcXYZ019_-", min_size=1, max_size=12)
issuers = st.lists(issuer_labels, min_size=2, max_size=5).map(".".join)
code_texts = st.one_of(
    st.builds(CodeText.static, vuids, issuer=st.none() | issuers),
    st.builds(CodeText.dynamic, vuids, valids, token=st.none() | tokens, issuer=st.none() | issuers),
)


@given(code=code_texts)
def test_every_valid_code_text_parses_back_to_itself(code):
    text = code.format()
    assert parse_code_text(text) == code
    assert parse_code_text(text).format() == text


@st.composite
def edited_code_texts(draw):
    """A valid code text with a few characters cut out and others put in at one place."""
    text = draw(code_texts).format()
    position = draw(st.integers(0, len(text)))
    removed = draw(st.integers(0, 3))
    return text[:position] + draw(st.text(max_size=3)) + text[position + removed :]


@given(text=st.one_of(st.text(max_size=300), edited_code_texts()))
def test_random_text_either_parses_faithfully_or_is_malformed(text):
    try:
        code = parse_code_text(text)
    except errors.CodeMalformed:
        return
    assert code.format() == text.strip(" \t\r\n")


# --- VALID -------------------------------------------------------------------------------


def test_valid_is_32_uppercase_hex_and_opens_to_its_expiry(vault):
    valid = seal_valid(vault, VUID, EXPIRES_AT)
    assert re.fullmatch(r"[0-9A-F]{32}", valid)
    info = open_valid(vault, VUID, valid)
    assert info.expires_at_s == EXPIRES_AT
    assert 0 <= info.serial < 2**32
    assert info.key_version == 1


def test_valid_carries_a_random_serial(vault):
    first, second = seal_valid(vault, VUID, EXPIRES_AT), seal_valid(vault, VUID, EXPIRES_AT)
    assert first != second
    assert open_valid(vault, VUID, first).serial != open_valid(vault, VUID, second).serial


@pytest.mark.parametrize("expires_at", [0, 1, 2**32 - 1])
def test_valid_opens_whatever_its_expiry_the_clock_is_the_callers_job(vault, expires_at):
    assert open_valid(vault, VUID, seal_valid(vault, VUID, expires_at)).expires_at_s == expires_at


@pytest.mark.parametrize("expires_at", [-1, 2**32])
def test_valid_refuses_times_outside_32_bits(vault, expires_at):
    with pytest.raises(ValueError):
        seal_valid(vault, VUID, expires_at)


def test_valid_refuses_to_seal_for_a_malformed_vuid(vault):
    with pytest.raises(ValueError):
        seal_valid(vault, VUID.lower(), EXPIRES_AT)


def test_changing_any_hex_digit_of_valid_makes_it_invalid(vault):
    valid = seal_valid(vault, VUID, EXPIRES_AT)
    for position, digit in enumerate(valid):
        replacement = "0" if digit != "0" else "F"
        tampered = valid[:position] + replacement + valid[position + 1 :]
        with pytest.raises(errors.CodeInvalid):
            open_valid(vault, VUID, tampered)


def test_valid_moved_onto_another_vuid_is_invalid(vault):
    valid = seal_valid(vault, VUID, EXPIRES_AT)
    with pytest.raises(errors.CodeInvalid):
        open_valid(vault, OTHER_VUID, valid)


def test_valid_sealed_by_another_vault_is_invalid(vault, tmp_path):
    other_vault = KeyVault.generate(tmp_path / "other.json", dev=True)
    with pytest.raises(errors.CodeInvalid):
        open_valid(vault, VUID, seal_valid(other_vault, VUID, EXPIRES_AT))


def test_open_valid_rejects_a_malformed_valid(vault):
    with pytest.raises(errors.CodeMalformed):
        open_valid(vault, VUID, seal_valid(vault, VUID, EXPIRES_AT).lower())


def test_codes_sealed_before_a_protection_key_rotation_still_open(vault, vault_path):
    old_valid = seal_valid(vault, VUID, EXPIRES_AT)
    assert vault.rotate("protection") == 2
    new_valid = seal_valid(vault, VUID, EXPIRES_AT)
    reloaded = KeyVault.load(vault_path)
    assert open_valid(reloaded, VUID, old_valid).key_version == 1
    assert open_valid(reloaded, VUID, new_valid).key_version == 2
    assert open_valid(reloaded, VUID, old_valid).expires_at_s == EXPIRES_AT


def test_a_full_dynamic_code_survives_format_parse_and_open(vault):
    vuid = derive_vuid(vault, EMPI_ID, ID_TYPE, ID_NUMBER)
    text = CodeText.dynamic(vuid, seal_valid(vault, vuid, EXPIRES_AT), token=WECHAT_TOKEN).format()
    code = parse_code_text(text + "\r\n")
    assert code.kind == "combined"
    assert open_valid(vault, code.vuid, code.valid).expires_at_s == EXPIRES_AT


def test_issued_dynamic_code_is_the_checked_code_and_reads_back(vault):
    code = issue_dynamic(vault, VUID, EXPIRES_AT)
    assert code == CodeText.dynamic(VUID, code.valid)  # same fields as the checking constructor
    assert type(code) is CodeText and code.kind == "dynamic"
    assert parse_code_text(code.format()) == code
    assert open_valid(vault, VUID, code.valid).expires_at_s == EXPIRES_AT


def test_issued_code_with_a_token_is_the_combined_pay_code(vault):
    code = issue_dynamic(vault, VUID, EXPIRES_AT, token="WXPAYTOKEN0123")
    assert code.kind == "combined" and code.token == "WXPAYTOKEN0123"
    assert parse_code_text(code.format()) == code
    with pytest.raises(ValueError):
        issue_dynamic(vault, VUID, EXPIRES_AT, token="not a token")


@pytest.mark.parametrize("vuid", [VUID.lower(), VUID[:-1], VUID + "0", 12345, None])
def test_issue_refuses_a_malformed_vuid(vault, vuid):
    with pytest.raises((ValueError, TypeError)):
        issue_dynamic(vault, vuid, EXPIRES_AT)
