"""Run one gs or az job through the engine in a process of its own, for crash tests.

Usage: ``python -m tests.cloud.crash_job SPEC STATE_DIR [JOB]``

Without JOB the process plans and purges the target of the JSON file SPEC;
with JOB it resumes that job. With ``LETHE_CRASH_AFTER_ITEMS`` set, the
engine kills the process with SIGKILL after that many destroyed items. The
last line of standard output is the job's outcome summary as JSON.

SPEC names the store and how to reach it:

* ``{"store": "gcs", "endpoint", "kms_endpoint", "object_fields", "url",
  "options"}``: the gs plugin against a Cloud Storage emulator, with the
  recording adapter adding ``object_fields`` (such as ``kmsKeyName``) to
  object resources, and its Cloud KMS client pointed at the fake Cloud KMS
  server at ``kms_endpoint`` (needed with ``purge_crypto`` only);
* ``{"store": "azure", "state", "url", "options"}``: the az plugin against
  the in-process Blob service and Key Vault fakes. Their models live in the
  JSON file ``state``, loaded at start and written after every request, so
  the copies and keys that a killed process deleted stay deleted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.engine import Engine
from agent.registry import Registry
from plugins.base import Plugin, Target


def gcs_plugin(spec: dict[str, Any]) -> type[Plugin]:
    from tests.cloud.gcs_support import RecordingAdapter, plugin_class
    from tests.helpers import fake_cloudkms

    adapter = RecordingAdapter()
    adapter.object_fields = spec["object_fields"]
    base = plugin_class(spec["endpoint"], adapter)

    class CrashCmekPlugin(base):
        def make_kms_client(self) -> Any:
            return fake_cloudkms.client(spec["kms_endpoint"])

    return CrashCmekPlugin


class AzureState:
    """The Blob service and Key Vault models, kept in one JSON file."""

    def __init__(self, path: Path) -> None:
        from tests.cloud.azure_support import Copy

        self.path = path
        self.lock = threading.Lock()
        state = json.loads(path.read_text())
        copies = [Copy(**_copy_fields(fields)) for fields in state["copies"]]
        self.blobs = _SavingBlobTransport(copies=copies)
        self.blobs.on_change = self.save
        self.vault = _SavingKeyVaultTransport(recovery_level=state["recovery_level"])
        self.vault.on_change = self.save
        self.vault.requests_sent = [tuple(request) for request in state["requests"]]
        for name in state["keys"]:
            self.vault.add_key(name)
        for name, dates in state["deleted"].items():
            key = self.vault.add_key(name)
            del self.vault.keys[name]
            key.deleted_date, key.scheduled_purge_date = dates
            self.vault.deleted[name] = key

    def save(self) -> None:
        """Write both models, whole, so a killed process leaves a readable file."""
        state = {
            "copies": [_copy_json(copy) for copy in self.blobs.copies],
            "recovery_level": self.vault.recovery_level,
            "keys": sorted(self.vault.keys),
            "deleted": {
                name: [key.deleted_date, key.scheduled_purge_date]
                for name, key in self.vault.deleted.items()
            },
            "requests": self.vault.requests_sent,
        }
        with self.lock:
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps(state))
            os.replace(partial, self.path)


def azure_state(copies: list[Any], keys: list[str], recovery_level: str) -> dict:
    """Return the initial state file contents for ``copies`` and vault ``keys``."""
    return {
        "copies": [_copy_json(copy) for copy in copies],
        "recovery_level": recovery_level,
        "keys": keys,
        "deleted": {},
        "requests": [],
    }


def _copy_json(copy: Any) -> dict[str, Any]:
    fields = dataclasses.asdict(copy)
    if fields["immutable_until"] is not None:
        fields["immutable_until"] = fields["immutable_until"].isoformat()
    return fields


def _copy_fields(fields: dict[str, Any]) -> dict[str, Any]:
    if fields["immutable_until"] is not None:
        fields["immutable_until"] = datetime.fromisoformat(fields["immutable_until"])
    return fields


def _saving(base: type) -> type:
    """Return a subclass of a fake transport that calls ``on_change`` after each request."""

    class Saving(base):
        on_change: Any = None

        def send(self, request: Any, **kwargs: Any) -> Any:
            response = super().send(request, **kwargs)
            self.on_change()
            return response

    return Saving


def _transports() -> tuple[type, type]:
    from tests.cloud.azure_support import FakeBlobTransport
    from tests.helpers.fake_keyvault import FakeKeyVaultTransport

    return _saving(FakeBlobTransport), _saving(FakeKeyVaultTransport)


_SavingBlobTransport, _SavingKeyVaultTransport = _transports()


def azure_plugin(spec: dict[str, Any]) -> type[Plugin]:
    from tests.cloud.azure_support import plugin_class
    from tests.helpers.fake_keyvault import FixedTokenCredential

    state = AzureState(Path(spec["state"]))
    base = plugin_class(state.blobs)

    class CrashScopeKeyPlugin(base):
        def make_key_client(self, vault_url: str) -> Any:
            from azure.keyvault.keys import KeyClient

            return KeyClient(vault_url, FixedTokenCredential(), transport=state.vault)

    return CrashScopeKeyPlugin


def main(spec_path: str, state_dir: str, job_id: str | None = None) -> None:
    spec = json.loads(Path(spec_path).read_text())
    factory = {"gcs": gcs_plugin, "azure": azure_plugin}[spec["store"]]
    registry = Registry.from_entry_points()
    registry.add(factory(spec))
    Path(state_dir).mkdir(mode=0o700, exist_ok=True)
    engine = Engine(Config(), Path(state_dir), registry=registry)
    try:
        if job_id is None:
            target = Target(spec["url"], spec["options"])
            job_id = engine.plan([target], {}, dry_run=False)
            outcome = engine.purge(job_id)
        else:
            outcome = engine.resume(job_id)
    finally:
        engine.close()
    print(json.dumps(outcome.summary()))


if __name__ == "__main__":
    main(*sys.argv[1:])
