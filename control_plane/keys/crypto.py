"""AES-256-GCM encryption of provider keys under a keyring of master keys.

The keyring comes from settings: SWITCHBOARD_MASTER_KEYS ("id:base64key,id2:base64key") or a key
file with one "id:base64key" per line. The first key is active: it encrypts; every key decrypts,
so the active key can change and `switchboard keys rotate-master` re-encrypts at leisure.
"""

import base64
import binascii
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from control_plane.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_DEV_KEY_FILE = Path(".switchboard/master.key")
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class MasterKeyError(RuntimeError):
    """The keyring is missing or malformed; start-up stops with this message."""


class DecryptionError(RuntimeError):
    """A stored key could not be decrypted (unknown master key id or tampered ciphertext)."""


@dataclass(frozen=True)
class Sealed:
    master_key_id: str
    nonce: str
    ciphertext: str


def generate_master_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def parse_keyring(text: str) -> list[tuple[str, bytes]]:
    entries: list[tuple[str, bytes]] = []
    for raw in re.split(r"[,\n]", text):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        key_id, sep, encoded = item.partition(":")
        if not sep or not KEY_ID_PATTERN.match(key_id):
            raise MasterKeyError("master key entries must look like 'id:base64-of-32-bytes'")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MasterKeyError(f"master key '{key_id}' is not valid base64") from exc
        if len(key) != 32:
            raise MasterKeyError(
                f"master key '{key_id}' must be 32 bytes (AES-256), got {len(key)}"
            )
        if any(existing == key_id for existing, _ in entries):
            raise MasterKeyError(f"master key id '{key_id}' appears twice")
        entries.append((key_id, key))
    return entries


class Keyring:
    def __init__(self, entries: list[tuple[str, bytes]]) -> None:
        if not entries:
            raise MasterKeyError("the master keyring is empty")
        self._keys = dict(entries)
        self.active_id = entries[0][0]

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for another purpose (e.g. signing), derived from the active master key."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
            self._keys[self.active_id]
        )

    def seal(self, plaintext: str, associated_data: str) -> Sealed:
        nonce = secrets.token_bytes(12)
        ciphertext = AESGCM(self._keys[self.active_id]).encrypt(
            nonce, plaintext.encode("utf-8"), associated_data.encode("utf-8")
        )
        return Sealed(
            master_key_id=self.active_id,
            nonce=base64.b64encode(nonce).decode(),
            ciphertext=base64.b64encode(ciphertext).decode(),
        )

    def open(self, sealed: Sealed, associated_data: str) -> str:
        key = self._keys.get(sealed.master_key_id)
        if key is None:
            raise DecryptionError(
                f"master key '{sealed.master_key_id}' is not in the keyring; add it back to decrypt"
            )
        try:
            plaintext = AESGCM(key).decrypt(
                base64.b64decode(sealed.nonce),
                base64.b64decode(sealed.ciphertext),
                associated_data.encode("utf-8"),
            )
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise DecryptionError(
                "stored key failed authentication (tampered or misplaced)"
            ) from exc
        return plaintext.decode("utf-8")

    @classmethod
    def from_settings(cls, settings: Settings) -> "Keyring":
        if settings.master_keys is not None and settings.master_keys.get_secret_value().strip():
            return cls(parse_keyring(settings.master_keys.get_secret_value()))
        path = settings.master_key_file
        if path is None and settings.environment != "production":
            path = DEFAULT_DEV_KEY_FILE
        if path is not None and path.exists():
            keyring = cls(parse_keyring(path.read_text()))
            if settings.environment == "production" and keyring.active_id.startswith("dev-"):
                raise MasterKeyError(
                    f"The master key in {path} is a development key (made on a first run outside "
                    "production); production needs its own: `switchboard keys generate-master`."
                )
            return keyring
        if settings.environment == "production":
            raise MasterKeyError(
                "No master key: set SWITCHBOARD_MASTER_KEYS='id:base64key' or "
                "SWITCHBOARD_MASTER_KEY_FILE. Generate one with `switchboard keys generate-master`."
            )
        assert path is not None
        create_key_file(path, f"dev-{secrets.token_hex(3)}")
        logger.warning(
            "created a development master key at %s (environment=%s); "
            "production needs SWITCHBOARD_MASTER_KEYS or SWITCHBOARD_MASTER_KEY_FILE",
            path,
            settings.environment,
        )
        return cls(parse_keyring(path.read_text()))


def create_key_file(path: Path, key_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{key_id}:{generate_master_key()}\n")


def prepend_key(path: Path, key_id: str) -> None:
    """Make a new key active in a key file, keeping the old ones for decryption."""
    if not KEY_ID_PATTERN.match(key_id):
        raise MasterKeyError("key id may use letters, digits, '.', '_' and '-' only")
    existing = path.read_text() if path.exists() else ""
    if any(line.split(":", 1)[0] == key_id for line in existing.splitlines()):
        raise MasterKeyError(f"master key id '{key_id}' already exists")
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{key_id}:{generate_master_key()}\n{existing}")
    temporary.replace(path)
