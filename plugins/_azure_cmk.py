"""Crypto-erase behind an Azure encryption scope: its Key Vault key, deleted and purged.

An encryption scope with a customer-managed key wraps the data of every
blob written with that scope under a Key Vault key. Once the key is deleted
and purged, those blobs cannot be read, soft-deleted copies included. The
data plane does not show which key a scope uses, so the config names both:
``encryption_scope`` and ``keyvault_key`` (``https://VAULT/keys/NAME``),
with ``purge_crypto: true``. The scope is account-wide: blobs in other
containers that name it explicitly, other accounts and other services that
use the key cannot be listed from one container, and the plan states this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from plugins import _keyvault
from plugins.base import Method, PurgeResult, Refusal
from plugins.errors import PluginError

log = structlog.get_logger(__name__)

#: Blob names quoted as examples of other users of the scope.
EXAMPLES = 3


@dataclass
class ScopeUse:
    """Blob copies in one container that an encryption scope protects."""

    #: Readable copies under the prefix (blobs, snapshots, versions).
    selected: int = 0
    #: Soft-deleted copies under the prefix (erased by the key's destruction).
    selected_deleted: int = 0
    #: Copies outside the prefix, soft-deleted ones included.
    others: int = 0
    examples: list[str] = field(default_factory=list)
    #: Other containers whose default encryption scope is this one; None when unreadable.
    other_containers: list[str] | None = None


def survey(
    service: Any, container: Any, container_name: str, prefix: str, scope: str
) -> ScopeUse:
    """List the container (deleted copies too) and count the copies under ``scope``."""
    from plugins.azure import LIST_INCLUDE

    use = ScopeUse()
    for props in container.list_blobs(include=LIST_INCLUDE):
        if props.encryption_scope != scope:
            continue
        if not props.name.startswith(prefix):
            use.others += 1
            if len(use.examples) < EXAMPLES:
                use.examples.append(props.name)
        elif props.deleted:
            use.selected_deleted += 1
        else:
            use.selected += 1
    use.other_containers = _containers_with_default(service, container_name, scope)
    return use


def _containers_with_default(
    service: Any, container_name: str, scope: str
) -> list[str] | None:
    from azure.core import exceptions as core

    try:
        found = []
        for props in service.list_containers():
            default = getattr(props.encryption_scope, "default_encryption_scope", None)
            if props.name != container_name and default == scope:
                found.append(props.name)
        return found
    except core.HttpResponseError:
        # Listing containers needs account-level rights that a data-only
        # identity may lack, so the plan states that the check did not run.
        log.debug("containers_unreadable", exc_info=True)
        return None


def plan_lines(
    use: ScopeUse, key_client: Any, key_url: str, scope: str
) -> tuple[list[str], list[str]]:
    """Return the plan's notes and residual lines for destroying the scope's key."""
    _vault, name, _version = _keyvault.parse_key_url(key_url)
    if not use.selected and not use.selected_deleted:
        note = (
            f"purge_crypto is set, but no blob under the prefix uses encryption scope "
            f"{scope!r}, so Key Vault key {name} is not deleted"
        )
        return [note], []

    plan_note = (
        f"after the purge, Lethe deletes and purges Key Vault key {key_url}, the key "
        f"of encryption scope {scope!r} that encrypts {use.selected} copies and "
        f"{use.selected_deleted} soft-deleted copies under the prefix"
    )
    notes = [plan_note]
    notes.extend(_user_notes(use, scope))
    unlisted = (
        f"encryption scope {scope!r} is account-wide: blobs in other containers that "
        "name it explicitly, and other accounts or services that use the key, cannot "
        "be listed from this container and were not checked; they become unreadable "
        "too"
    )
    kept_scope = (
        f"the encryption scope {scope!r} itself is kept; disable it in the storage "
        "account once its key is gone"
    )
    residual = [unlisted, kept_scope]

    try:
        protection = _purge_protection_line(key_client, name)
    except PluginError as error:
        notes.append(f"Key Vault key {name} could not be read: {error}")
        return notes, residual
    if protection:
        residual.append(protection)
    return notes, residual


def _purge_protection_line(key_client: Any, name: str) -> str | None:
    """Return the residual line for a vault with purge protection, or None."""
    with _keyvault.translated(f"reading Key Vault key {name}"):
        properties = key_client.get_key(name).properties
    level = _keyvault.level_name(properties.recovery_level)
    if _keyvault.purge_allowed(level):
        return None
    days = properties.recoverable_days
    until = (
        (datetime.now(UTC) + timedelta(days=days)).date().isoformat()
        if days
        else "the end of the vault's retention period"
    )
    return (
        f"the vault has purge protection (recovery level {level}), so the deleted "
        f"key stays recoverable until about {until}, when Key Vault purges it"
    )


def _user_notes(use: ScopeUse, scope: str) -> Iterator[str]:
    if use.others:
        yield (
            f"encryption scope {scope!r} also encrypts {use.others} copies outside the "
            f"prefix (for example {', '.join(use.examples)}), so the key is kept unless "
            "they are gone by the end of the purge"
        )
    if use.other_containers:
        yield (
            f"containers {', '.join(use.other_containers)} use {scope!r} as their "
            "default encryption scope, so the key is kept"
        )
    if use.other_containers is None:
        yield (
            "the account's containers could not be listed with these credentials, so "
            f"other containers whose default scope is {scope!r} were not checked"
        )


def purged_earlier(key_client: Any, key_url: str) -> PurgeResult | None:
    """Return the result for a key that an earlier run of the job deleted and purged.

    Returns None while the vault still has the key or its deleted copy, so
    :func:`shred_key` finishes the deletion.
    """
    _vault, name, _version = _keyvault.parse_key_url(key_url)
    step = f"purge-crypto:{key_url}"
    try:
        live, deleted = _keyvault.key_status(key_client, name)
    except PluginError as error:
        return PurgeResult(
            step, "failed", detail=str(error), method=Method.PURGE_CRYPTO
        )
    if live or deleted is not None:
        return None
    return PurgeResult(
        step,
        "purged",
        method=Method.PURGE_CRYPTO,
        detail=(
            f"Key Vault key {name} was deleted and purged by an earlier run of this "
            "job; the vault has neither the key nor a deleted copy"
        ),
        facts={
            "keyvault_key": key_url,
            "purged": True,
            "crypto_shredding_complete": True,
        },
    )


def shred_key(
    key_client: Any,
    key_url: str,
    use: ScopeUse,
    before_delete: Callable[[], None] = lambda: None,
) -> PurgeResult:
    """Delete and purge the scope's key unless copies the job keeps still use it.

    ``before_delete`` runs just before the delete request is sent.
    """
    _vault, name, _version = _keyvault.parse_key_url(key_url)
    step = f"purge-crypto:{key_url}"
    users = use.selected + use.others + len(use.other_containers or ())
    if users:
        detail = (
            f"Key Vault key {name} was kept: its encryption scope still encrypts "
            f"{use.selected} copies under the prefix that the job kept and "
            f"{use.others} outside it"
            + (f" (for example {', '.join(use.examples)})" if use.examples else "")
            + (
                f", and is the default scope of {', '.join(use.other_containers)}"
                if use.other_containers
                else ""
            )
        )
        return PurgeResult(
            step, "blocked", detail=detail, refusal=Refusal("in-use", detail)
        )
    before_delete()
    try:
        facts = _keyvault.delete_and_purge(key_client, name)
        checks = list(
            _keyvault.deletion_checks(
                key_client, name, purge_expected=not facts.get("purge_blocked")
            )
        )
    except PluginError as error:
        return PurgeResult(
            step, "failed", detail=str(error), method=Method.PURGE_CRYPTO
        )
    facts = {
        "keyvault_key": key_url,
        **facts,
        "crypto_shredding_complete": bool(facts["purged"]),
    }
    failed = [check for check in checks if not check.passed]
    if failed:
        return PurgeResult(
            step,
            "failed",
            detail="; ".join(check.detail for check in failed),
            method=Method.PURGE_CRYPTO,
            facts=facts,
        )
    detail = (
        f"Key Vault key {name} is deleted and purged"
        if facts["purged"]
        else f"Key Vault key {name} is deleted; {facts['purge_blocked']}"
    )
    return PurgeResult(
        step, "purged", detail=detail, method=Method.PURGE_CRYPTO, facts=facts
    )
