"""The CLI with an optional SDK hidden from a child process.

A ``sitecustomize`` module on the child's path puts ``None`` in
``sys.modules`` for each hidden module, so importing it raises
ModuleNotFoundError as if it were not installed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.core.conftest import REPO

BLOCKER = """
import os
import sys

for name in os.environ.get("LETHE_TEST_HIDDEN_MODULES", "").split(","):
    if name:
        sys.modules[name] = None
"""

#: Each SDK plugin, the modules hidden for it and the pip extra it names.
SDKS = {
    "s3": (("boto3", "botocore"), "s3"),
    "aws-backups": (("boto3", "botocore"), "aws"),
    "gcs": (("google",), "gcs"),
    "azure": (("azure",), "azure"),
    "postgresql": (("psycopg",), "postgresql"),
    "mysql": (("mysql",), "mysql"),
}

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def hidden_env(tmp_path: Path) -> Callable[[tuple[str, ...]], dict[str, str]]:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)

    def env(modules: tuple[str, ...]) -> dict[str, str]:
        return {
            "PYTHONPATH": f"{blocker}:{REPO}",
            "LETHE_TEST_HIDDEN_MODULES": ",".join(modules),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    return env


#: A target per SDK plugin, each aimed at a closed local port, and the
#: modules hidden for it.
PLAN_TARGETS = {
    "s3": ("s3://lethe-missing-sdk?endpoint_url=http://127.0.0.1:9", SDKS["s3"]),
    "gcs": ("gs://lethe-missing-sdk/prefix/", SDKS["gcs"]),
    "azure": ("az://devstoreaccount1/lethe-missing-sdk/prefix/", SDKS["azure"]),
    "postgresql": (
        "postgresql://postgres@127.0.0.1:9/lethe_missing_sdk?table=t",
        SDKS["postgresql"],
    ),
    "mysql": ("mysql://root@127.0.0.1:9/lethe_missing_sdk?table=t", SDKS["mysql"]),
}


@pytest.mark.parametrize("plugin", sorted(PLAN_TARGETS))
def test_plan_without_sdk(plugin: str, lethe: Run, hidden_env: Callable) -> None:
    url, (modules, extra) = PLAN_TARGETS[plugin]
    env = hidden_env(modules)
    env["STORAGE_EMULATOR_HOST"] = "http://127.0.0.1:9"
    env["AZURE_STORAGE_CONNECTION_STRING"] = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=dGVzdGluZw==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
    result = lethe("plan", url, env=env)

    assert result.returncode == 3, result.stderr
    assert f"pip install 'lethe[{extra}]'" in result.stderr
    assert "internal error" not in result.stderr
    assert "--resume" not in result.stderr


@pytest.mark.parametrize("plugin", sorted(SDKS))
def test_plugins_lists_missing_sdk(
    plugin: str, lethe: Run, hidden_env: Callable
) -> None:
    modules, extra = SDKS[plugin]
    result = lethe("plugins", "--json", env=hidden_env(modules))

    assert result.returncode == 0, result.stderr
    statuses = {entry["name"]: entry["status"] for entry in json.loads(result.stdout)}
    assert statuses[plugin].startswith("unavailable: missing module")
    assert f"pip install 'lethe[{extra}]'" in statuses[plugin]
    assert statuses["files"] == "ok"


def test_plugins_ok_with_sdks(lethe: Run) -> None:
    result = lethe("plugins", "--json")

    assert result.returncode == 0, result.stderr
    statuses = {entry["name"]: entry["status"] for entry in json.loads(result.stdout)}
    for plugin in SDKS:
        assert statuses[plugin] == "ok", plugin
