"""Key vault: the software stand-in for the cipher machine (密码机).

Key purposes:
- ``security``   root key (安全密钥) from which per-person user keys and VUIDs derive;
- ``protection`` protection key (保护密钥) that seals the VALID field of dynamic codes;
- ``data``       encrypts personal data and client secrets at rest;
- ``index``      keys the SM3 blind index used to look personal data up.

Each purpose holds numbered versions; the newest is used for new material and older
ones stay available for what was issued under them, so rotation never invalidates a
card or a code already handed out. Key bytes never leave this object: callers get
operations (encrypt, derive, seal), not keys, and ``repr`` shows only versions.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cardcore import crypto

PURPOSES = ("security", "protection", "data", "index")


class KeyVaultError(RuntimeError):
    """The key file is missing, unreadable or incomplete."""


@dataclass(frozen=True)
class _KeyVersion:
    version: int
    key: bytes
    created_at: str

    def __repr__(self) -> str:  # never print key bytes
        return f"KeyVersion(v{self.version})"


class KeyVault:
    def __init__(self, keys: dict[str, list[_KeyVersion]], *, path: Path | None, dev: bool) -> None:
        for purpose in PURPOSES:
            if not keys.get(purpose):
                raise KeyVaultError(f"key file has no {purpose!r} key")
        self._keys = {p: sorted(v, key=lambda k: k.version) for p, v in keys.items()}
        self._path = path
        self.is_dev = dev
        self._blocks: dict[tuple[str, int], crypto.SM4Block] = {}
        # Per purpose: (version, cipher) pairs newest first; rebuilt when a key rotates.
        self._ciphers: dict[str, tuple[tuple[int, crypto.SM4Block], ...]] = {}
        self._lock = threading.Lock()

    # -- loading and storing ------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KeyVault":
        path = Path(path)
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise KeyVaultError(f"key file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise KeyVaultError(f"key file {path} cannot be read: {exc.__class__.__name__}") from None
        try:
            keys = {
                purpose: [
                    _KeyVersion(int(item["version"]), bytes.fromhex(item["key"]), item.get("created_at", ""))
                    for item in versions
                ]
                for purpose, versions in document["keys"].items()
            }
        except (KeyError, TypeError, ValueError):
            raise KeyVaultError(f"key file {path} is not a key vault document") from None
        for versions in keys.values():
            if any(len(k.key) != 16 for k in versions):
                raise KeyVaultError(f"key file {path} holds a key that is not 16 bytes")
        return cls(keys, path=path, dev=bool(document.get("dev")))

    @classmethod
    def generate(cls, path: str | os.PathLike, *, dev: bool) -> "KeyVault":
        now = _now()
        keys = {p: [_KeyVersion(1, secrets.token_bytes(16), now)] for p in PURPOSES}
        vault = cls(keys, path=Path(path), dev=dev)
        vault.save()
        return vault

    @classmethod
    def open_for(cls, settings) -> "KeyVault":
        """The vault a running platform uses: EHC_KEY_FILE, else generated dev keys under var/."""
        if settings.key_file:
            return cls.load(settings.key_file)
        path = settings.dev_key_file
        if path.exists():
            return cls.load(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls.generate(path, dev=True)

    def save(self) -> None:
        if self._path is None:
            raise KeyVaultError("this vault has no file")
        document = {
            "dev": self.is_dev,
            "keys": {
                p: [{"version": k.version, "key": k.key.hex(), "created_at": k.created_at} for k in v]
                for p, v in self._keys.items()
            },
        }
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(document, fh, indent=2)
        os.replace(tmp, self._path)

    def rotate(self, purpose: str) -> int:
        """Add a new version of a key; it becomes current, older ones stay usable."""
        if purpose == "index":
            raise KeyVaultError("the blind-index key cannot rotate without re-indexing every record")
        self._check_purpose(purpose)
        with self._lock:
            new_version = self.current_version(purpose) + 1
            self._keys[purpose].append(_KeyVersion(new_version, secrets.token_bytes(16), _now()))
            self._ciphers.pop(purpose, None)
        if self._path is not None:
            self.save()
        return new_version

    def __repr__(self) -> str:
        versions = {p: [k.version for k in v] for p, v in self._keys.items()}
        return f"KeyVault(dev={self.is_dev}, versions={versions})"

    # -- versions -----------------------------------------------------------

    def current_version(self, purpose: str) -> int:
        self._check_purpose(purpose)
        return self._keys[purpose][-1].version

    def versions(self, purpose: str) -> list[int]:
        """Versions of a purpose, newest first."""
        self._check_purpose(purpose)
        return [k.version for k in reversed(self._keys[purpose])]

    def _key(self, purpose: str, version: int | None) -> _KeyVersion:
        self._check_purpose(purpose)
        if version is None:
            return self._keys[purpose][-1]
        for item in self._keys[purpose]:
            if item.version == version:
                return item
        raise KeyVaultError(f"no {purpose} key version {version}")

    @staticmethod
    def _check_purpose(purpose: str) -> None:
        if purpose not in PURPOSES:
            raise KeyVaultError(f"unknown key purpose {purpose!r}")

    # -- operations ---------------------------------------------------------

    def block_cipher(self, purpose: str, version: int | None = None) -> crypto.SM4Block:
        """An SM4 block cipher under one key version (cached; keys stay inside)."""
        if version is None:
            ciphers = self._ciphers.get(purpose)
            if ciphers is not None:
                return ciphers[0][1]
            return self.block_ciphers(purpose)[0][1]
        item = self._key(purpose, version)
        cache_key = (purpose, item.version)
        block = self._blocks.get(cache_key)
        if block is None:
            block = self._blocks[cache_key] = crypto.SM4Block(item.key)
        return block

    def block_ciphers(self, purpose: str) -> tuple[tuple[int, crypto.SM4Block], ...]:
        """(version, block cipher) of every version of a purpose, newest first (cached)."""
        ciphers = self._ciphers.get(purpose)
        if ciphers is None:
            ciphers = self._ciphers[purpose] = tuple(
                (version, self.block_cipher(purpose, version)) for version in self.versions(purpose)
            )
        return ciphers

    def mac(self, purpose: str, data: bytes, version: int | None = None) -> bytes:
        return crypto.hmac_sm3(self._key(purpose, version).key, data)

    def encrypt(self, plaintext: bytes) -> str:
        """Seal bytes under the current data key: ``v<version>:<base64(iv ‖ SM4-CBC)>``."""
        item = self._key("data", None)
        iv = secrets.token_bytes(16)
        body = crypto.sm4_cbc_encrypt(item.key, iv, crypto.pkcs7_pad(plaintext))
        return f"v{item.version}:" + base64.b64encode(iv + body).decode()

    def decrypt(self, token: str) -> bytes:
        try:
            version_text, payload = token.split(":", 1)
            raw = base64.b64decode(payload, validate=True)
            item = self._key("data", int(version_text.removeprefix("v")))
            return crypto.pkcs7_unpad(crypto.sm4_cbc_decrypt(item.key, raw[:16], raw[16:]))
        except (ValueError, KeyVaultError):
            raise KeyVaultError("sealed value cannot be opened") from None

    def encrypt_text(self, text: str) -> str:
        return self.encrypt(text.encode())

    def decrypt_text(self, token: str) -> str:
        return self.decrypt(token).decode()

    def blind_index(self, field: str, value: str) -> str:
        """Keyed SM3 index of a normalised value, so equal values can be found without storing them."""
        return self.mac("index", f"{field}\x00{value}".encode()).hex()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
