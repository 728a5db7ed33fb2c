"""Azure Key Vault: the key store backend and the calls the az plugin shares.

Deleting a key in a vault with soft delete (every vault since February 2025)
keeps it as a deleted key, recoverable until its scheduled purge date (7 to
90 days, set per vault). Purging removes it at once, unless the vault has
purge protection: then only the service purges it, on that date. The key's
``recovery_level`` tells which applies. Levels that contain ``Purgeable``
allow an early purge, while ``Recoverable`` and ``CustomizedRecoverable``
(optionally with ``+ProtectedSubscription``) mean purge protection.

Credentials come from ``DefaultAzureCredential``. Nothing secret is logged.
"""

from __future__ import annotations

import contextlib
import secrets
import urllib.parse
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from plugins.base import NO_WRAPPED_KEY, Check
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    MissingDependency,
    PluginError,
    PurgeFailed,
    TargetNotFound,
    TargetUnreachable,
)

log = structlog.get_logger(__name__)

#: RSA key sizes the backend creates; a 3072-bit wrapped key still fits a store slot.
KEY_SIZES = (2048, 3072)


def import_keys() -> Any:
    try:
        from azure.keyvault import keys
    except ImportError:
        raise MissingDependency(
            "Azure Key Vault needs azure-keyvault-keys and azure-identity; install "
            "them with pip install 'lethe[azure-keyvault]'"
        ) from None
    return keys


def default_credential() -> Any:
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise MissingDependency(
            "Azure Key Vault needs azure-identity; install it with "
            "pip install 'lethe[azure-keyvault]'"
        ) from None
    return DefaultAzureCredential()


def parse_key_url(url: str) -> tuple[str, str, str | None]:
    """Split ``https://VAULT/keys/NAME[/VERSION]`` into vault URL, name and version."""
    parts = urllib.parse.urlsplit(url or "")
    segments = [segment for segment in parts.path.split("/") if segment]
    if (
        parts.scheme != "https"
        or not parts.netloc
        or len(segments) not in (2, 3)
        or segments[0] != "keys"
    ):
        raise InvalidTarget(
            f"invalid Key Vault key {url!r}: expected "
            "https://VAULT.vault.azure.net/keys/NAME or .../keys/NAME/VERSION"
        )
    version = segments[2] if len(segments) == 3 else None
    return f"https://{parts.netloc}", segments[1], version


def level_name(recovery_level: Any) -> str | None:
    """Return a recovery level as the service spells it (the SDK returns an enum)."""
    if recovery_level is None:
        return None
    return str(getattr(recovery_level, "value", recovery_level))


def purge_allowed(recovery_level: Any) -> bool:
    """Tell whether a key at this recovery level may be purged before its date."""
    return "Purgeable" in (level_name(recovery_level) or "")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Translate azure-core and azure-identity errors into plugin errors."""
    from azure.core import exceptions as core

    try:
        yield
    except PluginError:
        raise
    except core.ResourceNotFoundError as error:
        log.debug("key vault call failed", action=action, exc_info=True)
        raise TargetNotFound(
            f"{action} failed: not found ({_error_code(error) or 'HTTP 404'})"
        ) from None
    except core.ClientAuthenticationError as error:
        log.debug("key vault call failed", action=action, exc_info=True)
        status = getattr(error, "status_code", None)
        raise AccessDenied(
            f"{action} failed: authentication or permission denied (HTTP {status}); "
            "sign in with 'az login' or set AZURE_CLIENT_ID and its secret, and grant "
            "the identity the Key Vault Crypto Officer role"
        ) from None
    except core.HttpResponseError as error:
        log.debug("key vault call failed", action=action, exc_info=True)
        code = _error_code(error)
        if error.status_code == 403:
            raise AccessDenied(
                f"{action} failed: permission denied ({code or 'HTTP 403'}); "
                "grant the identity the Key Vault Crypto Officer role"
            ) from None
        raise PurgeFailed(
            f"{action} failed: HTTP {error.status_code} {code or ''}".rstrip()
        ) from None
    except (core.ServiceRequestError, core.ServiceResponseError, OSError) as error:
        log.debug("key vault call failed", action=action, exc_info=True)
        raise TargetUnreachable(
            f"{action} failed: Key Vault did not respond ({type(error).__name__}); check "
            "the network and the vault URL, then run the job again"
        ) from None
    except Exception as error:
        if type(error).__name__ != "CredentialUnavailableError":
            raise
        log.debug("key vault call failed", action=action, exc_info=True)
        raise AccessDenied(
            f"{action} failed: DefaultAzureCredential found no credential; sign in "
            "with 'az login' or set AZURE_CLIENT_ID, AZURE_TENANT_ID and its secret"
        ) from None


def _error_code(error: Any) -> str | None:
    """Return the service's error code; Key Vault errors carry it in ``error.error``."""
    code = getattr(error, "error_code", None)
    if code:
        return str(code)
    detail = getattr(error, "error", None)
    return getattr(detail, "code", None)


def delete_and_purge(client: Any, name: str) -> dict[str, Any]:
    """Delete a key and purge it where the vault allows; return what happened.

    The returned facts: ``deleted_date``, ``recovery_level``, ``purged``
    (True when no recoverable copy is left), ``scheduled_purge_date`` and,
    when the purge was not possible, ``purge_blocked`` with the reason. A key
    already deleted by an interrupted run is purged the same way.
    """
    from azure.core import exceptions as core

    with translated(f"deleting Key Vault key {name}"):
        try:
            deleted = client.begin_delete_key(name).result()
        except core.ResourceNotFoundError:
            deleted = client.get_deleted_key(name)
    facts: dict[str, Any] = {
        "deleted_date": _iso(deleted.deleted_date),
        "recovery_level": level_name(deleted.properties.recovery_level),
        "scheduled_purge_date": _iso(deleted.scheduled_purge_date),
        "purged": False,
    }
    if deleted.recovery_id is None:
        # Without soft delete, the delete was final.
        facts["purged"] = True
        return facts
    if not purge_allowed(facts["recovery_level"]):
        facts["purge_blocked"] = (
            f"the vault has purge protection (recovery level {facts['recovery_level']}), "
            f"so the deleted key stays recoverable until {facts['scheduled_purge_date']}"
        )
        return facts
    try:
        with translated(f"purging deleted Key Vault key {name}"):
            client.purge_deleted_key(name)
    except AccessDenied as error:
        # The fact stays short because the key store keeps it in a 1 KiB slot.
        log.warning("key vault purge denied", key=name, error=str(error))
        facts["purge_blocked"] = (
            "the vault denied the purge (permission denied), so the deleted key "
            f"stays recoverable until {facts['scheduled_purge_date']}; grant the "
            "identity keys/purge"
        )
        return facts
    facts["purged"] = True
    log.info("key vault key purged", key=name)
    return facts


def key_status(client: Any, name: str) -> tuple[bool, Any]:
    """Return (whether the key is live, its deleted copy or None)."""
    from azure.core import exceptions as core

    live = True
    with translated(f"reading Key Vault key {name}"):
        try:
            client.get_key(name)
        except core.ResourceNotFoundError:
            live = False
        try:
            deleted = client.get_deleted_key(name)
        except core.ResourceNotFoundError:
            deleted = None
    return live, deleted


def deletion_checks(client: Any, name: str, purge_expected: bool) -> Iterator[Check]:
    """Check that a key is deleted and purged, or held only by purge protection."""
    try:
        live, deleted = key_status(client, name)
    except PluginError as error:
        yield Check("keyvault-key-deleted", False, str(error))
        return
    yield Check(
        "keyvault-key-deleted",
        not live,
        f"Key Vault key {name} {'still exists' if live else 'is deleted'}",
    )
    if deleted is None:
        yield Check("keyvault-key-purged", True, f"no deleted copy of {name} is listed")
        return
    level = level_name(deleted.properties.recovery_level)
    when = _iso(deleted.scheduled_purge_date)
    protected = not purge_allowed(level)
    yield Check(
        "keyvault-key-purged",
        protected and not purge_expected,
        f"deleted copy of {name} remains at recovery level {level} until {when}"
        + (
            ", held by the vault's purge protection"
            if protected and not purge_expected
            else "; purge it with 'az keyvault key purge'"
        ),
    )


class AzureKeyVaultBackend:
    """Data keys wrapped by one Key Vault RSA key per subject.

    Options: ``vault_url`` (``https://VAULT.vault.azure.net``, required),
    ``key_size`` (2048 or 3072, default 2048) and ``hardware_protected``
    (RSA-HSM keys, for Premium vaults). Each new data key gets a key
    ``lethe-<key id>`` that allows only wrapKey and unwrapKey, and is
    wrapped with RSA-OAEP-256. Destroying the data key deletes and purges
    that key.
    """

    name = "azure-keyvault"

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)
        url = str(self.options.get("vault_url") or "")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.netloc or parts.path not in ("", "/"):
            raise InvalidTarget(
                "azure_keyvault.vault_url must be a vault URL such as "
                f"https://VAULT.vault.azure.net, not {url!r}"
            )
        self.vault_url = f"https://{parts.netloc}"
        size = self.options.get("key_size", 2048)
        if size not in KEY_SIZES:
            raise InvalidTarget(
                f"azure_keyvault.key_size must be 2048 or 3072, not {size!r}"
            )
        self.key_size = size
        self.hardware_protected = self.options.get("hardware_protected") is True
        self._client: Any = None

    def make_credential(self) -> Any:
        """Return the credential (tests replace this with a fixed token)."""
        return default_credential()

    def client_kwargs(self) -> dict[str, Any]:
        """Return keyword arguments for the SDK clients (tests add a transport)."""
        return {}

    @property
    def client(self) -> Any:
        if self._client is None:
            keys = import_keys()
            with translated(f"connecting to Key Vault {self.vault_url}"):
                self._client = keys.KeyClient(
                    self.vault_url, self.make_credential(), **self.client_kwargs()
                )
        return self._client

    def new_data_key(
        self, subject: str, key_id: str
    ) -> tuple[bytes, bytes, dict[str, Any]]:
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm

        from plugins.keys import KEY_SIZE, subject_digest

        name = f"lethe-{key_id}"
        data_key = secrets.token_bytes(KEY_SIZE)
        with translated(f"creating Key Vault key {name} in {self.vault_url}"):
            key = self.client.create_rsa_key(
                name,
                size=self.key_size,
                hardware_protected=self.hardware_protected,
                key_operations=["wrapKey", "unwrapKey"],
                tags={"lethe-subject-sha256": subject_digest(subject)},
            )
            crypto = self.client.get_cryptography_client(
                name, key_version=key.properties.version
            )
            result = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, data_key)
        facts = {
            "kms_key": key.id,
            "kms_key_name": name,
            "kms_recovery_level": level_name(key.properties.recovery_level),
        }
        return data_key, bytes(result.encrypted_key), facts

    def unwrap(self, wrapped: bytes, record: Mapping[str, Any]) -> bytes:
        from azure.core import exceptions as core
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm

        from plugins.keys import KeyDestroyed

        _vault, name, version = parse_key_url(record["kms_key"])
        action = f"unwrapping data key {record['id']} with Key Vault key {name}"
        with translated(action):
            crypto = self.client.get_cryptography_client(name, key_version=version)
            try:
                result = crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
            except core.ResourceNotFoundError:
                log.debug("key vault call failed", action=action, exc_info=True)
                raise KeyDestroyed(
                    f"{action} failed: the key is deleted from {self.vault_url}", {}
                ) from None
        return bytes(result.key)

    def schedule_deletion(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Delete the subject's key and purge it where the vault allows.

        Lethe created the key for this record, so a key that the vault has
        neither live nor deleted was purged, as by a destroy that was
        interrupted before the store was written.
        """
        key_name = record["kms_key_name"]
        try:
            facts = delete_and_purge(self.client, key_name)
        except TargetNotFound:
            live, deleted = key_status(self.client, key_name)
            if live or deleted is not None:
                raise
            facts = {"deleted_date": None, "purged": True}
        return {f"kms_{name}": value for name, value in facts.items()}

    def residual(self) -> str:
        return (
            "Key Vault keeps a deleted wrapping key recoverable until its scheduled "
            "purge date; Lethe purges it at once, except in a vault with purge "
            "protection, where it stays recoverable until that date"
        )

    def plan_params(self) -> dict[str, Any]:
        return {"kms_vault": self.vault_url}

    def item_residual(self, record: Mapping[str, Any]) -> tuple[str, ...]:
        level = record.get("kms_recovery_level")
        if not level or purge_allowed(level):
            return ()
        residual = (
            f"the vault has purge protection (recovery level {level}), so the deleted "
            f"key {record.get('kms_key_name')} stays recoverable until its scheduled "
            "purge date, which the certificate records"
        )
        return (residual,)

    def checks(
        self, tombstone: Mapping[str, Any], wrapped: bytes | None
    ) -> Iterator[Check]:
        """Check the key is deleted and purged, and that unwrapping now fails."""
        name = tombstone["kms_key_name"]
        purge_expected = not tombstone.get("kms_purge_blocked")
        yield from deletion_checks(self.client, name, purge_expected)
        if wrapped is None:
            yield Check("keyvault-unwrap-fails", True, NO_WRAPPED_KEY)
            return
        from plugins.keys import KeyDestroyed

        try:
            self.unwrap(wrapped, tombstone)
        except KeyDestroyed:
            yield Check(
                "keyvault-unwrap-fails",
                True,
                f"Key Vault refused to unwrap with {name}",
            )
            return
        except PluginError as error:
            yield Check(
                "keyvault-unwrap-fails",
                False,
                f"unwrap attempt failed for another reason: {error}",
            )
            return
        yield Check(
            "keyvault-unwrap-fails", False, f"Key Vault still unwraps with {name}"
        )
