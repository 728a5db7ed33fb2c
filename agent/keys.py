"""The Ed25519 key that signs certificates, generated on first use.

The private key lives in ``<state_dir>/keys/certificate-signing.pem`` with
mode 0600 inside a 0700 directory. Its fingerprint, ``SHA256:`` followed by
the hex digest of the raw 32-byte public key, identifies it in certificates.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.errors import LetheError

KEY_FILE = "keys/certificate-signing.pem"


class SigningKeyError(LetheError):
    """The signing key is unreadable or has unsafe permissions."""


def load_or_create(state_dir: Path) -> Ed25519PrivateKey:
    """Return the signing key, creating it (mode 0600) when there is none."""
    path = state_dir / KEY_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
    except FileExistsError:
        return _load(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(pem)
        stream.flush()
        os.fsync(stream.fileno())
    return key


def existing_public_key(state_dir: Path) -> Ed25519PublicKey | None:
    """Return the state directory's public key, or None when no key exists yet."""
    path = state_dir / KEY_FILE
    if not path.exists():
        return None
    return _load(path).public_key()


def _load(path: Path) -> Ed25519PrivateKey:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SigningKeyError(
            f"signing key {path} has mode {mode:o}; run chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise SigningKeyError(f"cannot read signing key {path}: {error}") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
    return key


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    return "SHA256:" + hashlib.sha256(public_bytes(key)).hexdigest()


def encode_public(key: Ed25519PublicKey) -> str:
    return base64.b64encode(public_bytes(key)).decode()


def decode_public(value: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(value, validate=True))
