"""Sealed files: round trips, constant memory and every kind of damage."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import threading
import tracemalloc
from pathlib import Path

import pytest

from agent import seal
from plugins.keys import KekMismatch, KekMissing, KeyStore

MiB = 1 << 20


class PatternReader(io.RawIOBase):
    """A readable stream of ``size`` bytes built from one random block, never held whole."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.block = secrets.token_bytes(MiB + 7)
        self.offset = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.remaining, len(self.block) - self.offset)
        buffer[:count] = self.block[self.offset : self.offset + count]
        self.digest.update(memoryview(buffer)[:count])
        self.offset = (self.offset + count) % len(self.block)
        self.remaining -= count
        return count


class HashingWriter(io.RawIOBase):
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def _pipe_round_trip(
    store: KeyStore, size: int
) -> tuple[PatternReader, HashingWriter, int]:
    """Seal ``size`` bytes into a pipe and unseal them on the other end; return the peak."""
    data_key = store.data_key_for("subject-large")
    header = seal.new_header(data_key, "subject-large")
    source, sink = PatternReader(size), HashingWriter()
    read_end, write_end = os.pipe()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with open(write_end, "wb", buffering=0) as pipe:
                seal.seal_stream(source, pipe, data_key, header)
        except BaseException as error:  # noqa: BLE001 - re-raised by the main thread
            errors.append(error)

    tracemalloc.start()
    producer = threading.Thread(target=produce)
    producer.start()
    with open(read_end, "rb", buffering=0) as pipe:
        read = seal.read_header(pipe, "pipe")
        seal.unseal_stream(pipe, sink, data_key, read, "pipe")
    producer.join()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if errors:
        raise errors[0]
    return source, sink, peak


def test_large_round_trip_constant_memory(store: KeyStore) -> None:
    small_source, small_sink, small_peak = _pipe_round_trip(store, 16 * MiB)
    source, sink, peak = _pipe_round_trip(store, 256 * MiB)
    assert small_sink.digest.digest() == small_source.digest.digest()
    assert sink.size == 256 * MiB
    assert sink.digest.digest() == source.digest.digest()
    assert peak < 12 * MiB
    assert peak < small_peak + 2 * MiB


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096])
def test_round_trip_sizes(store: KeyStore, tmp_path: Path, size: int) -> None:
    data = secrets.token_bytes(size)
    sealed = _seal_bytes(store, tmp_path, data, chunk_size=4096)
    output = tmp_path / "out"
    seal.unseal_file(sealed, output, store)
    assert output.read_bytes() == data


def _seal_bytes(
    store: KeyStore,
    tmp_path: Path,
    data: bytes,
    chunk_size: int = 4096,
    subject: str = "cust-1",
) -> Path:
    """Seal ``data`` with a small chunk size so tests can reach chunk boundaries."""
    data_key = store.data_key_for(subject)
    header = seal.new_header(data_key, subject, chunk_size=chunk_size)
    sealed = tmp_path / "data.lethe"
    with open(sealed, "wb") as sink:
        seal.seal_stream(io.BytesIO(data), sink, data_key, header)
    return sealed


def _chunk_offset(sealed: Path, index: int, chunk_size: int = 4096) -> int:
    with open(sealed, "rb") as stream:
        header = seal.read_header(stream, "x")
    return len(header.raw) + index * (chunk_size + seal.TAG_SIZE)


def _assert_no_output(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists()
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".partial")]


def test_tampered_chunk_rejected(store: KeyStore, tmp_path: Path) -> None:
    sealed = _seal_bytes(store, tmp_path, secrets.token_bytes(3 * 4096 + 10))
    with open(sealed, "r+b") as stream:
        stream.seek(_chunk_offset(sealed, 1) + 100)
        byte = stream.read(1)
        stream.seek(-1, 1)
        stream.write(bytes([byte[0] ^ 1]))
    with pytest.raises(seal.SealedFileTampered, match="chunk 1"):
        seal.unseal_file(sealed, tmp_path / "out", store)
    _assert_no_output(tmp_path)


def test_reordered_chunks_rejected(store: KeyStore, tmp_path: Path) -> None:
    sealed = _seal_bytes(store, tmp_path, secrets.token_bytes(3 * 4096 + 10))
    raw = bytearray(sealed.read_bytes())
    first, second = _chunk_offset(sealed, 0), _chunk_offset(sealed, 1)
    length = second - first
    raw[first:second], raw[second : second + length] = (
        raw[second : second + length],
        raw[first:second],
    )
    sealed.write_bytes(bytes(raw))
    with pytest.raises(seal.SealedFileTampered, match="chunk 0"):
        seal.unseal_file(sealed, tmp_path / "out", store)
    _assert_no_output(tmp_path)


def test_truncated_at_chunk_boundary(store: KeyStore, tmp_path: Path) -> None:
    sealed = _seal_bytes(store, tmp_path, secrets.token_bytes(3 * 4096 + 10))
    os.truncate(sealed, _chunk_offset(sealed, 2))
    with pytest.raises(seal.SealedFileTruncated, match="final chunk is missing"):
        seal.unseal_file(sealed, tmp_path / "out", store)
    _assert_no_output(tmp_path)


def test_truncated_inside_chunk(store: KeyStore, tmp_path: Path) -> None:
    sealed = _seal_bytes(store, tmp_path, secrets.token_bytes(3 * 4096 + 10))
    os.truncate(sealed, _chunk_offset(sealed, 2) - 5)
    with pytest.raises(seal.SealError):
        seal.unseal_file(sealed, tmp_path / "out", store)
    _assert_no_output(tmp_path)


def test_truncated_inside_header(store: KeyStore, tmp_path: Path) -> None:
    sealed = _seal_bytes(store, tmp_path, b"x" * 100)
    os.truncate(sealed, 20)
    with pytest.raises(seal.SealedFileTruncated):
        seal.unseal_file(sealed, tmp_path / "out", store)


def test_appended_bytes_rejected(store: KeyStore, tmp_path: Path) -> None:
    sealed = _seal_bytes(store, tmp_path, secrets.token_bytes(4096 + 10))
    with open(sealed, "ab") as stream:
        stream.write(b"extra")
    with pytest.raises(seal.SealedFileTampered):
        seal.unseal_file(sealed, tmp_path / "out", store)
    _assert_no_output(tmp_path)


def test_edited_header_rejected(store: KeyStore, tmp_path: Path) -> None:
    sealed = _seal_bytes(store, tmp_path, b"payload " * 100, subject="cust-1")
    sealed.write_bytes(sealed.read_bytes().replace(b'"cust-1"', b'"cust-9"', 1))
    with pytest.raises(seal.SealedFileTampered):
        seal.unseal_file(sealed, tmp_path / "out", store)


def test_not_a_sealed_file(store: KeyStore, tmp_path: Path) -> None:
    plain = tmp_path / "plain.lethe"
    plain.write_bytes(b"just text\n")
    with pytest.raises(seal.NotSealed, match="not a Lethe sealed file"):
        seal.unseal_file(plain, tmp_path / "out", store)


def test_wrong_kek_rejected(
    store: KeyStore, store_options: dict, tmp_path: Path
) -> None:
    sealed = _seal_bytes(store, tmp_path, b"secret " * 100)
    other = tmp_path / "other-kek"
    other.write_bytes(secrets.token_bytes(32))
    wrong = KeyStore.from_options({**store_options, "kek_file": str(other)})
    with pytest.raises(KekMismatch, match="configure the key it was sealed with"):
        seal.unseal_file(sealed, tmp_path / "out", wrong)
    _assert_no_output(tmp_path)


def test_missing_kek_rejected(
    store: KeyStore, store_options: dict, tmp_path: Path
) -> None:
    sealed = _seal_bytes(store, tmp_path, b"secret " * 100)
    missing = KeyStore.from_options(
        {**store_options, "kek_file": str(tmp_path / "absent")}
    )
    with pytest.raises(KekMissing, match="not found"):
        seal.unseal_file(sealed, tmp_path / "out", missing)


def test_destroyed_key_names_job_and_date(store: KeyStore, tmp_path: Path) -> None:
    sealed = _seal_bytes(store, tmp_path, b"secret " * 100, subject="cust-42")
    key_id = store.active_for("cust-42")["id"]
    tombstone = store.destroy(key_id, "job-7")
    with pytest.raises(seal.SealKeyDestroyed) as raised:
        seal.unseal_file(sealed, tmp_path / "out", store)
    message = str(raised.value)
    assert "subject cust-42" in message
    assert tombstone["destroyed"] in message
    assert "job job-7" in message
    _assert_no_output(tmp_path)


def test_existing_output_not_replaced(store: KeyStore, tmp_path: Path) -> None:
    sealed = _seal_bytes(store, tmp_path, b"secret " * 100)
    output = tmp_path / "out"
    output.write_bytes(b"keep me")
    with pytest.raises(seal.OutputExists):
        seal.unseal_file(sealed, output, store)
    assert output.read_bytes() == b"keep me"


def test_missing_source_creates_no_key(store: KeyStore, tmp_path: Path) -> None:
    with pytest.raises(seal.SealError, match="nothing was sealed"):
        seal.seal_file(tmp_path / "absent", tmp_path / "absent.lethe", store, "cust-1")
    assert store.active_for("cust-1") is None
    assert not (tmp_path / "absent.lethe").exists()
