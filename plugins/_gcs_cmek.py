"""Crypto-erase of Cloud Storage objects encrypted with a customer-managed key.

An object written with a Cloud KMS key (CMEK) records the key version that
wrapped its data key in ``kmsKeyName``. Destroying that version makes every
copy it protects unreadable, soft-deleted copies included, so with the
target option ``purge_crypto: true`` the gs plugin destroys the versions
behind the purged generations once nothing else in the bucket still uses
them. Users outside the bucket (other buckets, other services) cannot be
listed from Cloud Storage, and the plan states this.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from plugins import _gcpkms
from plugins.base import Method, PurgeResult, Refusal
from plugins.errors import PluginError

log = structlog.get_logger(__name__)

#: Object names quoted as examples of other users of a key version.
EXAMPLES = 3


@dataclass
class VersionUse:
    """Generations of one bucket that a key version protects."""

    version: str
    #: Live or noncurrent generations under the prefix.
    selected: int = 0
    #: Soft-deleted generations under the prefix (destroying the version erases them too).
    selected_soft_deleted: int = 0
    #: Generations outside the prefix, soft-deleted ones included.
    others: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, name: str, under_prefix: bool, soft_deleted: bool) -> None:
        if under_prefix and soft_deleted:
            self.selected_soft_deleted += 1
        elif under_prefix:
            self.selected += 1
        else:
            self.others += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(name)


def survey(client: Any, bucket: str, prefix: str, retry: Any) -> dict[str, VersionUse]:
    """List the whole bucket, soft-deleted copies too, and count users per key version.

    Objects whose ``kmsKeyName`` names no version are counted under the
    name as given, so the plan can report them.
    """
    uses: dict[str, VersionUse] = {}
    for soft_deleted in (False, True):
        params = {"soft_deleted": "true"} if soft_deleted else {"versions": "true"}
        listing = client.list_blobs(bucket, page_size=1000, retry=retry, **params)
        for blob in listing:
            # An emulator without soft delete lists live objects here; skip them.
            if soft_deleted and blob.soft_delete_time is None:
                continue
            if not blob.kms_key_name:
                continue
            use = uses.setdefault(blob.kms_key_name, VersionUse(blob.kms_key_name))
            use.add(blob.name, blob.name.startswith(prefix), soft_deleted)
    return uses


def plan_lines(
    uses: dict[str, VersionUse], kms_client: Any, default_key: str | None
) -> tuple[list[str], list[str]]:
    """Return the plan's notes and residual lines for the selected key versions."""
    notes: list[str] = []
    residual: list[str] = []
    selected = [
        use for use in uses.values() if use.selected or use.selected_soft_deleted
    ]
    if not selected:
        notes.append(
            "purge_crypto is set, but no generation under the prefix is encrypted with "
            "a customer-managed key, so no Cloud KMS key version is destroyed"
        )
        return notes, residual
    for use in sorted(selected, key=lambda entry: entry.version):
        notes.extend(_version_notes(use, kms_client, default_key))
    residual.append(
        "services and buckets outside this bucket that use the same key versions "
        "cannot be listed from Cloud Storage and were not checked; destroying a "
        "version makes their data unreadable too"
    )
    return notes, residual


def _version_notes(
    use: VersionUse, kms_client: Any, default_key: str | None
) -> Iterator[str]:
    version = use.version
    crypto_key = _gcpkms.crypto_key_of(version)
    if crypto_key is None:
        yield (
            f"objects under the prefix name the key {version!r} without a key version, "
            "so no version is destroyed for them"
        )
        return
    try:
        days = _gcpkms.destroy_scheduled_days(kms_client, crypto_key)
        primary = _primary_version(kms_client, crypto_key)
    except PluginError as error:
        days, primary = None, None
        yield f"Cloud KMS key {crypto_key} could not be read: {error}"
    delay = (
        f"{days:g} day(s)" if days is not None else "its scheduled-destruction duration"
    )
    yield (
        f"after the purge, Lethe destroys Cloud KMS key version {version}, which "
        f"encrypts {use.selected} generation(s) and {use.selected_soft_deleted} "
        f"soft-deleted copies under the prefix; Cloud KMS destroys the key material "
        f"{delay} later, and until then the version can be restored"
    )
    if use.others:
        yield (
            f"key version {version} also encrypts {use.others} generation(s) outside "
            f"the prefix (for example {', '.join(use.examples)}), so it is not "
            "destroyed unless they are gone by the end of the purge"
        )
    if default_key == crypto_key and primary == version:
        yield (
            f"key version {version} is the primary version of the bucket's default key "
            f"{crypto_key}: until the key gets a new primary version, writes that use "
            "the default key fail"
        )


def _primary_version(kms_client: Any, crypto_key: str) -> str | None:
    with _gcpkms.translated(f"reading Cloud KMS key {crypto_key}"):
        key = kms_client.get_crypto_key(request={"name": crypto_key})
    return key.primary.name if key.primary else None


def shred_version(kms_client: Any, version: str, use: VersionUse | None) -> PurgeResult:
    """Destroy one key version unless generations the job keeps still use it."""
    step = f"purge-crypto:{version}"
    kept = (use.selected + use.others) if use else 0
    if kept:
        detail = (
            f"Cloud KMS key version {version} still encrypts {use.selected} generation(s) "
            f"under the prefix that the job kept and {use.others} outside it"
            + (f" (for example {', '.join(use.examples)})" if use.examples else "")
            + "; destroying it would make them unreadable, so it was kept"
        )
        return PurgeResult(
            step, "blocked", detail=detail, refusal=Refusal("in-use", detail)
        )
    if _gcpkms.crypto_key_of(version) is None:
        detail = f"{version!r} names no key version, so nothing was destroyed"
        return PurgeResult(
            step, "blocked", detail=detail, refusal=Refusal("not-supported", detail)
        )
    try:
        _gcpkms.destroy_version(kms_client, version)
        state, when = _gcpkms.version_state(kms_client, version)
    except PluginError as error:
        return PurgeResult(
            step, "failed", detail=str(error), method=Method.PURGE_CRYPTO
        )
    facts = {
        "kms_key_version": version,
        "state": state,
        "destroy_time": when,
        "crypto_shredding_complete": state == "DESTROYED",
    }
    if state not in _gcpkms.DESTROYED_STATES:
        return PurgeResult(
            step,
            "failed",
            detail=f"Cloud KMS reports key version {version} as {state} after the destroy request",
            method=Method.PURGE_CRYPTO,
            facts=facts,
        )
    return PurgeResult(
        step,
        "purged",
        method=Method.PURGE_CRYPTO,
        detail=(
            f"Cloud KMS key version {version} is {state}; its key material is destroyed "
            f"at {when}, and until then RestoreCryptoKeyVersion can undo it"
        ),
        facts=facts,
    )
