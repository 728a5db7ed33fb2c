"""Secret key files in the state directory: created once with mode 0600, checked on read."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

#: Bytes of every HMAC key file (HMAC-SHA256 takes a key of its block size or less).
KEY_SIZE = 32


def load_or_create(path: Path, label: str, error: type[Exception]) -> tuple[bytes, bool]:
    """Return the key in ``path`` and whether this call created it.

    The file is created with O_EXCL and mode 0600, so two processes that
    start at once end up with the same key. ``error`` is raised, with
    ``label`` naming the key, when an existing file is unsafe or damaged.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
    except FileExistsError:
        return read(path, label, error), False
    key = secrets.token_bytes(KEY_SIZE)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(key)
        stream.flush()
        os.fsync(stream.fileno())
    return key, True


def read(path: Path, label: str, error: type[Exception]) -> bytes:
    """Return the key in ``path``; raise ``error`` if others may read it or its size is wrong."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise error(f"{label} {path} has mode {mode:o}; run chmod 600 {path}")
    try:
        key = path.read_bytes()
    except OSError as failure:
        raise error(f"cannot read {label} {path}: {failure.strerror}") from failure
    if len(key) != KEY_SIZE:
        raise error(
            f"{label} {path} is {len(key)} bytes long, expected {KEY_SIZE}; "
            "restore the file from the backup of the state directory"
        )
    return key
