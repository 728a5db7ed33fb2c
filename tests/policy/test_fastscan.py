"""The vectorised scanner reports exactly what the regular-expression scanner does."""

from __future__ import annotations

import random

import pytest

from agent.policy.detectors import Scanner, ScannerSettings

from .reference import make_card, random_digits, random_mobile, random_ric, random_uscc


def _noise(rng: random.Random) -> str:
    pieces = [
        lambda: random_ric(rng),
        lambda: random_ric(rng).lower(),
        lambda: random_uscc(rng),
        lambda: make_card(
            rng.choice(["4", "51", "62", "37"]), rng.choice([13, 15, 16, 19]), rng
        ),
        lambda: random_mobile(rng),
        lambda: "+86" + random_mobile(rng),
        lambda: "0086" + random_mobile(rng),
        lambda: (
            (m := random_mobile(rng))[:3]
            + rng.choice("- ")
            + m[3:7]
            + rng.choice("- ")
            + m[7:]
        ),
        lambda: random_digits(rng, rng.randrange(8, 22)),
        lambda: (
            f"{rng.choice(['li', 'a.b', '.x', 'u_1', ''])}@{rng.choice(['example.com', 'x', '138123456789.cn', 'a.b.c.org', '-bad.com'])}"
        ),
        lambda: rng.choice(["手机", "电话", "phone:", "Tel", "mobile", "id", "卡号"]),
        lambda: "".join(
            rng.choice("ABCDEFXYZ0123456789") for _ in range(rng.randrange(10, 20))
        ),
        lambda: rng.choice([" ", ",", ";", "\n", "@", ".", "-", "x", "X", "\t"]),
    ]
    return "".join(
        rng.choice(pieces)() + rng.choice([" ", ",", "", "\n", "|"])
        for _ in range(4000)
    )


def _matches(
    scanner: Scanner, data: bytes, chunk: int, context: bool
) -> list[tuple[int, str, str]]:
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    # Within one buffer the two scanners may list values in another order.
    return sorted(
        (m.offset, m.kind, m.value) for m in scanner.scan_stream(chunks, context)
    )


ENGINES = ["numpy", "compiled"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("chunk", [700, 4096, 1 << 20])
def test_fast_scanner_matches_regex_scanner(engine: str, seed: int, chunk: int) -> None:
    rng = random.Random(seed)
    data = _noise(rng).encode("utf-8")
    context = seed % 3 == 0
    expected = _matches(Scanner(fast=False), data, chunk, context)
    assert len(expected) > 100
    assert _matches(Scanner(engine=engine), data, chunk, context) == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_fast_scanner_honours_settings(engine: str) -> None:
    rng = random.Random(42)
    data = _noise(rng).encode("utf-8")
    settings = ScannerSettings(
        kinds=frozenset({"cn-mobile", "bank-card"}),
        mobile_context=("tel",),
        mobile_window=8,
    )
    expected = _matches(Scanner(settings, fast=False), data, 4096, False)
    assert _matches(Scanner(settings, engine=engine), data, 4096, False) == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_count_stream_matches_scan_stream(engine: str) -> None:
    rng = random.Random(7)
    data = _noise(rng).encode("utf-8")
    chunks = [data[i : i + 3000] for i in range(0, len(data), 3000)]
    scanner = Scanner(engine=engine)
    from agent.policy.detectors import Findings

    counted = Findings()
    scanner.count_stream(chunks, counted)
    listed = Findings()
    for match in scanner.scan_stream(chunks):
        listed.add(match)
    assert counted.counts == listed.counts


@pytest.mark.parametrize("workers", [1, 2])
def test_compiled_file_scan_matches_stream(
    tmp_path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    from agent.policy import discovery, jitscan
    from agent.policy.detectors import Findings

    rng = random.Random(11)
    data = (_noise(rng) + _noise(rng)).encode("utf-8")
    path = tmp_path / "noise.txt"
    path.write_bytes(data)
    expected = Findings()
    Scanner(fast=False).count_stream([data], expected)
    # Small windows put many window edges, and both threads, in one file.
    monkeypatch.setattr(discovery, "COMPILED_MIN_BYTES", 0)
    monkeypatch.setattr(jitscan, "WINDOW", 4096)
    found = discovery.discover_file(path, Scanner(), workers=workers)
    assert found.counts == expected.counts
    assert found.scanned_bytes == len(data)
    assert not found.truncated
    limited = discovery.discover_file(path, Scanner(), max_bytes=10_000)
    assert limited.truncated
    assert limited.scanned_bytes == 10_000


def _values(scanner: Scanner, data: bytes) -> list[tuple[int, str, str]]:
    return sorted((m.offset, m.kind, m.value) for m in scanner.scan(data))


# One value of each kind, with mobile numbers after a context word. Runs one
# byte too long or with a letter in them are added too. A run-length or
# digit test that fails at a 64-byte group edge then changes the result.
_EDGE_VALUES = [
    "11010519491231002X",
    "110105194912310021",
    "91350100M000100Y43",
    "6212345678901234568",
    "tel 13812345678",
    "tel 138-1234-5678",
    "tel 138 1234 567",
    "li.wei@mail.example.cn",
    "1101051949123100211",
    "61101051949123100211",
    "A10105194912310021",
    "11010519491231002Xa",
    "4111111111111111",
]


@pytest.mark.parametrize("separator", [" ", "", "-", "@"])
def test_compiled_scanner_group_edges(separator: str) -> None:
    compiled = Scanner(engine="compiled")
    regex = Scanner(fast=False)
    for value in _EDGE_VALUES:
        for shift in range(140):
            data = ("x" * shift + separator + value + ",").encode("ascii")
            expected = _values(regex, data)
            assert _values(compiled, data) == expected, (value, shift)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("tel:13812345678", True),
        ("TEL:13812345678", True),
        ("Tel 13812345678", True),
        ("tel.....13812345678", True),
        ("tel......13812345678", False),
        ("te:13812345678", False),
        ("手机13812345678", True),
        ("手机 13812345678", True),
        ("手机号码13812345678", False),
        ("tel 138-1234-5678", True),
        ("tel      138-1234-5678", False),
        ("13812345678 tel", False),
    ],
)
def test_compiled_mobile_context_window(text: str, found: bool) -> None:
    # Words that share a first byte ("t", and the first byte of 手) must
    # each be compared.
    settings = ScannerSettings(
        mobile_context=("tab", "tel", "手册", "手机"), mobile_window=8
    )
    data = text.encode("utf-8")
    expected = _values(Scanner(settings, fast=False), data)
    assert bool(expected) is found
    assert _values(Scanner(settings, engine="compiled"), data) == expected


def test_compiled_mobile_without_context_words() -> None:
    settings = ScannerSettings(mobile_context=())
    scanner = Scanner(settings, engine="compiled")
    assert _values(scanner, b"tel 13812345678 phone 138-1234-5678") == []


def test_compiled_file_scan_reuses_buffers(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.policy import discovery, jitscan
    from agent.policy.detectors import Findings

    # The last window is short, and the window before it leaves the digits
    # that would complete the number at its end in the reused buffer.
    monkeypatch.setattr(discovery, "COMPILED_MIN_BYTES", 0)
    monkeypatch.setattr(jitscan, "WINDOW", 4096)
    data = bytearray(b"." * (2 * 4096 + 100))
    tail = b"tel 138"
    data[-len(tail) :] = tail
    stale = 4096 - 1024 + (len(data) - (2 * 4096 - 1024))
    data[stale : stale + 8] = b"12345678"
    path = tmp_path / "short-end.txt"
    path.write_bytes(bytes(data))
    expected = Findings()
    Scanner(fast=False).count_stream([bytes(data)], expected)
    assert expected.counts == {}
    found = discovery.discover_file(path, Scanner(), workers=1)
    assert found.counts == expected.counts
    assert found.scanned_bytes == len(data)
