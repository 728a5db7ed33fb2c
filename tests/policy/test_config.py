"""Invalid policy configs are rejected with file, line and reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.errors import EXIT_USAGE
from agent.policy import Policy
from agent.policy.config import PolicyConfigError, load_policy_file

BAD_CONFIGS = [
    (
        "invalid regex",
        """
        policy:
          discovery:
            patterns:
              - name: employee
                regex: 'EMP-[0-9'
        """,
        5,
        "policy.discovery.patterns[0].regex",
        "invalid regular expression",
    ),
    (
        "regex matching empty string",
        """
        policy:
          discovery:
            patterns:
              - name: anything
                regex: '[0-9]*'
        """,
        5,
        "policy.discovery.patterns[0].regex",
        "matches the empty string",
    ),
    (
        "unparsable date",
        """
        policy:
          holds:
            - name: contracts
              until: 2027-02-30
              match: {prefixes: [contracts/]}
        """,
        4,
        "policy.holds[0].until",
        "invalid date '2027-02-30'",
    ),
    (
        "unknown class",
        """
        policy:
          rules:
            - name: exports
              class: confidential
              match: {paths: [/srv/export/**]}
        """,
        4,
        "policy.rules[0].class",
        "unknown class 'confidential'",
    ),
    (
        "invalid glob",
        """
        policy:
          rules:
            - name: exports
              class: personal
              match:
                paths: ["/srv/[export/*.csv"]
        """,
        6,
        "policy.rules[0].match.paths[0]",
        "invalid glob",
    ),
    (
        "unknown key",
        """
        policy:
          holds:
            - name: contracts
              untill: 2027-02-01
              match: {prefixes: [contracts/]}
        """,
        4,
        "policy.holds[0].untill",
        "unknown key",
    ),
    (
        "retention without end",
        """
        policy:
          holds:
            - name: contracts
              match: {prefixes: [contracts/]}
        """,
        3,
        "policy.holds[0]",
        "needs until, or years with after",
    ),
    (
        "unknown date source",
        """
        policy:
          holds:
            - name: contracts
              years: 5
              after: birthday
              match: {prefixes: [contracts/]}
        """,
        5,
        "policy.holds[0].after",
        "unknown date source 'birthday'",
    ),
    (
        "empty selector",
        """
        policy:
          rules:
            - name: everything
              class: public
              match: {}
        """,
        5,
        "policy.rules[0].match",
        "expected at least one of",
    ),
    (
        "hmac without key",
        """
        policy:
          holds:
            - name: keep
              until: 2030-01-01
              match: {tables: [customers]}
              mask:
                fields:
                  Email: {method: hmac}
        """,
        6,
        "policy.holds[0].mask",
        "needs key_file",
    ),
    (
        "unknown mask method",
        """
        policy:
          holds:
            - name: keep
              until: 2030-01-01
              match: {tables: [customers]}
              mask:
                fields:
                  Email: {method: scramble}
        """,
        8,
        "policy.holds[0].mask.fields.Email.method",
        "unknown mask method 'scramble'",
    ),
    (
        "unknown kind",
        """
        policy:
          discovery:
            kinds: [cn-ric, passport]
        """,
        3,
        "policy.discovery.kinds[1]",
        "unknown kind 'passport'",
    ),
    (
        "duplicate hold",
        """
        policy:
          holds:
            - name: a
              until: 2030-01-01
              match: {prefixes: [x/]}
            - name: a
              until: 2031-01-01
              match: {prefixes: [y/]}
        """,
        6,
        "policy.holds[1].name",
        "duplicate hold name 'a'",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "reason"),
    [case[1:] for case in BAD_CONFIGS],
    ids=[case[0] for case in BAD_CONFIGS],
)
def test_bad_config_rejected(
    write_config: Callable[[str], Path], text: str, line: int, key: str, reason: str
) -> None:
    path = write_config(text)
    with pytest.raises(PolicyConfigError) as caught:
        load_policy_file(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert reason in message


def test_config_error_exit_code(write_config: Callable[[str], Path]) -> None:
    path = write_config("policy:\n  rules: 3\n")
    with pytest.raises(PolicyConfigError) as caught:
        load_policy_file(str(path))
    assert caught.value.exit_code == EXIT_USAGE


def test_missing_column_named_with_location(load_policy: Callable[..., Policy]) -> None:
    policy = load_policy(
        """
        policy:
          rules:
            - name: customer-contacts
              class: personal
              match:
                columns: [customers.Phone, customers.Fax]
          holds:
            - name: closed
              years: 3
              after: column:ClosedAt
              match: {tables: [customers]}
        """
    )
    problems = policy.check_columns("customers", ["CustomerId", "Phone"])
    assert len(problems) == 2
    assert "lethe.yaml:3: rule 'customer-contacts' names column 'Fax'" in problems[0]
    assert "lethe.yaml:8: hold 'closed' names column 'ClosedAt'" in problems[1]


def test_valid_config_loads(load_policy: Callable[..., Policy]) -> None:
    policy = load_policy(
        """
        policy:
          discovery:
            max_bytes: 1048576
            mobile: {context: [phone, 手机], window: 32}
            patterns:
              - name: employee-id
                regex: 'EMP-[0-9]{6}'
                class: secret
          masking:
            key_file: /etc/lethe/mask.key
          holds:
            - name: keep
              until: 2030-01-01
              match: {tables: [customers]}
              mask:
                fields:
                  Email: {method: hmac, length: 32}
                  Phone: {method: keep, keep_last: 4}
        """
    )
    assert policy.settings.discovery.max_bytes == 1048576
    assert policy.settings.holds[0].mask == {
        "fields": {
            "Email": {"method": "hmac", "length": 32},
            "Phone": {"method": "keep", "keep_last": 4},
        },
        "key_file": "/etc/lethe/mask.key",
    }


def test_from_config_raw_mapping() -> None:
    policy = Policy.from_config(
        {"rules": [{"name": "r", "class": "public", "match": {"prefixes": ["p/"]}}]}
    )
    assert policy.settings.rules[0].classification == "public"


def test_from_config_none_is_empty_policy() -> None:
    assert Policy.from_config(None).settings.holds == ()


def test_example_policy_file_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "policy.yaml"
    settings = load_policy_file(str(example))
    assert [hold.name for hold in settings.holds] == [
        "invoices",
        "contracts-until-2031",
        "acme-litigation",
        "closed-accounts",
    ]
