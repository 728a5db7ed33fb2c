"""Crypto-erase behind an encryption scope: AzurePlugin with ``purge_crypto``.

Azurite has no encryption scopes and no emulator exists for Key Vault, so
these are contract tests at the SDK boundary. The blob client sends through
FakeBlobTransport (tests/cloud/azure_support.py), which lists each copy with
its encryption scope, and the Key Vault client sends through
FakeKeyVaultTransport (tests/helpers/fake_keyvault.py) with a fixed-token
credential. Both record the requests the SDKs build and respond with the
documented responses; no request leaves the process.
"""

from __future__ import annotations

from typing import Any

import pytest

from plugins.base import MemoryCheckpoints
from plugins.errors import InvalidTarget
from tests.cloud.azure_support import ACCOUNT, CONTAINER, Copy, FakeBlobTransport
from tests.cloud.azure_support import plugin_class as blob_plugin_class
from tests.helpers.driver import run_plugin
from tests.helpers.fake_keyvault import (
    VAULT_URL,
    FakeKeyVaultTransport,
    FixedTokenCredential,
)

URL = f"az://{ACCOUNT}/{CONTAINER}/p/"
SCOPE = "cmk-scope"
KEY_URL = f"{VAULT_URL}/keys/scope-key"


def _plugin(blobs: FakeBlobTransport, vault: FakeKeyVaultTransport) -> type:
    base = blob_plugin_class(blobs)

    class ScopeKeyPlugin(base):
        def make_key_client(self, vault_url: str) -> Any:
            from azure.keyvault.keys import KeyClient

            return KeyClient(vault_url, FixedTokenCredential(), transport=vault)

    return ScopeKeyPlugin


def _options() -> dict:
    return {"purge_crypto": True, "encryption_scope": SCOPE, "keyvault_key": KEY_URL}


def _setup(*copies: Copy, level: str = "Recoverable+Purgeable"):  # noqa: ANN202
    blobs = FakeBlobTransport(copies=list(copies))
    vault = FakeKeyVaultTransport(recovery_level=level)
    vault.add_key("scope-key")
    return blobs, vault


def _step(run):  # noqa: ANN001, ANN202
    [result] = [r for r in run.completion if r.key == f"purge-crypto:{KEY_URL}"]
    return result


def test_scope_key_deleted_and_purged():
    blobs, vault = _setup(Copy("p/a", encryption_scope=SCOPE), Copy("keep/x"))

    run = run_plugin(_plugin(blobs, vault), URL, _options())

    assert any("deletes and purges Key Vault key" in note for note in run.info.notes)
    assert any("account-wide" in line for line in run.info.residual)
    result = _step(run)
    assert result.status == "purged"
    assert result.facts["purged"] is True
    assert result.facts["crypto_shredding_complete"] is True
    assert "scope-key" not in vault.keys
    assert "scope-key" not in vault.deleted
    assert vault.sent("DELETE", "/keys/scope-key")
    assert vault.sent("DELETE", "/deletedkeys/scope-key")
    assert [copy.name for copy in blobs.copies] == ["keep/x"]


def test_scope_key_purge_protection_dated():
    blobs, vault = _setup(Copy("p/a", encryption_scope=SCOPE), level="Recoverable")

    run = run_plugin(_plugin(blobs, vault), URL, _options())

    assert any("purge protection" in line for line in run.info.residual)
    result = _step(run)
    assert result.status == "purged"
    assert result.facts["purged"] is False
    assert result.facts["crypto_shredding_complete"] is False
    date = result.facts["scheduled_purge_date"]
    assert date
    assert f"recoverable until {date}" in result.detail
    assert "scope-key" in vault.deleted
    assert vault.sent("DELETE", "/deletedkeys/") == []


def test_scope_shared_outside_prefix_kept():
    blobs, vault = _setup(
        Copy("p/a", encryption_scope=SCOPE), Copy("keep/x", encryption_scope=SCOPE)
    )

    run = run_plugin(_plugin(blobs, vault), URL, _options())

    assert any("keep/x" in note for note in run.info.notes)
    result = _step(run)
    assert result.status == "blocked"
    assert result.refusal.reason == "in-use"
    assert "scope-key" in vault.keys
    assert vault.sent("DELETE", "/keys/") == []


def test_scope_key_refused_purge_fails():
    """A purge that the vault refuses although its level allows it fails the step."""
    blobs, vault = _setup(Copy("p/a", encryption_scope=SCOPE))
    original = vault._deleted_key

    def reject_purge(method, name):  # noqa: ANN001, ANN202
        if method == "DELETE":
            return 403, {"error": {"code": "Forbidden", "message": "denied"}}
        return original(method, name)

    vault._deleted_key = reject_purge
    run = run_plugin(_plugin(blobs, vault), URL, _options())

    result = _step(run)
    assert result.status == "failed"
    assert "scope-key" in vault.deleted


def test_scope_key_untouched_without_option():
    blobs, vault = _setup(Copy("p/a", encryption_scope=SCOPE))

    run = run_plugin(_plugin(blobs, vault), URL)

    assert [r for r in run.completion if r.key.startswith("purge-crypto")] == []
    assert vault.requests_sent == []
    assert "scope-key" in vault.keys


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"purge_crypto": True, "keyvault_key": KEY_URL}, "needs encryption_scope"),
        (
            {
                "purge_crypto": True,
                "encryption_scope": SCOPE,
                "keyvault_key": VAULT_URL,
            },
            "invalid Key Vault key",
        ),
    ],
)
def test_scope_key_options_checked(options: dict, message: str):
    blobs, vault = _setup()
    with pytest.raises(InvalidTarget, match=message):
        run_plugin(_plugin(blobs, vault), URL, options)


def test_scope_key_purged_by_earlier_run():
    """A resumed job repeats the steps after the purge, after its first run purged the key.

    The second run shares the first run's checkpoints, as a resumed job
    does, and finds neither the key nor a deleted copy in the vault.
    """
    blobs, vault = _setup(Copy("p/a", encryption_scope=SCOPE))
    checkpoints = MemoryCheckpoints()
    first = run_plugin(_plugin(blobs, vault), URL, _options(), checkpoints=checkpoints)
    assert _step(first).status == "purged"

    resumed = run_plugin(
        _plugin(blobs, vault), URL, _options(), checkpoints=checkpoints
    )

    result = _step(resumed)
    assert result.status == "purged"
    assert "earlier run of this job" in result.detail
    assert result.facts["crypto_shredding_complete"] is True
    assert len(vault.sent("DELETE", "/keys/scope-key")) == 1
    assert len(vault.sent("DELETE", "/deletedkeys/scope-key")) == 1
