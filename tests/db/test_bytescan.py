"""Numpy prefilter scanner: finds what the Aho-Corasick scanner finds."""

from __future__ import annotations

import hashlib
import os
import secrets

import numpy
import pytest

from plugins import _bytescan, scan


def test_hits_match_reference_scanner(tmp_path, monkeypatch):
    monkeypatch.setattr(_bytescan, "CHUNK", 4096)  # force many chunk boundaries
    fingerprints = [f"user{n}.{secrets.token_hex(6)}@example.org".encode() for n in range(300)]
    data = bytearray(os.urandom(64 * 1024))
    for number, offset in ((3, 0), (150, 4090), (299, len(data) - len(fingerprints[299]))):
        data[offset : offset + len(fingerprints[number])] = fingerprints[number]
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(data))
    fast = _bytescan.RowScanner()
    reference = scan.AutomatonScanner()
    for number, fingerprint in enumerate(fingerprints):
        fast.add_all(str(number), [fingerprint])
        reference.add(str(number), fingerprint)

    found = sorted((hit.owner, hit.offset) for hit in fast.scan_file(path))

    assert found == sorted((hit.owner, hit.offset) for hit in reference.scan_file(path))
    assert found == sorted([("3", 0), ("150", 4090), ("299", len(data) - len(fingerprints[299]))])


def test_scan_reads_appended_bytes(tmp_path, monkeypatch):
    # Chunks are searched in parallel up to the size measured first. What a
    # server appended since is read after, and a match across the old end is
    # found once.
    monkeypatch.setattr(_bytescan, "CHUNK", 4096)
    values = [f"user{n}.{secrets.token_hex(6)}@example.org".encode() for n in range(3)]
    data = bytearray(os.urandom(20000))
    placed = {0: 4090, 1: 11990, 2: 15000}
    for number, offset in placed.items():
        data[offset : offset + len(values[number])] = values[number]
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(data))
    scanner = _bytescan.RowScanner()
    for number, value in enumerate(values):
        scanner.add_all(str(number), [value])
    real_fstat = os.fstat

    def measured_early(descriptor):
        # The size as it was before the last 8000 bytes were written.
        result = real_fstat(descriptor)
        return os.stat_result((*result[:6], result.st_size - 8000, *result[7:]))

    monkeypatch.setattr(_bytescan.os, "fstat", measured_early)

    found = sorted((hit.owner, hit.offset) for hit in scanner.scan_file(path))

    assert found == sorted((str(number), offset) for number, offset in placed.items())


def test_values_sharing_a_suffix_are_told_apart(tmp_path):
    values = [f"{secrets.token_hex(4)}@example.org".encode() for _ in range(50)]
    scanner = _bytescan.RowScanner()
    for number, value in enumerate(values):
        scanner.add_all(str(number), [value])
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(1000) + values[7] + os.urandom(1000))

    found = [(hit.owner, hit.offset) for hit in scanner.scan_file(path)]

    assert found == [("7", 1000)]


def test_every_alignment_and_short_values(tmp_path):
    long_value = b"user42.0123456789abcdef@example.org"
    short_value = b"Koehler9"
    scanner = _bytescan.RowScanner()
    scanner.add_all("long", [long_value])
    scanner.add_all("short", [short_value])
    data = bytearray(os.urandom(4096))
    expected = []
    for phase in range(8):
        offset = 100 * (phase + 1) + phase
        data[offset : offset + len(long_value)] = long_value
        expected.append(("long", offset))
        offset += 2000
        data[offset : offset + len(short_value)] = short_value
        expected.append(("short", offset))
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(data))

    found = sorted((hit.owner, hit.offset) for hit in scanner.scan_file(path))

    assert found == sorted(expected)


def test_repeats_and_overlaps_match_brute_force(tmp_path, monkeypatch):
    monkeypatch.setattr(_bytescan, "CHUNK", 2048)
    pieces = [secrets.token_hex(4).encode() for _ in range(6)]
    fingerprints = [
        pieces[0] * 4,  # 8-byte run repeated: several keys match one window
        pieces[1] + pieces[2] + pieces[1],
        pieces[3][:8] + b"tail-part",  # 17 bytes
        pieces[4][:8],  # shortest length, any alignment
        pieces[5] * 20,  # longer than a window step, repeated
        pieces[2] + pieces[1],  # a part of the second fingerprint
    ]
    data = bytearray(os.urandom(16 * 1024))
    offset = 1
    for number, fingerprint in enumerate(fingerprints * 3):
        data[offset : offset + len(fingerprint)] = fingerprint
        offset += len(fingerprint) + 2039 + number  # land across chunk borders
    # Near misses: right key, wrong first or last bytes.
    data[12000:12017] = b"X" + fingerprints[2][1:]
    data[13000:13032] = pieces[0] * 3 + b"zzzzzzzz"
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(data))
    scanner = _bytescan.RowScanner()
    for number, fingerprint in enumerate(fingerprints):
        scanner.add_all(str(number), [fingerprint])

    found = {(hit.owner, hit.offset) for hit in scanner.scan_file(path)}

    expected = set()
    for number, fingerprint in enumerate(fingerprints):
        start = data.find(fingerprint)
        while start != -1:
            expected.add((str(number), start))
            start = data.find(fingerprint, start + 1)
    assert found == expected


def _brute_force(data: bytes, owners: dict[bytes, list[str]]) -> set[tuple[str, int]]:
    expected = set()
    for fingerprint, names in owners.items():
        start = data.find(fingerprint)
        while start != -1:
            expected.update((name, start) for name in names)
            start = data.find(fingerprint, start + 1)
    return expected


# Bucket sizes that send every lookup down one path, the binary search (0)
# or the bucket-by-bucket comparison (1000).
@pytest.mark.parametrize("max_bucket_keys", [0, 1000])
def test_keys_shared_by_many_fingerprints(tmp_path, monkeypatch, max_bucket_keys):
    monkeypatch.setattr(_bytescan, "CHUNK", 4096)
    monkeypatch.setattr(_bytescan, "_MAX_BUCKET_KEYS", max_bucket_keys)
    # The fingerprints of a group share their middle bytes, so their keys
    # are equal. The first group has 800 keys of one value, the second
    # three keys of each value.
    crowded = [b"%04d" % n + b"x" * 16 + b"%04d" % n for n in range(100)]
    group = [b"%03d" % n + b"0123456789abcdef" + b"%03d" % n for n in range(3)]
    owners = {fingerprint: [f"crowded{n}"] for n, fingerprint in enumerate(crowded)}
    owners.update({fingerprint: [f"group{n}"] for n, fingerprint in enumerate(group)})
    # One value shared by two rows is reported for both.
    owners[crowded[7]].append("twin")
    data = bytearray(os.urandom(32 * 1024))
    offset = 5
    for fingerprint in [*crowded[::9], *group, crowded[7]]:
        data[offset : offset + len(fingerprint)] = fingerprint
        offset += len(fingerprint) + 997
    data[30000:30024] = b"9999" + b"x" * 16 + b"9999"  # right middle, no such row
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(data))
    scanner = _bytescan.RowScanner()
    for fingerprint, names in owners.items():
        for name in names:
            scanner.add_all(name, [fingerprint])

    found = sorted((hit.owner, hit.offset) for hit in scanner.scan_file(path))

    assert found == sorted(_brute_force(bytes(data), owners))
    assert ("twin", data.find(crowded[7])) in found


def _key_sharing(index: _bytescan._KeyIndex) -> int:
    """Return how many keys of an index the most shared key value stands for."""
    _, counts = numpy.unique(index.products, return_counts=True)
    return int(counts.max())


def test_shared_prefix_keys_distinct():
    # Phone numbers share their first eight bytes; keyed by those, a window
    # equal to "+1-555-0" was compared with every number (2.5 GB for 10,000).
    phones = [f"+1-555-{number:07d}".encode() for number in range(10000)]

    index = _bytescan._KeyIndex(phones, spread=False)

    assert _key_sharing(index) == 1


def test_crowded_long_values_keyed_elsewhere(tmp_path):
    # Every 15-byte span of these values contains "aaaaaaaa", so a run of "a"
    # in a file would be compared with all of them.
    values = [b"a" * 40 + f"{number:06d}".encode() for number in range(2000)]
    scanner = _bytescan.RowScanner()
    for number, value in enumerate(values):
        scanner.add_all(str(number), [value])
    path = tmp_path / "data.bin"
    path.write_bytes(b"a" * 100_000 + values[42] + b"a" * 1000)

    indexes = scanner._built()
    hits = list(scanner.scan_file(path))

    assert len(indexes) == 1
    assert _key_sharing(indexes[0][0]) == 1
    assert [(hit.owner, hit.offset) for hit in hits] == [("42", 100_000)]


def test_widely_shared_keys_found_in_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(_bytescan, "_MAX_PAIRS", 64)
    values = [b"x" * 8 + bytes([number % 256, number // 256]) for number in range(600)]
    scanner = _bytescan.RowScanner()
    for number, value in enumerate(values):
        scanner.add_all(str(number), [value])
    # Force every value under the same key, as identical fingerprints' runs do.
    monkeypatch.setattr(
        _bytescan, "_rarest_offsets", lambda joined, starts, lengths: numpy.zeros_like(starts)
    )
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 5000 + values[300] + b"x" * 64 + values[7])

    found = sorted((hit.owner, hit.offset) for hit in scanner.scan_file(path))

    assert found == [("300", 5000), ("7", 5074)]


def test_live_rows_hits_inside_one_row():
    # Surviving rows are scanned many at a time; a fingerprint found only
    # across two rows, or across the separator, is not explained by either.
    from plugins._rows import _LiveRows

    inside = b"Customer 1234"
    across = b"ABCDEFGH\0IJKLMNOP"
    scanner = scan.FingerprintScanner()
    scanner.add("live", inside)
    scanner.add("live", across)
    lengths = {scan.fingerprint_digest(fp): len(fp) for fp in (inside, across)}
    found: set[str] = set()
    rows = _LiveRows(scanner, lengths, found)
    rows.add(b"Customer 12345")
    rows.add(b"xxABCDEFGH")
    rows.add(b"IJKLMNOPyy")
    rows.scan()

    assert scan.fingerprint_digest(inside) in found
    assert scan.fingerprint_digest(across) not in found


def test_shared_live_value_one_record_per_place(tmp_path, monkeypatch):
    # 1500 planned rows and 1500 surviving ones share a country, which the
    # file contains in 1500 places. A hit per planned row and place would
    # make 2.25 million hits.
    import sqlite3

    from plugins.sqlite import SQLitePlugin
    from tests.helpers.driver import run_plugin

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT, country TEXT)"
        )
        conn.executemany(
            "INSERT INTO people VALUES (?, ?, 'United Kingdom of Great Britain')",
            [(number, f"person{number}@example.org") for number in range(1, 3001)],
        )
    hits_built = []
    real_hit = scan.Hit

    def counted_hit(*args):
        hits_built.append(args)
        return real_hit(*args)

    monkeypatch.setattr(scan, "Hit", counted_hit)

    run = run_plugin(
        SQLitePlugin,
        f"sqlite://{path}?table=people&where=id <= ?",
        {"params": [1500], "rows_per_item": 1},
    )

    assert len(run.planned) == 1500
    assert not run.unverified()
    # Hits owned by planned rows, not those of the surviving rows' check.
    row_hits = [args for args in hits_built if args[0] != "live"]
    assert len(row_hits) < 1500


def test_empty_shrunk_and_chunk_sized_files(tmp_path, monkeypatch):
    monkeypatch.setattr(_bytescan, "CHUNK", 4096)
    value = f"user.{secrets.token_hex(8)}@example.org".encode()
    scanner = _bytescan.RowScanner()
    scanner.add_all("row", [value])
    data = bytearray(os.urandom(4096))
    data[4096 - len(value) :] = value
    exact = tmp_path / "exact.bin"
    exact.write_bytes(bytes(data))
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")

    assert list(scanner.find_in_file(exact)) == [(value, 4096 - len(value))]
    assert list(scanner.find_in_file(empty)) == []

    real_fstat = os.fstat

    def measured_late(descriptor):
        # The size as it was before the file lost its last 1000 bytes.
        result = real_fstat(descriptor)
        return os.stat_result((*result[:6], result.st_size + 1000, *result[7:]))

    monkeypatch.setattr(_bytescan.os, "fstat", measured_late)

    assert list(scanner.find_in_file(exact)) == [(value, 4096 - len(value))]
    assert list(scanner.find_in_file(empty)) == []


def test_values_copied_once_keep_their_middle_keys(tmp_path):
    # Each name is copied into a note, so their middles share keys. A pair
    # costs the scan little, so the index keeps its one sort of the middles.
    digests = [hashlib.md5(str(number).encode()).hexdigest().encode() for number in range(1000)]
    values = [b"name-%06d:" % number + text for number, text in enumerate(digests)] + [
        b"note-%06d:" % number + text + b":end-%06d" % number
        for number, text in enumerate(digests)
    ]
    words, lengths, starts = _bytescan._pack(values)

    bases, shared, ordered = _bytescan._rarest_spans(words, starts, lengths)

    assert ordered is not None
    assert int(shared.max()) == 2
    assert bases.tolist() == ((lengths - _bytescan._SPAN) // 2).tolist()
    scanner = _bytescan.RowScanner()
    for number, value in enumerate(values):
        scanner.add_all(str(number), [value])
    path = tmp_path / "data.bin"
    path.write_bytes(b"\0" * 3 + values[7] + b"\0" * 5 + values[1007])
    hits = sorted((hit.owner, hit.offset) for hit in scanner.scan_file(path))
    assert hits == [("1007", 3 + len(values[7]) + 5), ("7", 3)]
