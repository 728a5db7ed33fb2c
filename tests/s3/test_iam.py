"""Access denied by real IAM policies, on a moto server that enforces them.

moto does not check DeleteObjects against IAM policies, so a denied delete
is covered by a contract test in test_errors instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugins.errors import AccessDenied
from plugins.s3 import S3Plugin
from tests.helpers.driver import run_plugin
from tests.helpers.moto_s3 import start_seeded_server, stop_seeded_server


@pytest.fixture(scope="module")
def iam_server() -> Iterator[dict]:
    process, ready = start_seeded_server("guarded=3+1", iam=True)
    try:
        yield ready
    finally:
        stop_seeded_server(process)


def as_user(monkeypatch: pytest.MonkeyPatch, keys: dict[str, str]) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["secret"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def test_list_denied_names_bucket(iam_server, monkeypatch):
    as_user(monkeypatch, iam_server["users"]["no-access"])
    options = {"endpoint_url": iam_server["endpoint"], "max_attempts": 1}

    with pytest.raises(AccessDenied) as raised:
        run_plugin(S3Plugin, "s3://guarded/data/", options=options)

    assert "'guarded'" in str(raised.value)
    assert "grant the credentials" in str(raised.value)
