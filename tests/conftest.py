"""Test-session safety rails and shared fixtures.

Every SDK is pointed away from real clouds before any test module imports it:
dummy credentials, no instance-metadata look-ups, and only endpoints that a
fixture starts on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil

import pytest

_SAFE_ENVIRONMENT = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_GCE_CHECK": "True",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
    "GOOGLE_CLOUD_PROJECT": "lethe-test",
    "GOOGLE_APPLICATION_CREDENTIALS": "",
    "AZURE_CLIENT_ID": "",
    "AZURE_TENANT_ID": "",
    "AZURE_CLIENT_SECRET": "",
}
_UNSET = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AZURE_STORAGE_CONNECTION_STRING",
)

for _name, _value in _SAFE_ENVIRONMENT.items():
    if _value:
        os.environ[_name] = _value
    else:
        os.environ.pop(_name, None)
for _name in _UNSET:
    os.environ.pop(_name, None)


def require_tool(name: str) -> str:
    """Return the path of a system tool, failing the test when it is missing.

    A missing tool fails rather than skips, so a CI machine without it cannot
    pass the suite; `make test-deps` installs every tool the suite uses.
    """
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"required tool {name!r} is not installed; run 'make test-deps'")
    return path


def require_root() -> None:
    """Fail the test unless it runs as root (loop devices and raw reads need it)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root for loop devices; run 'make test' as root")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when any test was skipped, because a skip hides a missing tool."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
