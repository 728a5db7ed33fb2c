"""Reference check-character computations, written from the standards.

They are independent of the implementation under test, so a table of
numbers built here checks the detectors rather than echoing them.
"""

from __future__ import annotations

import random
from datetime import date

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def ric_check(body: str) -> str:
    """ISO 7064 MOD 11-2 over 17 digits: weights 2**(17 - i) mod 11."""
    total = sum(int(digit) * pow(2, 17 - index, 11) for index, digit in enumerate(body))
    value = (12 - total % 11) % 11
    return "X" if value == 10 else str(value)


def make_ric(area: str, born: date, sequence: int) -> str:
    body = f"{area}{born:%Y%m%d}{sequence:03d}"
    return body + ric_check(body)


def uscc_check(body: str) -> str:
    """GB 32100-2015: weights 3**i mod 31 over 17 characters."""
    total = sum(
        USCC_ALPHABET.index(char) * pow(3, index, 31) for index, char in enumerate(body)
    )
    return USCC_ALPHABET[(31 - total % 31) % 31]


def make_uscc(body: str) -> str:
    return body + uscc_check(body)


def luhn_valid(number: str) -> bool:
    total = 0
    for index, digit in enumerate(reversed(number)):
        value = int(digit)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def make_card(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(
        rng.choice("0123456789") for _ in range(length - len(prefix) - 1)
    )
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one Luhn digit always fits")


def random_ric(rng: random.Random) -> str:
    area = rng.choice(["110101", "110105", "310104", "440305", "510107", "650102"])
    born = date(1940, 1, 1).toordinal() + rng.randrange(80 * 365)
    return make_ric(area, date.fromordinal(born), rng.randrange(1000))


def random_uscc(rng: random.Random) -> str:
    head = rng.choice(["91", "92", "11", "51", "93"])
    area = rng.choice(["110000", "110105", "310115", "440300", "330106"])
    tail = "".join(rng.choice(USCC_ALPHABET) for _ in range(9))
    return make_uscc(head + area + tail)


def random_mobile(rng: random.Random) -> str:
    return (
        "1"
        + rng.choice("3456789")
        + "".join(rng.choice("0123456789") for _ in range(9))
    )


def legacy_ric_shape(digits: str) -> bool:
    """The only rule a 15-digit legacy number has: a valid YYMMDD in the 1900s."""
    try:
        date(1900 + int(digits[6:8]), int(digits[8:10]), int(digits[10:12]))
    except ValueError:
        return False
    return True


def passes_any_check(digits: str) -> bool:
    """Tell whether a digit string passes any check a detector uses."""
    if len(digits) == 18 and (
        ric_check(digits[:17]) == digits[17] or uscc_check(digits[:17]) == digits[17]
    ):
        return True
    if len(digits) == 15 and legacy_ric_shape(digits):
        return True
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def random_digits(rng: random.Random, length: int) -> str:
    """Return a random digit string of a length that passes no detector check."""
    while True:
        digits = rng.choice("123456789") + "".join(
            rng.choice("0123456789") for _ in range(length - 1)
        )
        if not passes_any_check(digits):
            return digits
