"""The compiled dynamic-code hot path (cardcore/_codec.c) gives the pure-Python codec's answers.

tests/unit/test_codes.py runs every codec test on both; here the two meet: codes issued by
one open with the other, the compiled reader takes exactly the texts the pure one reads
as VUID:0:VALID, and nothing leaks.
"""

import gc
import sys
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardcore import errors
from cardcore.codes import CodeText, ValidInfo, issue_dynamic, open_valid, parse_code_text
from cardcore.keyvault import KeyVault
from tests.servers import codec_module, compiled_codec_or_skip

HEX = "0123456789ABCDEF"
vuids = st.text(HEX, min_size=64, max_size=64)
valids = st.text(HEX, min_size=32, max_size=32)
expiries = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="module")
def compiled():
    return compiled_codec_or_skip()


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    return KeyVault.generate(tmp_path_factory.mktemp("codec") / "keys.json", dev=True)


@pytest.fixture(scope="module")
def using(compiled):
    """``with using("compiled"):`` or ``with using("pure"):``"""
    return lambda which: codec_module(compiled if which == "compiled" else None)


def outcome(call):
    """What a codec call gave: its value, or the type and message of what it raised."""
    try:
        return call()
    except (errors.PlatformError, ValueError, TypeError) as exc:
        return type(exc), str(exc)


@given(vuid=vuids, expires_at_s=expiries)
@settings(max_examples=200)
def test_codes_issued_by_either_open_with_the_other(using, vault, vuid, expires_at_s):
    for issuer, opener in (("compiled", "pure"), ("pure", "compiled")):
        with using(issuer):
            code = issue_dynamic(vault, vuid, expires_at_s)
        with using(opener):
            info = open_valid(vault, code.vuid, code.valid)
            assert parse_code_text(code.format()) == code
        assert type(code) is CodeText and code == CodeText.dynamic(vuid, code.valid)
        assert type(info) is ValidInfo and info.expires_at_s == expires_at_s and info.key_version == 1


def test_codes_sealed_under_an_older_protection_key_open_in_both(using, tmp_path):
    vault = KeyVault.generate(tmp_path / "keys.json", dev=True)
    vuid = "C" * 64
    with using("compiled"):
        old = issue_dynamic(vault, vuid, 1_900_000_000)
    vault.rotate("protection")
    with using("pure"):
        new = issue_dynamic(vault, vuid, 1_900_000_001)
    for which in ("compiled", "pure"):
        with using(which):
            assert open_valid(vault, vuid, old.valid)[::2] == (1_900_000_000, 1)
            assert open_valid(vault, vuid, new.valid)[::2] == (1_900_000_001, 2)


@given(vuid=vuids, other_vuid=vuids | st.text(max_size=70), valid=valids | st.text(max_size=40), flip=st.integers(0, 31))
@settings(max_examples=300)
def test_both_open_or_refuse_the_same_way(using, vault, vuid, other_vuid, valid, flip):
    with using("pure"):
        issued = issue_dynamic(vault, vuid, 1_900_000_000).valid
    tampered = issued[:flip] + ("0" if issued[flip] != "0" else "F") + issued[flip + 1 :]
    for card, sealed in ((vuid, issued), (vuid, tampered), (other_vuid, issued), (vuid, valid), (other_vuid, valid)):
        with using("compiled"):
            compiled_says = outcome(lambda: open_valid(vault, card, sealed))
        with using("pure"):
            pure_says = outcome(lambda: open_valid(vault, card, sealed))
        # The serial is random per code, so compare what it opened to, not a fixed value.
        assert compiled_says == pure_says


@st.composite
def scanned_texts(draw):
    """Plain dynamic codes as scanners read them, and near misses of every kind."""
    text = f"{draw(vuids)}:0:{draw(valids)}"
    position = draw(st.integers(0, len(text)))
    edit = draw(st.sampled_from(["none", "replace", "insert", "delete", "lower", "pad"]))
    if edit == "replace" and position < len(text):
        text = text[:position] + draw(st.characters()) + text[position + 1 :]
    elif edit == "insert":
        text = text[:position] + draw(st.text(max_size=2)) + text[position:]
    elif edit == "delete":
        text = text[:position] + text[position + 1 :]
    elif edit == "lower":
        text = text.lower()
    elif edit == "pad":
        text = draw(st.text(" \t\r\n\x0b\u3000", max_size=3)) + text + draw(st.text(" \t\r\n\x0c", max_size=3))
    return text


@given(text=scanned_texts() | st.text(max_size=120))
@settings(max_examples=500)
def test_compiled_reader_takes_exactly_the_plain_dynamic_form(compiled, using, text):
    with using("pure"):
        pure_says = outcome(lambda: parse_code_text(text))
    plain = isinstance(pure_says, CodeText) and pure_says.kind == "dynamic" and pure_says[3:] == (None, None)
    read = compiled.parse_plain(text)
    if plain:
        assert read == pure_says and type(read) is CodeText
        assert type(read.vuid) is str and type(read.valid) is str
    else:
        assert read is None  # the pure reader takes it from here, with its message
    with using("compiled"):
        assert outcome(lambda: parse_code_text(text)) == pure_says


@pytest.mark.parametrize("value", [None, 42, b"A" * 64 + b":0:" + b"B" * 32, ["text"]])
def test_compiled_reader_leaves_what_is_not_text_to_the_pure_one(compiled, value):
    assert compiled.parse_plain(value) is None


@pytest.mark.parametrize("expires_at_s", [-1, 2**32, 2**64, 1.5, "1900000000", None])
def test_compiled_issue_refuses_expiries_as_the_pure_one_does(using, vault, expires_at_s):
    with using("compiled"):
        compiled_says = outcome(lambda: issue_dynamic(vault, "A" * 64, expires_at_s))
    with using("pure"):
        pure_says = outcome(lambda: issue_dynamic(vault, "A" * 64, expires_at_s))
    assert compiled_says[0] is ValueError and compiled_says == pure_says


def test_nothing_is_kept_or_leaked_per_code(using, vault):
    """Memory and reference counts stay flat over many codes, issued, read, opened and refused."""
    vuid, other = "D" * 64, "E" * 64

    def churn(rounds: int) -> None:
        for _ in range(rounds):
            code = issue_dynamic(vault, vuid, 1_900_000_000)
            read = parse_code_text(code.format() + "\r\n")
            open_valid(vault, read.vuid, read.valid)
            try:
                open_valid(vault, other, read.valid)
            except errors.CodeInvalid:
                pass
            try:
                issue_dynamic(vault, vuid.lower(), 1)
            except ValueError:
                pass

    with using("compiled"):
        churn(2_000)  # warm: caches, free lists
        gc.collect()
        references = sys.getrefcount(vuid), sys.getrefcount(other)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            churn(20_000)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert (sys.getrefcount(vuid), sys.getrefcount(other)) == references
    assert grown < 64 * 1024, f"{grown} bytes kept after 20 000 codes"


def test_the_build_says_why_it_did_not_build_and_fails_only_when_required(monkeypatch, capsys):
    from cardcore import _codec_build

    config = _codec_build.sysconfig.get_config_var
    monkeypatch.setattr(
        _codec_build.sysconfig, "get_config_var", lambda name: "no-such-cc -shared" if name == "LDSHARED" else config(name)
    )
    monkeypatch.setattr(_codec_build, "up_to_date", lambda: False)
    assert _codec_build.build() == "no C compiler (no-such-cc)"
    assert _codec_build.main([]) == 0
    assert _codec_build.main(["--require"]) == 1
    assert "dynamic codes run in pure Python" in capsys.readouterr().err
