"""Plugin discovery through entry points, including broken plugins."""

from __future__ import annotations

import pytest

from agent.errors import UsageError
from agent.registry import Registry
from plugins.base import Target


def registry_with(monkeypatch: pytest.MonkeyPatch, value: str) -> Registry:
    monkeypatch.setenv("LETHE_EXTRA_PLUGINS", value)
    return Registry.from_entry_points()


def test_extra_plugin_found_by_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_with(monkeypatch, "testdir=tests.core.dirplugin:DirPlugin")
    assert registry.plugin_for(Target("testdir:///tmp")).name == "testdir"


def test_missing_sdk_names_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_with(monkeypatch, "s3=tests.core.brokenplugin:S3Plugin")
    status = {entry.name: entry for entry in registry.statuses()}["s3"]
    assert "missing module lethe_sdk_that_does_not_exist" in status.status
    assert "pip install 'lethe[s3]'" in status.status


def test_unknown_scheme_lists_broken_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_with(monkeypatch, "s3=tests.core.brokenplugin:S3Plugin")
    with pytest.raises(UsageError, match="plugins that failed to load: .*s3"):
        registry.plugin_for(Target("s3://bucket"))


def test_malformed_variable_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="expected name=module:Class"):
        registry_with(monkeypatch, "just-a-name")
