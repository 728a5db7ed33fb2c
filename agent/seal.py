"""Sealed files: streaming AES-256-GCM under a per-subject data key.

A sealed file is::

    "LTHSEAL1"  u32 header length  header (JSON)  chunk 0  chunk 1 ... chunk n

Each chunk is ``CHUNK_SIZE`` bytes of plaintext (the last may be shorter,
and an empty file has one empty chunk) followed by its 16-byte GCM tag.
Every file gets its own AES key, derived with HKDF-SHA256 from the data key
and a random salt in the header, so a data key can seal any number of files
without nonce reuse. Chunk ``i`` is encrypted under the nonce
``prefix(7 bytes) || i (u32) || final (1 byte)``, where the prefix is random
per file, and its associated data is the SHA-256 of the header bytes
followed by ``i`` (u64) and the final flag. So an edited header, a changed,
reordered or dropped chunk, a file cut at a chunk boundary (its last chunk
was not sealed as final) and bytes appended after the final chunk all fail
authentication. The construction follows the STREAM online AEAD scheme of
Hoang, Reyhanitabar, Rogaway and Vizár (CRYPTO 2015).

Memory stays constant: two chunk buffers for reading and one for output.
``unseal`` writes into a hidden ``.partial`` file and links it under its
name only after the final chunk authenticates, so a failed unseal leaves no
file that looks whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.errors import EXIT_USAGE, LetheError
from plugins.keys import DataKey, KeyDestroyed, KeyStore, destroyed_message

log = structlog.get_logger(__name__)

MAGIC = b"LTHSEAL1"
VERSION = 1
CHUNK_SIZE = 1 << 20
TAG_SIZE = 16
SUFFIX = ".lethe"
MAX_HEADER = 64 * 1024
MAX_CHUNKS = 1 << 32


class SealError(LetheError):
    """A file could not be sealed or unsealed."""


class NotSealed(SealError):
    """The file is not a Lethe sealed file or its header is malformed."""


class SealedFileTruncated(SealError):
    """The sealed file ends before its final chunk."""


class SealedFileTampered(SealError):
    """A chunk or the header of the sealed file fails authentication."""


class SealKeyDestroyed(SealError):
    """The data key of the sealed file was destroyed."""


class OutputExists(SealError):
    """The output file already exists."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Header:
    """The authenticated header of a sealed file."""

    key_id: str
    subject: str
    salt: bytes
    nonce_prefix: bytes
    chunk_size: int
    raw: bytes

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


@dataclass(frozen=True)
class StreamResult:
    """Bytes read and written by one seal or unseal."""

    plaintext_bytes: int
    chunks: int


def _file_key(data_key: bytes, header: Header) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=header.salt,
        info=b"lethe seal v1\0" + header.key_id.encode("ascii"),
    ).derive(data_key)
    return AESGCM(derived)


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + struct.pack(">IB", index, final)


def _aad(header: Header, index: int, final: bool) -> bytes:
    return header.digest + struct.pack(">QB", index, final)


def new_header(data_key: DataKey, subject: str, chunk_size: int = CHUNK_SIZE) -> Header:
    fields = {
        "version": VERSION,
        "cipher": "AES-256-GCM",
        "kdf": "HKDF-SHA256",
        "key_id": data_key.key_id,
        "subject": subject,
        "salt": secrets.token_hex(16),
        "nonce_prefix": secrets.token_hex(7),
        "chunk_size": chunk_size,
    }
    raw = MAGIC + _header_bytes(fields)
    return _parse_header(raw, "<new>")


def _header_bytes(fields: dict) -> bytes:
    body = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return struct.pack(">I", len(body)) + body


def read_header(stream: BinaryIO, name: str) -> Header:
    """Read and check the header at the start of ``stream``."""
    start = stream.read(len(MAGIC) + 4)
    if len(start) < len(MAGIC) + 4 or not start.startswith(MAGIC):
        raise NotSealed(f"{name} is not a Lethe sealed file (no LTHSEAL1 header)")
    (length,) = struct.unpack(">I", start[len(MAGIC) :])
    if length > MAX_HEADER:
        raise NotSealed(
            f"{name} has a header of {length} bytes; the limit is {MAX_HEADER}"
        )
    body = stream.read(length)
    if len(body) < length:
        raise SealedFileTruncated(f"{name} is truncated inside its header")
    return _parse_header(start + body, name)


def _parse_header(raw: bytes, name: str) -> Header:
    try:
        fields = json.loads(raw[len(MAGIC) + 4 :])
        header = Header(
            key_id=str(fields["key_id"]),
            subject=str(fields["subject"]),
            salt=bytes.fromhex(fields["salt"]),
            nonce_prefix=bytes.fromhex(fields["nonce_prefix"]),
            chunk_size=int(fields["chunk_size"]),
            raw=raw,
        )
        version = fields["version"]
    except (ValueError, KeyError, TypeError):
        raise NotSealed(f"{name} has a malformed sealed-file header") from None
    if version != VERSION:
        raise NotSealed(
            f"{name} is sealed-file version {version}; this Lethe reads version {VERSION}"
        )
    if (
        len(header.nonce_prefix) != 7
        or len(header.salt) != 16
        or not 1 <= header.chunk_size <= 1 << 26
    ):
        raise NotSealed(f"{name} has a malformed sealed-file header")
    return header


def _read_full(stream: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``stream`` unless the stream ends first; return the count."""
    filled = 0
    while filled < len(view):
        count = stream.readinto(view[filled:])
        if not count:
            break
        filled += count
    return filled


def seal_stream(
    source: BinaryIO, sink: BinaryIO, data_key: DataKey, header: Header
) -> StreamResult:
    """Write the header and every chunk of ``source``, sealed, to ``sink``."""
    cipher = _file_key(data_key.key, header)
    size = header.chunk_size
    sink.write(header.raw)
    buffers = [memoryview(bytearray(size)), memoryview(bytearray(size))]
    output = memoryview(bytearray(size + TAG_SIZE))
    current = _read_full(source, buffers[0])
    index = total = 0
    while True:
        following = _read_full(source, buffers[1]) if current == size else 0
        final = following == 0
        if index >= MAX_CHUNKS:
            raise SealError(f"input exceeds {MAX_CHUNKS} chunks of {size} bytes")
        nonce = _nonce(header.nonce_prefix, index, final)
        cipher.encrypt_into(
            nonce,
            buffers[0][:current],
            _aad(header, index, final),
            output[: current + TAG_SIZE],
        )
        sink.write(output[: current + TAG_SIZE])
        total += current
        index += 1
        if final:
            return StreamResult(total, index)
        buffers.reverse()
        current = following


def unseal_stream(
    source: BinaryIO, sink: BinaryIO, data_key: DataKey, header: Header, name: str
) -> StreamResult:
    """Authenticate and decrypt every chunk after the header into ``sink``.

    Raises SealedFileTampered or SealedFileTruncated; the caller discards
    whatever reached ``sink`` in that case.
    """
    cipher = _file_key(data_key.key, header)
    size = header.chunk_size + TAG_SIZE
    buffers = [memoryview(bytearray(size)), memoryview(bytearray(size))]
    output = memoryview(bytearray(header.chunk_size))
    current = _read_full(source, buffers[0])
    index = total = 0
    while True:
        if current < TAG_SIZE:
            raise SealedFileTruncated(
                f"{name} is truncated: chunk {index} is missing or incomplete"
            )
        following = _read_full(source, buffers[1]) if current == size else 0
        final = following == 0
        nonce = _nonce(header.nonce_prefix, index, final)
        try:
            cipher.decrypt_into(
                nonce,
                buffers[0][:current],
                _aad(header, index, final),
                output[: current - TAG_SIZE],
            )
        except InvalidTag:
            raise _chunk_failure(
                cipher, header, buffers[0][:current], index, final, name
            ) from None
        sink.write(output[: current - TAG_SIZE])
        total += current - TAG_SIZE
        index += 1
        if final:
            return StreamResult(total, index)
        buffers.reverse()
        current = following


def _chunk_failure(
    cipher: AESGCM,
    header: Header,
    chunk: memoryview,
    index: int,
    final: bool,
    name: str,
) -> SealError:
    """Tell a file cut at a chunk boundary apart from an altered chunk."""
    if final:
        try:
            cipher.decrypt(
                _nonce(header.nonce_prefix, index, False),
                bytes(chunk),
                _aad(header, index, False),
            )
        except InvalidTag:
            pass
        else:
            return SealedFileTruncated(
                f"{name} is truncated after chunk {index}: its final chunk is missing"
            )
    return SealedFileTampered(
        f"{name}: chunk {index} fails authentication; the file was altered, reordered "
        "or sealed with another key"
    )


# --- files ------------------------------------------------------------------


def seal_file(
    source: Path, destination: Path, store: KeyStore, subject: str
) -> StreamResult:
    """Seal ``source`` into ``destination`` (which must not exist) under the subject's key."""
    with _open_source(source, "sealed") as reader:
        data_key = store.data_key_for(subject)
        header = new_header(data_key, subject)
        result = _write_then_link(
            destination, lambda sink: seal_stream(reader, sink, data_key, header)
        )
    store.record_copy(data_key.key_id, str(destination.resolve()))
    log.info("file sealed", key_id=data_key.key_id, bytes=result.plaintext_bytes)
    return result


def unseal_file(source: Path, destination: Path, store: KeyStore) -> StreamResult:
    """Restore ``source``'s plaintext into ``destination`` (which must not exist)."""
    with _open_source(source, "unsealed") as reader:
        header = read_header(reader, str(source))
        try:
            data_key = store.data_key(header.key_id)
        except KeyDestroyed as error:
            raise SealKeyDestroyed(
                destroyed_message(error.record, header.subject)
            ) from None
        result = _write_then_link(
            destination,
            lambda sink: unseal_stream(reader, sink, data_key, header, str(source)),
        )
    log.info("file unsealed", key_id=header.key_id, bytes=result.plaintext_bytes)
    return result


def _open_source(source: Path, done: str) -> BinaryIO:
    """Open an input file, turning OS errors into a SealError that names it."""
    try:
        return open(source, "rb", buffering=0)
    except OSError as error:
        raise SealError(
            f"cannot read {source}: {error.strerror}; nothing was {done}"
        ) from None


def _write_then_link(
    destination: Path, write: Callable[[BinaryIO], StreamResult]
) -> StreamResult:
    """Run ``write`` into a hidden ``.partial`` file and link it as ``destination`` on success.

    The partial file has mode 0600 and a name that never looks like the
    output. On any failure it is removed and ``destination`` never appears;
    ``os.link`` also refuses to replace a file that appeared meanwhile.
    """
    if destination.exists() or destination.is_symlink():
        raise OutputExists(f"{destination} already exists; choose another output name")
    # NOTE: O_TMPFILE would leave no name at all during the write, but linking
    # it through /proc/self/fd fails with EXDEV on some kernels, so a named
    # partial file is used. A crash mid-write can leave that partial file.
    partial = destination.with_name(
        f".{destination.name}.{secrets.token_hex(4)}.partial"
    )
    try:
        descriptor = os.open(
            partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
    except OSError as error:
        raise SealError(
            f"cannot write in {destination.parent}: {error.strerror}"
        ) from None
    try:
        with os.fdopen(descriptor, "wb", buffering=0) as sink:
            result = write(sink)
            os.fsync(sink.fileno())
        os.link(partial, destination)
    except FileExistsError:
        partial.unlink(missing_ok=True)
        raise OutputExists(
            f"{destination} appeared while writing; nothing was replaced"
        ) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.unlink()
    _fsync_directory(destination.parent)
    return result


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sealed_name(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


def unsealed_name(path: Path) -> Path:
    if path.name.endswith(SUFFIX) and len(path.name) > len(SUFFIX):
        return path.with_name(path.name[: -len(SUFFIX)])
    raise SealError(
        f"{path} does not end in {SUFFIX}; give the output name with --output"
    )
