"""SM3, HMAC-SM3, SM4 and the key vault, checked against the GB/T standard vectors and
against gmssl as an independent (pure Python) implementation."""

import json
import os
import stat

import pytest
from gmssl import func as gmssl_func
from gmssl import sm3 as gmssl_sm3
from gmssl import sm4 as gmssl_sm4
from hypothesis import given
from hypothesis import strategies as st

from cardcore import crypto
from cardcore.keyvault import KeyVault, KeyVaultError

SM4_STANDARD_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
SM4_STANDARD_PLAINTEXT = SM4_STANDARD_KEY
SM4_STANDARD_CIPHERTEXT = bytes.fromhex("681EDF34D206965E86B3E94F536E4246")
SM4_MILLION_ROUNDS_CIPHERTEXT = bytes.fromhex("595298C7C6FD271F0402F804C33D3F66")

keys16 = st.binary(min_size=16, max_size=16)
blocks = st.binary(min_size=16, max_size=16)


def gmssl_sm3_digest(data: bytes) -> bytes:
    return bytes.fromhex(gmssl_sm3.sm3_hash(gmssl_func.bytes_to_list(data)))


def reference_hmac_sm3(key: bytes, message: bytes) -> bytes:
    """RFC 2104 HMAC spelled out over gmssl's SM3 (block size 64 bytes)."""
    if len(key) > 64:
        key = gmssl_sm3_digest(key)
    key = key.ljust(64, b"\x00")
    inner = gmssl_sm3_digest(bytes(b ^ 0x36 for b in key) + message)
    return gmssl_sm3_digest(bytes(b ^ 0x5C for b in key) + inner)


def gmssl_cipher(key: bytes, mode: int) -> gmssl_sm4.CryptSM4:
    cipher = gmssl_sm4.CryptSM4()
    cipher.set_key(key, mode)
    return cipher


# --- SM4 ----------------------------------------------------------------------------


def test_sm4_matches_the_gb_t_32907_standard_vector():
    block = crypto.SM4Block(SM4_STANDARD_KEY)
    assert block.encrypt(SM4_STANDARD_PLAINTEXT) == SM4_STANDARD_CIPHERTEXT
    assert block.decrypt(SM4_STANDARD_CIPHERTEXT) == SM4_STANDARD_PLAINTEXT


def test_sm4_matches_the_million_rounds_standard_vector():
    block = crypto.SM4Block(SM4_STANDARD_KEY)
    data = SM4_STANDARD_PLAINTEXT
    for _ in range(1_000_000):
        data = block.encrypt(data)
    assert data == SM4_MILLION_ROUNDS_CIPHERTEXT


def test_sm4_cbc_of_one_block_under_a_zero_iv_is_ecb():
    ciphertext = crypto.sm4_cbc_encrypt(SM4_STANDARD_KEY, bytes(16), SM4_STANDARD_PLAINTEXT)
    assert ciphertext == SM4_STANDARD_CIPHERTEXT
    assert crypto.sm4_cbc_decrypt(SM4_STANDARD_KEY, bytes(16), ciphertext) == SM4_STANDARD_PLAINTEXT


def test_sm4_block_refuses_partial_blocks_and_wrong_key_sizes():
    with pytest.raises(ValueError):
        crypto.SM4Block(bytes(15))
    block = crypto.SM4Block(SM4_STANDARD_KEY)
    with pytest.raises(ValueError):
        block.encrypt(bytes(17))
    with pytest.raises(ValueError):
        block.decrypt(bytes(15))


@given(key=keys16, data=st.binary(max_size=80))
def test_sm4_ecb_agrees_with_gmssl(key, data):
    # gmssl pads with PKCS#7 itself, so it is compared with our cipher over padded data.
    ours = crypto.SM4Block(key).encrypt(crypto.pkcs7_pad(data))
    assert ours == gmssl_cipher(key, gmssl_sm4.SM4_ENCRYPT).crypt_ecb(data)
    assert gmssl_cipher(key, gmssl_sm4.SM4_DECRYPT).crypt_ecb(ours) == data
    assert crypto.pkcs7_unpad(crypto.SM4Block(key).decrypt(ours)) == data


@given(key=keys16, iv=blocks, data=st.binary(max_size=80))
def test_sm4_cbc_agrees_with_gmssl(key, iv, data):
    ours = crypto.sm4_cbc_encrypt(key, iv, crypto.pkcs7_pad(data))
    assert ours == gmssl_cipher(key, gmssl_sm4.SM4_ENCRYPT).crypt_cbc(iv, data)
    assert gmssl_cipher(key, gmssl_sm4.SM4_DECRYPT).crypt_cbc(iv, ours) == data
    assert crypto.pkcs7_unpad(crypto.sm4_cbc_decrypt(key, iv, ours)) == data


@pytest.mark.parametrize(
    "padded",
    [b"", bytes(15), bytes(16), b"A" * 15 + b"\x00", b"A" * 15 + b"\x11", b"A" * 14 + b"\x01\x02"],
)
def test_pkcs7_unpad_rejects_bad_padding(padded):
    with pytest.raises(ValueError):
        crypto.pkcs7_unpad(padded)


# --- SM3 and HMAC-SM3 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "digest_hex"),
    [
        (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
        (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
        (b"", crypto.EMPTY_SM3_HEX),
    ],
)
def test_sm3_matches_the_gb_t_32905_standard_vectors(message, digest_hex):
    assert crypto.sm3_hex(message) == digest_hex
    assert gmssl_sm3_digest(message).hex() == digest_hex


@given(parts=st.lists(st.binary(max_size=100), max_size=4))
def test_an_sm3_context_fed_in_parts_gives_the_digest_of_the_whole(parts):
    context = crypto.new_sm3()
    for part in parts:
        context.update(part)
    assert context.digest() == crypto.sm3(b"".join(parts)) == gmssl_sm3_digest(b"".join(parts))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (b"key", b"The quick brown fox jumps over the lazy dog"),
        (b"", b""),
        (bytes(range(64)), b"a key of exactly one block is used as is"),
        (bytes(range(100)), b"a key longer than one block is hashed first"),
    ],
)
def test_hmac_sm3_matches_an_independent_hmac_on_fixed_vectors(key, message):
    assert crypto.hmac_sm3(key, message) == reference_hmac_sm3(key, message)


@given(key=st.binary(max_size=160), message=st.binary(max_size=300))
def test_hmac_sm3_matches_an_independent_hmac_on_random_input(key, message):
    assert crypto.hmac_sm3(key, message) == reference_hmac_sm3(key, message)


def test_constant_time_equal_compares_text_and_bytes():
    assert crypto.constant_time_equal("abc", b"abc")
    assert not crypto.constant_time_equal(b"abc", b"abd")
    assert not crypto.constant_time_equal("abc", "abcd")


# --- key vault -------------------------------------------------------------------------


@pytest.fixture
def vault_path(tmp_path):
    return tmp_path / "keys.json"


def stored_key_hexes(path) -> list[str]:
    document = json.loads(path.read_text())
    return [item["key"] for versions in document["keys"].values() for item in versions]


def test_vault_encrypts_and_decrypts_data(vault_path):
    vault = KeyVault.generate(vault_path, dev=True)
    token = vault.encrypt_text("110101199003077777")
    assert "110101199003077777" not in token
    assert vault.decrypt_text(token) == "110101199003077777"
    assert vault.encrypt_text("same") != vault.encrypt_text("same")  # random IV per value


def test_vault_reloaded_from_its_file_opens_what_it_sealed(vault_path):
    token = KeyVault.generate(vault_path, dev=True).encrypt(b"\x00secret\xff")
    assert KeyVault.load(vault_path).decrypt(token) == b"\x00secret\xff"


def test_rotating_the_data_key_keeps_old_ciphertexts_readable(vault_path):
    vault = KeyVault.generate(vault_path, dev=True)
    old_token = vault.encrypt_text("before rotation")
    assert vault.rotate("data") == 2
    new_token = vault.encrypt_text("after rotation")
    assert old_token.startswith("v1:") and new_token.startswith("v2:")
    reloaded = KeyVault.load(vault_path)
    assert reloaded.decrypt_text(old_token) == "before rotation"
    assert reloaded.decrypt_text(new_token) == "after rotation"
    assert reloaded.versions("data") == [2, 1]


def test_vault_refuses_to_rotate_the_blind_index_key(vault_path):
    with pytest.raises(KeyVaultError):
        KeyVault.generate(vault_path, dev=True).rotate("index")


@pytest.mark.parametrize(
    "token", ["", "v1:", "v1:not base64!", "v9:" + "A" * 43 + "=", "garbage"]
)
def test_vault_refuses_tokens_it_did_not_seal(vault_path, token):
    with pytest.raises(KeyVaultError):
        KeyVault.generate(vault_path, dev=True).decrypt(token)


def test_vault_repr_shows_versions_but_no_key_material(vault_path):
    vault = KeyVault.generate(vault_path, dev=True)
    vault.rotate("protection")
    shown = repr(vault) + repr(vault._keys)
    assert "versions" in repr(vault)
    for key_hex in stored_key_hexes(vault_path):
        assert key_hex.lower() not in shown.lower()


def test_vault_file_is_readable_by_its_owner_only(vault_path):
    vault = KeyVault.generate(vault_path, dev=True)
    assert stat.S_IMODE(os.stat(vault_path).st_mode) == 0o600
    vault.rotate("security")
    assert stat.S_IMODE(os.stat(vault_path).st_mode) == 0o600


def valid_document(path) -> dict:
    KeyVault.generate(path, dev=True)
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda doc: "{ this is not json",
        lambda doc: json.dumps({"dev": True}),
        lambda doc: json.dumps({**doc, "keys": {p: v for p, v in doc["keys"].items() if p != "protection"}}),
        lambda doc: json.dumps({**doc, "keys": {**doc["keys"], "security": [{"version": 1, "key": "00ff"}]}}),
        lambda doc: json.dumps({**doc, "keys": {**doc["keys"], "data": [{"version": 1, "key": "zz" * 16}]}}),
        lambda doc: json.dumps({**doc, "keys": {**doc["keys"], "index": [{"key": "00" * 16}]}}),
    ],
    ids=["not-json", "no-keys", "missing-purpose", "short-key", "non-hex-key", "no-version"],
)
def test_a_corrupted_key_file_raises_key_vault_error(vault_path, corrupt):
    vault_path.write_text(corrupt(valid_document(vault_path)))
    with pytest.raises(KeyVaultError):
        KeyVault.load(vault_path)


def test_a_missing_key_file_raises_key_vault_error(tmp_path):
    with pytest.raises(KeyVaultError):
        KeyVault.load(tmp_path / "absent.json")
