"""Detectors on tables of valid and invalid numbers."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest

from agent.policy import detectors
from agent.policy.detectors import Scanner, ScannerSettings, mask_example

from .reference import make_card, make_ric, make_uscc, ric_check

VALID_RIC = [
    "11010519491231002X",  # check character X
    "11010519491231002x",  # lower-case x
    make_ric("110101", date(2000, 2, 29), 123),  # leap day in a leap century year
    make_ric("440305", date(1996, 2, 29), 7),
    make_ric("650102", date(1900, 1, 1), 0),
    make_ric("510107", date.today(), 999),  # born today
    make_ric("830000", date(1985, 12, 31), 1),  # Taiwan residence permit
]

INVALID_RIC = [
    make_ric("110101", date(1999, 3, 1), 1)[:-1] + "0",  # wrong check (when not 0)
    "110101"
    + "19000229"
    + "123"
    + ric_check("11010119000229123"),  # 1900 was no leap year
    "110101"
    + "20230229"
    + "001"
    + ric_check("11010120230229001"),  # Feb 29 of a common year
    "110101" + "19991301" + "001" + ric_check("11010119991301001"),  # month 13
    "110101" + "19990431" + "001" + ric_check("11010119990431001"),  # April 31
    "110101" + "19990100" + "001" + ric_check("11010119990100001"),  # day 0
    "990101" + "19800101" + "001" + ric_check("99010119800101001"),  # no province 99
    "110101" + "17990101" + "001" + ric_check("11010117990101001"),  # before 1800
]


def _future_ric() -> str:
    body = f"110101{date.today() + timedelta(days=1):%Y%m%d}001"
    return body + ric_check(body)


@pytest.mark.parametrize("number", VALID_RIC)
def test_ric_valid(number: str) -> None:
    assert detectors.is_cn_ric(number)


@pytest.mark.parametrize("number", [n for n in INVALID_RIC if n != VALID_RIC[0]])
def test_ric_invalid(number: str) -> None:
    assert not detectors.is_cn_ric(number)


def test_ric_future_birth_date_invalid() -> None:
    assert not detectors.is_cn_ric(_future_ric())


def test_ric_every_wrong_check_character_rejected() -> None:
    valid = make_ric("310104", date(1977, 7, 7), 42)
    for wrong in "0123456789X":
        if wrong != valid[-1]:
            assert not detectors.is_cn_ric(valid[:-1] + wrong), wrong


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("110105491231002", True),
        ("440305960229123", True),  # 1996-02-29
        ("440305970229123", False),  # 1997-02-29
        ("440305971301123", False),  # month 13
        ("990105491231002", False),  # no province 99
        ("11010549123100", False),  # 14 digits
    ],
)
def test_ric15(number: str, valid: bool) -> None:
    assert detectors.is_cn_ric15(number) is valid


VALID_USCC = [
    "91350100M000100Y43",
    make_uscc("91110105MA01ABCD0"),
    make_uscc("11100000000013127"),  # national-level authority, area 100000
    make_uscc("Y1440300MA5DABC12"),
    "91110105000000020X",  # 17 digits and check character X
]


@pytest.mark.parametrize("code", VALID_USCC)
def test_uscc_valid(code: str) -> None:
    assert detectors.is_cn_uscc(code)


@pytest.mark.parametrize(
    "code",
    [
        "91350100M000100Y44",  # wrong check character
        "91350100M000100Y4",  # 17 characters
        "91350100I000100Y43",  # I is not in the alphabet
        "91350100O000100Y43",  # O
        "91350100Z000100Y43",  # Z
        "91350100S000100Y43",  # S
        "91350100V000100Y43",  # V
        "91350100m000100y43",  # lower case
        make_uscc("0135010000010011"),  # registration authority 0 does not exist
        make_uscc("91990100M00010011"),  # no province 99
    ],
)
def test_uscc_invalid(code: str) -> None:
    assert not detectors.is_cn_uscc(code)


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4111111111111111", True),  # Visa, 16
        ("4222222222222", True),  # Visa, 13
        ("378282246310005", True),  # American Express, 15
        ("5555555555554444", True),  # Mastercard
        ("2223003122003222", True),  # Mastercard 2-series
        ("6222021234567890127", False),  # UnionPay length 19, wrong Luhn
        ("4111111111111112", False),  # wrong Luhn
        ("9111111111111111", False),  # no issuer starts with 9
        ("411111111111", False),  # 12 digits
        ("41111111111111111111", False),  # 20 digits
    ],
)
def test_bank_card(number: str, valid: bool) -> None:
    assert detectors.is_bank_card(number) is valid


def test_bank_card_generated_boundaries() -> None:
    rng = random.Random(7)
    for length in (13, 16, 19):
        assert detectors.is_bank_card(make_card("62", length, rng)), length


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("13812345678", True),
        ("19912345678", True),
        ("+8613812345678", True),
        ("008613812345678", True),
        ("138-1234-5678", True),
        ("12812345678", False),  # second digit 2
        ("1381234567", False),
        ("23812345678", False),
    ],
)
def test_mobile(text: str, valid: bool) -> None:
    assert detectors.is_cn_mobile(text) is valid


def _kinds(scanner: Scanner, text: str, context: bool = False) -> list[tuple[str, str]]:
    return [(m.kind, m.value) for m in scanner.scan_text(text, context)]


def test_scanner_finds_each_kind_in_text() -> None:
    text = (
        "客户 11010519491231002X 手机:13812345678 卡号 4111111111111111 "
        "mail li.na+shop@example.com.cn 统一社会信用代码 91350100M000100Y43 "
        "老证 110105491231002"
    )
    assert _kinds(Scanner(), text) == [
        ("cn-ric", "11010519491231002X"),
        ("cn-mobile", "13812345678"),
        ("bank-card", "4111111111111111"),
        ("email", "li.na+shop@example.com.cn"),
        ("cn-uscc", "91350100M000100Y43"),
        ("cn-ric15", "110105491231002"),
    ]


@pytest.mark.parametrize("fast", [True, False])
def test_scanner_credit_code_ending_in_x(fast: bool) -> None:
    scanner = Scanner(fast=fast)
    assert _kinds(scanner, "code 91110105000000020X.") == [
        ("cn-uscc", "91110105000000020X")
    ]


def test_scanner_mobile_needs_context() -> None:
    assert _kinds(Scanner(), "order 13812345678 shipped") == []


def test_scanner_mobile_context_window_is_bounded() -> None:
    text = "phone" + " " * 100 + "13812345678"
    assert _kinds(Scanner(), text) == []


def test_scanner_mobile_context_from_caller() -> None:
    assert _kinds(Scanner(), "13812345678", context=True) == [
        ("cn-mobile", "13812345678")
    ]


def test_scanner_mobile_without_required_context() -> None:
    scanner = Scanner(ScannerSettings(mobile_require_context=False))
    assert _kinds(scanner, "x 13812345678 y") == [("cn-mobile", "13812345678")]


def test_scanner_ignores_numbers_inside_longer_tokens() -> None:
    text = "A11010519491231002X 11010519491231002X9 41111111111111110000"
    assert _kinds(Scanner(), text) == []


def test_scanner_rejects_email_without_dotted_domain() -> None:
    assert _kinds(Scanner(), "user@localhost and @example.com") == []


def test_scanner_stream_finds_values_across_chunks_once() -> None:
    value = b"11010519491231002X"
    data = b"x" * 1000 + b" " + value + b" " + b"y" * 1000
    scanner = Scanner()
    for split in range(990, 1030):
        matches = list(scanner.scan_stream([data[:split], data[split:]]))
        assert [m.value for m in matches] == [value.decode()], split
        assert matches[0].offset == 1001, split


def test_scanner_stream_many_small_chunks() -> None:
    value = "li.na@example.com"
    data = (" " * 300 + value) * 20
    chunks = [data.encode()[i : i + 37] for i in range(0, len(data), 37)]
    matches = list(Scanner().scan_stream(chunks))
    assert len(matches) == 20
    assert {m.value for m in matches} == {value}


def test_scanner_kinds_filter() -> None:
    scanner = Scanner(ScannerSettings(kinds=frozenset({"email"})))
    assert _kinds(scanner, "11010519491231002X a@b.example") == [
        ("email", "a@b.example")
    ]


@pytest.mark.parametrize(
    ("kind", "value", "masked"),
    [
        ("cn-ric", "11010519491231002X", "110***********002X"),
        ("cn-mobile", "13812345678", "138****5678"),
        ("bank-card", "4111111111111111", "411*********1111"),
        ("email", "li.na@example.com", "l***@***.com"),
        ("custom", "EMP-1", "E****"),
    ],
)
def test_mask_example(kind: str, value: str, masked: str) -> None:
    assert mask_example(kind, value) == masked
