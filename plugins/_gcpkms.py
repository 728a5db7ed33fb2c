"""Google Cloud KMS: the key store backend and the calls the gs plugin shares.

Cloud KMS never deletes a CryptoKey. It destroys key versions: destroying
one sets its state to ``DESTROY_SCHEDULED`` and its ``destroy_time`` one
``destroy_scheduled_duration`` away (set per key when it is created), and at
that time Cloud KMS destroys the key material and the state becomes
``DESTROYED``. Until then ``RestoreCryptoKeyVersion`` can undo it. A
ciphertext made with a version that is not ``ENABLED`` no longer decrypts.

Credentials come from Application Default Credentials; ``endpoint`` selects
another API endpoint (a private service connect address, for example).
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
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

#: Version states in which the key material is gone or scheduled to go.
DESTROYED_STATES = ("DESTROY_SCHEDULED", "DESTROYED")
#: Cloud KMS accepts a scheduled-destruction duration from 24 hours to 120 days.
MIN_DESTROY_DAYS, MAX_DESTROY_DAYS = 1, 120
KEY_RING = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+$")
VERSION = re.compile(
    r"^(projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+)"
    r"/cryptoKeyVersions/\d+$"
)


def import_kms() -> Any:
    try:
        from google.cloud import kms
    except ImportError:
        raise MissingDependency(
            "Google Cloud KMS needs google-cloud-kms; install it with "
            "pip install 'lethe[gcp-kms]'"
        ) from None
    return kms


def make_client(endpoint: str | None = None) -> Any:
    """Create a client with Application Default Credentials."""
    kms = import_kms()
    options = {"api_endpoint": endpoint} if endpoint else None
    return kms.KeyManagementServiceClient(client_options=options)


def crypto_key_of(version_name: str) -> str | None:
    """Return the CryptoKey name of a CryptoKeyVersion name, or None."""
    match = VERSION.match(version_name or "")
    return match.group(1) if match else None


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Translate google-api-core and google-auth errors into plugin errors."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    try:
        yield
    except PluginError:
        raise
    except api.NotFound as error:
        log.debug("cloud kms call failed", action=action, exc_info=True)
        raise TargetNotFound(f"{action} failed: not found ({error.message})") from None
    except (api.PermissionDenied, api.Unauthenticated, api.Forbidden) as error:
        log.debug("cloud kms call failed", action=action, exc_info=True)
        raise AccessDenied(
            f"{action} failed: permission denied ({error.message}); grant the "
            "credentials the Cloud KMS role this step needs (roles/cloudkms.admin "
            "to destroy, roles/cloudkms.cryptoKeyEncrypterDecrypter to wrap)"
        ) from None
    except auth.DefaultCredentialsError:
        log.debug("cloud kms call failed", action=action, exc_info=True)
        raise AccessDenied(
            f"{action} failed: no Application Default Credentials were found; run "
            "'gcloud auth application-default login' or set "
            "GOOGLE_APPLICATION_CREDENTIALS"
        ) from None
    except (api.RetryError, api.ServerError, auth.TransportError, OSError) as error:
        log.debug("cloud kms call failed", action=action, exc_info=True)
        raise TargetUnreachable(
            f"{action} failed: Cloud KMS did not respond ({type(error).__name__}); "
            "check the network and the endpoint, then run the job again"
        ) from None
    except api.GoogleAPICallError as error:
        log.debug("cloud kms call failed", action=action, exc_info=True)
        raise PurgeFailed(
            f"{action} failed: HTTP {error.code} {error.message}"
        ) from None


def _iso(value: datetime | None) -> str | None:
    if not value:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def is_failed_precondition(error: Exception) -> bool:
    """Tell whether an API error is FAILED_PRECONDITION (a key version not enabled).

    gRPC raises FailedPrecondition. Over REST, google-api-core picks the class
    from the HTTP status alone (400, BadRequest), so the status in the
    documented error body decides.
    """
    from google.api_core import exceptions as api

    if isinstance(error, api.FailedPrecondition):
        return True
    response = getattr(error, "response", None)
    if not isinstance(error, api.BadRequest) or response is None:
        return False
    try:
        return response.json()["error"]["status"] == "FAILED_PRECONDITION"
    except (ValueError, KeyError, TypeError):
        return False


def version_state(client: Any, name: str) -> tuple[str, str | None]:
    """Return a key version's state name and its destroy time, if scheduled."""
    with translated(f"reading Cloud KMS key version {name}"):
        version = client.get_crypto_key_version(request={"name": name})
    return version.state.name, _iso(version.destroy_time)


def destroy_version(client: Any, name: str) -> dict[str, Any]:
    """Schedule destruction of one key version and return its state afterwards.

    A version already scheduled or destroyed is reported as it is, so a
    re-run of an interrupted job finishes without an error.
    """
    from google.api_core import exceptions as api

    action = f"destroying Cloud KMS key version {name}"
    with translated(action):
        try:
            version = client.destroy_crypto_key_version(request={"name": name})
        except api.BadRequest as error:
            if not is_failed_precondition(error):
                raise
            version = client.get_crypto_key_version(request={"name": name})
            if version.state.name not in DESTROYED_STATES:
                raise PurgeFailed(
                    f"{action} failed: the version is {version.state.name}, and only "
                    "an enabled or disabled key version can be destroyed"
                ) from None
    state, when = version.state.name, _iso(version.destroy_time)
    log.info(
        "cloud kms key version destroyed", version=name, state=state, destroy_time=when
    )
    return {"version": name, "state": state, "destroy_time": when}


def destroy_scheduled_days(client: Any, crypto_key: str) -> float | None:
    """Return a CryptoKey's scheduled-destruction duration in days, if readable."""
    with translated(f"reading Cloud KMS key {crypto_key}"):
        key = client.get_crypto_key(request={"name": crypto_key})
    duration = key.destroy_scheduled_duration
    if not duration:
        return None
    return duration.total_seconds() / 86400


class GcpKmsBackend:
    """Data keys wrapped by one Cloud KMS CryptoKey per subject.

    Options: ``key_ring`` (``projects/P/locations/L/keyRings/R``, required),
    ``endpoint``, ``destroy_scheduled_days`` (1 to 120, default 7) and
    ``protection_level`` (``SOFTWARE`` or ``HSM``). Each new data key gets a
    CryptoKey ``lethe-<key id>`` in the key ring, created with that duration,
    and is wrapped by ``Encrypt`` with the key id as additional authenticated
    data. Destroying the data key destroys every version of its CryptoKey.
    """

    name = "gcp-kms"

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)
        self.key_ring = str(self.options.get("key_ring") or "")
        if not KEY_RING.match(self.key_ring):
            raise InvalidTarget(
                "gcp_kms.key_ring must name a key ring as "
                f"projects/PROJECT/locations/LOCATION/keyRings/RING, not {self.key_ring!r}"
            )
        days = self.options.get("destroy_scheduled_days", 7)
        if (
            not isinstance(days, int)
            or not MIN_DESTROY_DAYS <= days <= MAX_DESTROY_DAYS
        ):
            raise InvalidTarget(
                f"gcp_kms.destroy_scheduled_days must be a whole number from "
                f"{MIN_DESTROY_DAYS} to {MAX_DESTROY_DAYS}, not {days!r}"
            )
        self.destroy_days = days
        level = self.options.get("protection_level", "SOFTWARE")
        if level not in ("SOFTWARE", "HSM"):
            raise InvalidTarget(
                f"gcp_kms.protection_level must be SOFTWARE or HSM, not {level!r}"
            )
        self.protection_level = level
        self._client: Any = None

    def make_client(self) -> Any:
        """Create the client (tests replace this to reach a local fake)."""
        return make_client(self.options.get("endpoint"))

    @property
    def client(self) -> Any:
        if self._client is None:
            with translated("connecting to Cloud KMS"):
                self._client = self.make_client()
        return self._client

    def new_data_key(
        self, subject: str, key_id: str
    ) -> tuple[bytes, bytes, dict[str, Any]]:
        from plugins.keys import KEY_SIZE, subject_digest

        kms = import_kms()
        crypto_key = {
            "purpose": kms.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT,
            "version_template": {
                "algorithm": kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
                "protection_level": getattr(kms.ProtectionLevel, self.protection_level),
            },
            # Label values allow at most 63 characters, so the digest is cut.
            "labels": {"lethe-subject-sha256": subject_digest(subject)[:63]},
            "destroy_scheduled_duration": timedelta(days=self.destroy_days),
        }
        data_key = secrets.token_bytes(KEY_SIZE)
        with translated(f"creating a Cloud KMS key in {self.key_ring}"):
            created = self.client.create_crypto_key(
                request={
                    "parent": self.key_ring,
                    "crypto_key_id": f"lethe-{key_id}",
                    "crypto_key": crypto_key,
                }
            )
            reply = self.client.encrypt(
                request={
                    "name": created.name,
                    "plaintext": data_key,
                    "additional_authenticated_data": _aad(key_id),
                }
            )
        facts = {"kms_key": created.name, "kms_key_version": reply.name}
        return data_key, bytes(reply.ciphertext), facts

    def unwrap(self, wrapped: bytes, record: Mapping[str, Any]) -> bytes:
        from google.api_core import exceptions as api

        from plugins.keys import KeyDestroyed

        action = f"decrypting data key {record['id']} with Cloud KMS"
        with translated(action):
            try:
                reply = self.client.decrypt(
                    request={
                        "name": record["kms_key"],
                        "ciphertext": wrapped,
                        "additional_authenticated_data": _aad(record["id"]),
                    }
                )
            except api.BadRequest as error:
                if not is_failed_precondition(error):
                    raise
                log.debug("cloud kms call failed", action=action, exc_info=True)
                raise KeyDestroyed(
                    f"{action} failed: the Cloud KMS key version that wrapped it is "
                    "not enabled (disabled, or scheduled for destruction)",
                    {},
                ) from None
        return bytes(reply.plaintext)

    def schedule_deletion(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Destroy every version of the subject's CryptoKey."""
        names = self._version_names(record["kms_key"])
        destroyed = [destroy_version(self.client, name) for name in names]
        times = [entry["destroy_time"] for entry in destroyed if entry["destroy_time"]]
        # A count, not the names, because the tombstone must fit a 1 KiB slot
        # however often the key was rotated; checks() lists the versions again.
        return {
            "kms_destroyed_versions": len(destroyed),
            "kms_destroy_time": max(times) if times else None,
            "kms_destroy_scheduled_days": self.destroy_days,
        }

    def _version_names(self, crypto_key: str) -> list[str]:
        with translated(f"listing versions of Cloud KMS key {crypto_key}"):
            return [
                version.name
                for version in self.client.list_crypto_key_versions(
                    request={"parent": crypto_key}
                )
            ]

    def residual(self) -> str:
        return (
            f"Cloud KMS destroys the wrapping key's material only "
            f"{self.destroy_days} day(s) after the purge (the key's scheduled-"
            "destruction duration); until then an administrator can restore the "
            "key version"
        )

    def plan_params(self) -> dict[str, Any]:
        return {"kms_destroy_scheduled_days": self.destroy_days}

    def item_residual(self, record: Mapping[str, Any]) -> tuple[str, ...]:
        return ()

    def checks(
        self, tombstone: Mapping[str, Any], wrapped: bytes | None
    ) -> Iterator[Check]:
        """Check every version's state and, when the wrapped key is known, a decrypt."""
        try:
            versions = self._version_names(tombstone["kms_key"])
        except PluginError as error:
            yield Check("kms-version-destroyed", False, str(error))
            return
        if not versions:
            yield Check(
                "kms-version-destroyed",
                False,
                f"{tombstone['kms_key']} lists no version",
            )
        for name in versions:
            try:
                state, when = version_state(self.client, name)
            except PluginError as error:
                yield Check("kms-version-destroyed", False, str(error))
                continue
            yield Check(
                "kms-version-destroyed",
                state in DESTROYED_STATES,
                f"Cloud KMS key version {name} is {state}, destroy time {when}",
            )
        if wrapped is not None:
            yield self._decrypt_check(tombstone, wrapped)
        else:
            yield Check("kms-decrypt-fails", True, NO_WRAPPED_KEY)

    def _decrypt_check(self, tombstone: Mapping[str, Any], wrapped: bytes) -> Check:
        from plugins.keys import KeyDestroyed

        try:
            self.unwrap(wrapped, tombstone)
        except KeyDestroyed:
            return Check(
                "kms-decrypt-fails",
                True,
                "Cloud KMS refused to decrypt the wrapped data key (version not enabled)",
            )
        except PluginError as error:
            return Check(
                "kms-decrypt-fails",
                False,
                f"decrypt attempt failed for another reason: {error}",
            )
        return Check(
            "kms-decrypt-fails", False, "Cloud KMS still decrypts the wrapped data key"
        )


def _aad(key_id: str) -> bytes:
    return b"lethe data key\0" + key_id.encode("ascii")
