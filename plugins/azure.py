"""Azure Blob Storage plugin: blobs, snapshots, versions and soft-deleted copies.

A target ``az://account/container/prefix`` selects every blob whose name
starts with the prefix, with its snapshots, its previous versions and the
soft-deleted blobs, snapshots and versions the account still keeps. Blobs
are deleted with ``delete_snapshots="include"``, snapshots and versions by
their own identifiers, up to 256 to a blob batch request. Soft-deleted
snapshots and versions are then deleted permanently where the account allows
it (``AllowPermanentDelete``). The service offers no permanent delete for a
soft-deleted base blob, so those are reported with the date they expire.

Credentials come from the SDK's standard sources only: a connection string
in ``AZURE_STORAGE_CONNECTION_STRING`` (or in the variable the option
``connection_string_env`` names), or ``DefaultAzureCredential`` for the
account URL (``https://ACCOUNT.blob.core.windows.net`` unless the option
``account_url`` gives another). Retries come from azure-core's policy.

With ``purge_crypto: true``, ``encryption_scope`` and ``keyvault_key``, the
Key Vault key behind that encryption scope is deleted and purged after the
purge, once no copy the job keeps uses the scope (``_azure_cmk``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from plugins.base import (
    Check,
    Decision,
    Evidence,
    Item,
    JobContext,
    Method,
    PlannedItem,
    Plugin,
    PurgeResult,
    Refusal,
    Target,
    TargetInfo,
)
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    MissingDependency,
    PluginError,
    TargetNotFound,
    TargetUnreachable,
)

#: Sub-requests per blob batch request; the service accepts at most 256.
BATCH_LIMIT = 256
#: Blobs per listing page; the service returns at most 5,000.
PAGE_SIZE = 5000
ALLOWED_OPTIONS = frozenset(
    {
        "account_url",
        "connection_string_env",
        "whole_container",
        "delete_container",
        "retry_total",
        "purge_crypto",
        "encryption_scope",
        "keyvault_key",
    }
)
DEFAULT_RETRY_TOTAL = 5
#: Checkpoint that keeps the plan's decision on the scope's key for a resumed job.
SCOPE_KEY_CHECKPOINT = "purge-crypto"
#: Checkpoint saved before the job deletes the container itself.
CONTAINER_CHECKPOINT = "delete-container"
#: Listing includes that expose every copy of a blob and its locks.
LIST_INCLUDE = [
    "snapshots",
    "versions",
    "deleted",
    "metadata",
    "immutabilitypolicy",
    "legalhold",
]
#: Error codes that mean an immutability policy or legal hold blocks a delete.
IMMUTABLE_CODES = frozenset(
    {
        "BlobImmutableDueToPolicy",
        "BlobImmutableDueToLegalHold",
        "BlobImmutableDueToVersionLevelImmutabilityPolicy",
        "ContainerImmutabilityPolicyLocked",
    }
)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _parse_url(url: str) -> tuple[str, str, str]:
    parts = Target(url).parts
    segments = parts.path.lstrip("/").split("/", 1)
    if parts.scheme != "az" or not parts.netloc or not segments[0]:
        raise InvalidTarget(
            f"invalid Azure Blob target {url!r}: expected az://account/container or "
            "az://account/container/prefix"
        )
    if parts.query or parts.fragment:
        raise InvalidTarget(
            f"invalid Azure Blob target {url!r}: '?' and '#' are not allowed; set "
            "options under the target in the config"
        )
    return parts.netloc, segments[0], segments[1] if len(segments) > 1 else ""


def _import_blob() -> Any:
    try:
        from azure.storage import blob
    except ImportError as exc:
        raise MissingDependency(
            "the az plugin needs azure-storage-blob and azure-identity; install them "
            "with pip install 'lethe[azure]'"
        ) from exc
    return blob


def _copy_kind(props: Any) -> str:
    if props.snapshot:
        kind = "snapshot"
    elif props.version_id and not props.is_current_version:
        kind = "version"
    else:
        kind = "blob"
    return f"deleted-{kind}" if props.deleted else kind


def _copy_key(props: Any) -> str:
    key = props.name
    if props.snapshot:
        key += f"?snapshot={props.snapshot}"
    elif props.version_id and not props.is_current_version:
        key += f"?versionid={props.version_id}"
    if props.deleted:
        key += "#deleted"
    return key


class AzurePlugin(Plugin):
    """Delete every blob, snapshot and version under an Azure Blob prefix."""

    name = "azure"
    schemes = ("az",)
    requires = ("azure.storage.blob",)
    methods = (Method.DELETE_ALL_VERSIONS,)
    batch_size = BATCH_LIMIT

    def __init__(self, target: Target, context: JobContext) -> None:
        super().__init__(target, context)
        self.account, self.container_name, self.prefix = _parse_url(target.url)
        self.options = self._validate_options(dict(target.options))
        self.log = structlog.get_logger(__name__).bind(
            plugin=self.name, target=target.url
        )
        self._service: Any = None
        self._container: Any = None
        self._container_props: Any = None
        #: Soft-delete retention in days, 0 when off, None when unreadable.
        self._soft_delete_days: int | None = None
        self._container_deleted = False
        self._key_client: Any = None
        #: Whether the plan destroys the scope's key, because copies under the prefix use it.
        self._scope_key_planned = False
        #: True once the job's checkpoints contain ``_scope_key_planned``.
        self._scope_plan_saved = False
        #: True when this job has sent the request to delete the scope's key.
        self._scope_key_delete_sent = False

    # -- set-up ---------------------------------------------------------------

    def _validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - ALLOWED_OPTIONS)
        if unknown:
            raise InvalidTarget(
                f"unknown option(s) {', '.join(unknown)} for target {self.target.url}; "
                f"az targets accept {', '.join(sorted(ALLOWED_OPTIONS))}"
            )
        if not self.prefix and options.get("whole_container") is not True:
            raise InvalidTarget(
                f"target {self.target.url} selects every blob in container "
                f"{self.container_name!r}; set 'whole_container: true' under the target "
                f"to confirm, or give a prefix such as "
                f"az://{self.account}/{self.container_name}/path/"
            )
        if options.get("delete_container") and self.prefix:
            raise InvalidTarget(
                f"delete_container is set for {self.target.url}, which is a prefix; the "
                "container can only be deleted when the target is "
                f"az://{self.account}/{self.container_name}"
            )
        if options.get("purge_crypto") is True:
            self._validate_crypto_options(options)
        retries = options.setdefault("retry_total", DEFAULT_RETRY_TOTAL)
        if not isinstance(retries, int) or retries < 0:
            raise InvalidTarget(
                f"retry_total for {self.target.url} must be a whole number of retries, "
                f"not {retries!r}"
            )
        return options

    def _validate_crypto_options(self, options: dict[str, Any]) -> None:
        from plugins import _keyvault

        scope = options.get("encryption_scope")
        if not isinstance(scope, str) or not scope:
            raise InvalidTarget(
                f"purge_crypto for {self.target.url} needs encryption_scope: the name "
                "of the encryption scope whose Key Vault key is destroyed"
            )
        _keyvault.parse_key_url(str(options.get("keyvault_key") or ""))

    def make_key_client(self, vault_url: str) -> Any:
        """Create the Key Vault client (tests override this to add a transport)."""
        from plugins import _keyvault

        keys = _keyvault.import_keys()
        return keys.KeyClient(vault_url, _keyvault.default_credential())

    @property
    def key_client(self) -> Any:
        if self._key_client is None:
            from plugins import _keyvault

            vault_url, _name, _version = _keyvault.parse_key_url(
                self.options["keyvault_key"]
            )
            with _keyvault.translated(f"connecting to Key Vault {vault_url}"):
                self._key_client = self.make_key_client(vault_url)
        return self._key_client

    def client_kwargs(self) -> dict[str, Any]:
        """Return keyword arguments for the service client (tests add a transport)."""
        return {"retry_total": self.options["retry_total"]}

    def make_service_client(self) -> Any:
        """Create the service client from a connection string or DefaultAzureCredential."""
        blob = _import_blob()
        kwargs = self.client_kwargs()
        variable = self.options.get(
            "connection_string_env", "AZURE_STORAGE_CONNECTION_STRING"
        )
        connection_string = os.environ.get(variable)
        if self.options.get("connection_string_env") and not connection_string:
            raise InvalidTarget(
                f"connection_string_env for {self.target.url} names {variable}, which is "
                "not set in the environment"
            )
        if connection_string:
            client = blob.BlobServiceClient.from_connection_string(
                connection_string, **kwargs
            )
            if client.account_name != self.account:
                raise InvalidTarget(
                    f"the connection string in {variable} is for account "
                    f"{client.account_name!r}, but the target names {self.account!r}"
                )
            return client
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise MissingDependency(
                "the az plugin needs azure-identity for DefaultAzureCredential; install "
                "it with pip install 'lethe[azure]'"
            ) from exc
        url = (
            self.options.get("account_url")
            or f"https://{self.account}.blob.core.windows.net"
        )
        return blob.BlobServiceClient(
            url, credential=DefaultAzureCredential(), **kwargs
        )

    @property
    def container(self) -> Any:
        if self._container is None:
            with self._translated(f"connecting to Azure Blob for {self.target.url}"):
                self._service = self.make_service_client()
                self._container = self._service.get_container_client(
                    self.container_name
                )
        return self._container

    def close(self) -> None:
        for client in (self._container, self._service, self._key_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._container = self._service = self._key_client = None

    # -- error translation ----------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, action: str, resource: str | None = None) -> Iterator[None]:
        try:
            yield
        except PluginError:
            raise
        except Exception as exc:
            error = self._translate(
                exc, action, resource or f"container {self.container_name!r}"
            )
            self.log.debug("sdk_error", action=action, exc_info=True)
            raise error from exc

    def _translate(self, exc: Exception, action: str, resource: str) -> PluginError:
        from azure.core import exceptions as core

        code = getattr(exc, "error_code", None) or ""
        if isinstance(exc, core.ResourceNotFoundError):
            return TargetNotFound(
                f"{action} failed: {resource} not found in account {self.account!r} "
                f"({code or 'HTTP 404'}); check the names in {self.target.url}"
            )
        status = getattr(exc, "status_code", None)
        if isinstance(exc, core.ClientAuthenticationError) or status == 403:
            return AccessDenied(
                f"{action} failed: permission denied on {resource} ({code or 'HTTP 403'}); "
                "check the connection string or grant the identity the Storage Blob "
                "Data Owner role on the container"
            )
        if type(exc).__name__ == "CredentialUnavailableError":
            return AccessDenied(
                f"{action} failed: DefaultAzureCredential found no credential; sign in "
                "with 'az login', set AZURE_CLIENT_ID and its secret, or set "
                "AZURE_STORAGE_CONNECTION_STRING"
            )
        if isinstance(
            exc, core.ServiceRequestError | core.ServiceResponseError | OSError
        ):
            return TargetUnreachable(
                f"{action} failed: the Azure Blob endpoint for account {self.account!r} "
                f"did not answer ({type(exc).__name__}); check the network, the account "
                "URL or connection string, then run the job again"
            )
        if isinstance(exc, core.HttpResponseError):
            return TargetUnreachable(
                f"{action} failed on {resource}: HTTP {status} {code}; run the job again "
                "once the service answers normally"
            )
        return TargetUnreachable(
            f"{action} failed on {resource}: {type(exc).__name__}: {exc}"
        )

    # -- describe -------------------------------------------------------------

    def _load_container(self) -> Any:
        if self._container_props is None:
            container = self.container
            with self._translated(f"reading container {self.container_name!r}"):
                self._container_props = container.get_container_properties()
        return self._container_props

    def _read_soft_delete(self) -> int | None:
        from azure.core import exceptions as core

        try:
            properties = self._service.get_service_properties()
        except core.HttpResponseError:
            # Reading account settings needs more than data access, so the plan
            # states that the policy is unknown.
            self.log.debug("service_properties_unreadable", exc_info=True)
            return None
        except Exception as exc:
            raise self._translate(
                exc, "reading the account's soft-delete policy", "account"
            ) from exc
        policy = properties.get("delete_retention_policy")
        if policy is None or not policy.enabled:
            return 0
        return int(policy.days or 0)

    def describe(self) -> TargetInfo:
        if self._deleted_by_this_job():
            media = {
                "media_type": "Azure Blob Storage container",
                "account": self.account,
                "container": self.container_name,
                "prefix": self.prefix,
                "container_deleted": True,
            }
            note = (
                f"the container {self.container_name!r} was deleted by an earlier "
                "run of this job"
            )
            return TargetInfo(media=media, notes=(note,))
        props = self._load_container()
        self._soft_delete_days = self._read_soft_delete()
        scope = props.encryption_scope
        media = {
            "media_type": "Azure Blob Storage container",
            "account": self.account,
            "container": self.container_name,
            "prefix": self.prefix,
            "soft_delete_days": self._soft_delete_days,
            "has_immutability_policy": bool(props.has_immutability_policy),
            "has_legal_hold": bool(props.has_legal_hold),
            "version_level_worm": bool(props.immutable_storage_with_versioning_enabled),
            "default_encryption_scope": scope.default_encryption_scope
            if scope
            else None,
        }
        notes = [self._soft_delete_note(), self._container_note()]
        residual = []
        if self._soft_delete_days:
            until = datetime.now(UTC) + timedelta(days=self._soft_delete_days)
            residual.append(
                "deleted base blobs stay soft-deleted, restorable, until about "
                f"{until.date().isoformat()}; snapshots and versions are deleted "
                "permanently only where the account allows permanent delete"
            )
        if props.has_immutability_policy or props.has_legal_hold:
            notes.append(
                "the container has a time-based immutability policy or a legal hold: its "
                "blobs are refused and listed as blocked"
            )
        if self.options.get("purge_crypto") is True:
            scope_notes, scope_residual = self._plan_scope_key()
            notes.extend(scope_notes)
            residual.extend(scope_residual)
        elif media["default_encryption_scope"]:
            residual.append(
                f"blobs use encryption scope {media['default_encryption_scope']!r}; if it "
                "uses a customer-managed key, revoking that key is the key owner's "
                "decision and is not done by this purge"
            )
        return TargetInfo(media=media, notes=tuple(notes), residual=tuple(residual))

    def _deleted_by_this_job(self) -> bool:
        """Tell whether an earlier run of this job deleted the container, now absent."""
        if self.context.checkpoints.load(CONTAINER_CHECKPOINT) is None:
            return False
        with self._translated(f"checking container {self.container_name!r}"):
            self._container_deleted = not self.container.exists()
        return self._container_deleted

    def _survey_scope(self) -> Any:
        from plugins import _azure_cmk

        scope = self.options["encryption_scope"]
        with self._translated(f"listing blobs that use encryption scope {scope!r}"):
            return _azure_cmk.survey(
                self._service, self.container, self.container_name, self.prefix, scope
            )

    def _plan_scope_key(self) -> tuple[list[str], list[str]]:
        from plugins import _azure_cmk

        use = self._survey_scope()
        saved = self.context.checkpoints.load(SCOPE_KEY_CHECKPOINT)
        if saved is not None:
            # In a resumed job, copies deleted before the interruption are no
            # longer listed, so the decision comes from the saved plan.
            self._scope_key_planned = bool(saved["destroy_key"])
            self._scope_key_delete_sent = bool(saved.get("delete_sent"))
            self._scope_plan_saved = True
        else:
            self._scope_key_planned = bool(use.selected or use.selected_deleted)
        return _azure_cmk.plan_lines(
            use,
            self.key_client,
            self.options["keyvault_key"],
            self.options["encryption_scope"],
        )

    def _save_scope_plan(self) -> None:
        """Save the plan's decision on the scope's key before the first delete."""
        if self._scope_plan_saved or self.options.get("purge_crypto") is not True:
            return
        self._write_scope_checkpoint()
        self._scope_plan_saved = True

    def _write_scope_checkpoint(self) -> None:
        self.context.checkpoints.save(
            SCOPE_KEY_CHECKPOINT,
            {
                "keyvault_key": self.options["keyvault_key"],
                "destroy_key": self._scope_key_planned,
                "delete_sent": self._scope_key_delete_sent,
            },
        )

    def _record_key_delete(self) -> None:
        """Note the key's deletion before it is sent, for a resumed job."""
        self._scope_key_delete_sent = True
        self._write_scope_checkpoint()

    def _shred_scope_key(self) -> Iterator[PurgeResult]:
        """Delete and purge the scope's key once nothing the job keeps uses it.

        A fresh listing decides, so the key is kept when a copy outside the
        selection uses the scope now.
        """
        from plugins import _azure_cmk

        if not self._scope_key_planned or self.context.dry_run:
            return
        key_url = self.options["keyvault_key"]
        result = None
        if self._scope_key_delete_sent:
            # A resumed job repeats this step, and the earlier run may have
            # purged the key already.
            result = _azure_cmk.purged_earlier(self.key_client, key_url)
        if result is None:
            after = self._survey_scope()
            result = _azure_cmk.shred_key(
                self.key_client, key_url, after, self._record_key_delete
            )
        self.log.info("scope_key_step", status=result.status)
        yield result

    def _soft_delete_note(self) -> str:
        days = self._soft_delete_days
        if days is None:
            return (
                "the account's soft-delete policy could not be read with these "
                "credentials; soft-deleted copies left after the purge are listed with "
                "their expiry"
            )
        if days == 0:
            return "blob soft delete is off: deletes are permanent"
        return (
            f"blob soft delete keeps deleted blobs for {days} days; Lethe permanently "
            "deletes soft-deleted snapshots and versions where the account allows it"
        )

    def _container_note(self) -> str:
        if self._deletes_container():
            return f"the container {self.container_name!r} itself is deleted after its blobs"
        return f"the container {self.container_name!r} itself is kept"

    def _deletes_container(self) -> bool:
        return not self.prefix and self.options.get("delete_container") is True

    # -- discover -------------------------------------------------------------

    def discover(self) -> Iterator[Item]:
        self._load_container()
        for props in self._list(self.prefix):
            yield self._item(props)

    def _list(self, prefix: str) -> Iterator[Any]:
        action = f"listing blobs, snapshots and versions under {self.target.url}"
        with self._translated(action):
            pages = self.container.list_blobs(
                name_starts_with=prefix or None,
                include=LIST_INCLUDE,
                results_per_page=PAGE_SIZE,
            ).by_page()
            for page in pages:
                yield from page

    def _item(self, props: Any) -> Item:
        policy = props.immutability_policy
        expiry = getattr(policy, "expiry_time", None) if policy else None
        attributes = {
            "container": self.container_name,
            "name": props.name,
            "snapshot": props.snapshot,
            "version_id": props.version_id,
            "is_current_version": bool(props.is_current_version),
            "deleted": bool(props.deleted),
            "deleted_time": _iso(props.deleted_time),
            "remaining_retention_days": props.remaining_retention_days,
            "metadata": dict(props.metadata or {}),
            "last_modified": _iso(props.last_modified),
            "legal_hold": bool(props.has_legal_hold),
            "immutability_expiry": _iso(expiry),
            "immutability_mode": getattr(policy, "policy_mode", None)
            if policy
            else None,
            "encryption_scope": props.encryption_scope,
        }
        kind = _copy_kind(props)
        return Item(
            key=_copy_key(props),
            kind=kind,
            size=int(props.size or 0),
            identity={"etag": props.etag, "last_modified": attributes["last_modified"]},
            attributes=attributes,
            label=f"az://{self.account}/{self.container_name}/{props.name} ({kind})",
        )

    # -- plan -----------------------------------------------------------------

    def plan_item(self, item: Item) -> Decision:
        refusal = self._lock_refusal(item.attributes)
        if refusal is not None:
            return Decision(refusal=refusal)
        if item.kind == "deleted-blob":
            return self._plan_deleted_blob(item.attributes)
        action = "permanent" if item.kind.startswith("deleted-") else "delete"
        residual: tuple[str, ...] = ()
        if item.kind == "blob" and self._soft_delete_days:
            until = datetime.now(UTC) + timedelta(days=self._soft_delete_days)
            residual = (
                f"the deleted blob stays soft-deleted until about {until.date().isoformat()}",
            )
        return Decision(
            method=Method.DELETE_ALL_VERSIONS,
            residual=residual,
            params={"action": action},
        )

    def _lock_refusal(self, attributes: Any) -> Refusal | None:
        props = self._container_props
        if attributes["legal_hold"] or (props is not None and props.has_legal_hold):
            return Refusal(
                reason="legal-hold",
                detail="a legal hold blocks deletion until its owner clears it",
            )
        expiry = attributes["immutability_expiry"]
        if expiry and datetime.fromisoformat(expiry) > datetime.now(UTC):
            mode = attributes["immutability_mode"] or "time-based"
            return Refusal(
                reason="hold",
                detail=f"{mode} immutability policy keeps this copy until {expiry}",
                blocked_until=datetime.fromisoformat(expiry),
            )
        if props is not None and props.has_immutability_policy:
            return Refusal(
                reason="hold",
                detail=(
                    "the container's time-based immutability policy keeps each blob for "
                    f"its retention interval after {attributes['last_modified']}; the "
                    "interval is shown in Azure Resource Manager"
                ),
            )
        return None

    def _plan_deleted_blob(self, attributes: Any) -> Decision:
        if self._soft_delete_days == 0:
            # With soft delete off, undelete and delete again removes it for good.
            return Decision(
                method=Method.DELETE_ALL_VERSIONS, params={"action": "undelete"}
            )
        expires = _soft_delete_expiry(attributes)
        return Decision(
            refusal=Refusal(
                reason="soft-deleted",
                detail=(
                    "soft-deleted blob; Azure offers no permanent delete for a base blob "
                    f"while soft delete is on, and removes it at {_iso(expires) or 'an unknown time'}"
                ),
                blocked_until=expires,
            )
        )

    # -- purge ----------------------------------------------------------------

    def purge(self, batch: Sequence[PlannedItem]) -> Iterator[PurgeResult]:
        self._load_container()
        self._save_scope_plan()
        batched = [
            entry for entry in batch if entry.decision.params.get("action") == "delete"
        ]
        single = [
            entry for entry in batch if entry.decision.params.get("action") != "delete"
        ]
        if batched:
            yield from self._delete_batch(batched)
        for entry in single:
            yield self._delete_single(entry)

    def _delete_batch(self, entries: list[PlannedItem]) -> Iterator[PurgeResult]:
        requests = [_delete_request(entry.item.attributes) for entry in entries]
        action = f"deleting a batch of {len(entries)} blobs under {self.target.url}"
        with self._translated(action):
            responses = list(
                self.container.delete_blobs(*requests, raise_on_any_failure=False)
            )
        followups: list[PlannedItem] = []
        for entry, response in zip(entries, responses, strict=True):
            status = response.status_code
            if status == 429 or status >= 500:
                # A throttled or failed sub-request is sent again on its own,
                # where azure-core's retry policy applies.
                result = self._retry_delete(entry)
            else:
                result = self._result(
                    entry, status, response.headers.get("x-ms-error-code")
                )
            attributes = entry.item.attributes
            if (
                result.status == "purged"
                and attributes["version_id"]
                and entry.item.kind == "blob"
            ):
                followups.append(entry)
            yield result
        if followups:
            # Deleting the current version turns it into a previous version with
            # the same id; delete that too so no copy of the blob stays readable.
            version_requests = [
                {
                    "name": e.item.attributes["name"],
                    "version_id": e.item.attributes["version_id"],
                }
                for e in followups
            ]
            with self._translated(action):
                list(
                    self.container.delete_blobs(
                        *version_requests, raise_on_any_failure=False
                    )
                )

    def _retry_delete(self, entry: PlannedItem) -> PurgeResult:
        from azure.core import exceptions as core

        request = _delete_request(entry.item.attributes)
        blob = self.container.get_blob_client(
            request["name"], snapshot=request.get("snapshot")
        )
        try:
            blob.delete_blob(
                version_id=request.get("version_id"),
                delete_snapshots=request.get("delete_snapshots"),
            )
        except core.HttpResponseError as exc:
            self.log.debug("delete_retry_failed", key=entry.item.key, exc_info=True)
            return self._result(entry, exc.status_code or 0, exc.error_code)
        except Exception as exc:
            raise self._translate(
                exc, f"deleting {entry.item.display}", entry.item.display
            ) from exc
        return self._result(entry, 202, None)

    def _delete_single(self, entry: PlannedItem) -> PurgeResult:
        from azure.core import exceptions as core

        attributes = entry.item.attributes
        action = entry.decision.params.get("action")
        try:
            if action == "undelete":
                blob = self.container.get_blob_client(attributes["name"])
                blob.undelete_blob()
                blob.delete_blob(delete_snapshots="include")
            else:
                self._delete_permanently(
                    attributes["name"], attributes["snapshot"], attributes["version_id"]
                )
        except core.HttpResponseError as exc:
            self.log.debug("delete_failed", key=entry.item.key, exc_info=True)
            if exc.status_code in (401, 403) and exc.error_code not in IMMUTABLE_CODES:
                raise self._translate(
                    exc, f"deleting {entry.item.display}", entry.item.display
                ) from exc
            if action == "permanent" and exc.status_code in (400, 409):
                if exc.error_code not in IMMUTABLE_CODES:
                    return self._permanent_delete_refused(entry, exc.error_code)
            return self._result(entry, exc.status_code or 0, exc.error_code)
        except Exception as exc:
            raise self._translate(
                exc, f"deleting {entry.item.display}", entry.item.display
            ) from exc
        return self._result(entry, 202, None)

    def _permanent_delete_refused(
        self, entry: PlannedItem, code: str | None
    ) -> PurgeResult:
        expires = _soft_delete_expiry(entry.item.attributes)
        detail = (
            f"the service refused the permanent delete ({code}); the account may not "
            "allow permanent delete, so the soft-deleted copy stays until "
            f"{_iso(expires) or 'its retention ends'}"
        )
        refusal = Refusal(reason="soft-deleted", detail=detail, blocked_until=expires)
        return PurgeResult(
            key=entry.item.key,
            status="blocked",
            detail=detail,
            refusal=refusal,
            facts={"error_code": code},
        )

    def _delete_permanently(
        self, name: str, snapshot: str | None, version_id: str | None
    ) -> None:
        """Remove a soft-deleted snapshot or version for good (``deletetype=permanent``)."""
        blob = self.container.get_blob_client(name, snapshot=snapshot)
        blob.delete_blob(
            version_id=None if snapshot else version_id,
            blob_delete_type="permanent",
        )

    def _result(self, entry: PlannedItem, status: int, code: str | None) -> PurgeResult:
        item = entry.item
        facts = {
            "http_status": status,
            "error_code": code,
            "encryption_scope": item.attributes["encryption_scope"],
        }
        if 200 <= status < 300 or status == 404:
            self.context.progress(item.size)
            self.log.info("blob_copy_deleted", key=item.key)
            return PurgeResult(
                key=item.key,
                status="purged",
                detail="already absent" if status == 404 else "",
                bytes=item.size,
                method=Method.DELETE_ALL_VERSIONS,
                facts=facts,
            )
        if code in IMMUTABLE_CODES:
            refusal = Refusal(
                reason="legal-hold" if "LegalHold" in code else "hold",
                detail=f"the service refused the delete with {code}",
            )
            return PurgeResult(
                key=item.key,
                status="blocked",
                detail=refusal.detail,
                refusal=refusal,
                facts=facts,
            )
        if status in (401, 403):
            raise AccessDenied(
                f"deleting {item.display} failed: permission denied ({code}); grant the "
                "identity the Storage Blob Data Owner role on the container"
            )
        return PurgeResult(
            key=item.key,
            status="failed",
            detail=f"deleting {item.display} failed with HTTP {status} {code}; the copy remains",
            facts=facts,
        )

    # -- complete -------------------------------------------------------------

    def complete(self) -> Iterator[PurgeResult]:
        if self._container_deleted:
            # A resumed job whose earlier run finished these steps, the
            # container's deletion last, has nothing left to list.
            return
        yield self._sweep_soft_deleted()
        yield from self._shred_scope_key()
        if self._deletes_container():
            yield self._delete_container()

    def _sweep_soft_deleted(self) -> PurgeResult:
        """Permanently delete soft-deleted snapshots and versions the purge left."""
        from azure.core import exceptions as core

        removed = remaining = 0
        latest: datetime | None = None
        for props in self._list(self.prefix):
            if (
                not props.deleted
                or _copy_kind(props) == "deleted-blob"
                and self._soft_delete_days == 0
            ):
                continue
            if props.snapshot or (props.version_id and not props.is_current_version):
                try:
                    self._delete_permanently(
                        props.name, props.snapshot, props.version_id
                    )
                    removed += 1
                    continue
                except core.HttpResponseError:
                    self.log.debug(
                        "permanent_delete_refused", name=props.name, exc_info=True
                    )
            remaining += 1
            expires = _soft_delete_expiry(
                {
                    "deleted_time": _iso(props.deleted_time),
                    "remaining_retention_days": props.remaining_retention_days,
                }
            )
            if expires and (latest is None or expires > latest):
                latest = expires
        facts = {
            "permanently_deleted": removed,
            "soft_deleted_remaining": remaining,
            "latest_expiry": _iso(latest),
        }
        if remaining == 0:
            return PurgeResult(
                key="soft-deleted-listing",
                status="purged",
                detail=f"no soft-deleted copy lists under {self.target.url}",
                facts=facts,
            )
        detail = (
            f"{remaining} soft-deleted copies remain under {self.target.url}; the "
            f"service removes the last of them by {_iso(latest) or 'an unknown time'}"
        )
        return PurgeResult(
            key="soft-deleted-listing",
            status="blocked",
            detail=detail,
            refusal=Refusal(reason="soft-deleted", detail=detail, blocked_until=latest),
            facts=facts,
        )

    def _delete_container(self) -> PurgeResult:
        leftover = next((p for p in self._list("") if not p.deleted), None)
        if leftover is not None:
            return PurgeResult(
                key="delete-container",
                status="blocked",
                detail=f"container {self.container_name!r} still holds {leftover.name!r}, so it was kept",
                refusal=Refusal(reason="in-use", detail="container is not empty"),
            )
        # Saved first, so a resumed job can tell this deletion from a missing container.
        self.context.checkpoints.save(
            CONTAINER_CHECKPOINT, {"container": self.container_name}
        )
        try:
            with self._translated(f"deleting container {self.container_name!r}"):
                self.container.delete_container()
        except PluginError as error:
            return PurgeResult(
                key="delete-container", status="failed", detail=str(error)
            )
        self._container_deleted = True
        self.log.info("container_deleted", container=self.container_name)
        return PurgeResult(
            key="delete-container",
            status="purged",
            detail=f"container {self.container_name!r} deleted",
        )

    # -- verify ---------------------------------------------------------------

    def verify(self, batch: Sequence[PlannedItem]) -> Iterator[Evidence]:
        if not batch:
            return
        if self._container_deleted:
            yield from self._verify_container_gone(batch)
            return
        names = {entry.item.attributes["name"] for entry in batch}
        prefix = os.path.commonprefix(sorted(names))
        listed: dict[str, list[Any]] = {}
        for props in self._list(prefix):
            if props.name in names:
                listed.setdefault(props.name, []).append(props)
        for entry in batch:
            yield self._evidence(entry, listed.get(entry.item.attributes["name"], []))

    def _evidence(self, entry: PlannedItem, copies: list[Any]) -> Evidence:
        item = entry.item
        attributes = item.attributes
        planned_key = item.key.removesuffix("#deleted")
        same = [
            props
            for props in copies
            if _copy_key(props).removesuffix("#deleted") == planned_key
        ]
        readable = [props for props in same if not props.deleted]
        soft = [props for props in same if props.deleted]
        if item.kind == "blob" and attributes["version_id"]:
            # The current version lives on as a previous version until deleted by id.
            readable += [
                props
                for props in copies
                if props.version_id == attributes["version_id"] and not props.deleted
            ]
        checks = [
            Check(
                "copy absent from a fresh listing with snapshots and versions",
                not readable,
                "not listed"
                if not readable
                else f"{len(readable)} readable copy listed",
            )
        ]
        if not soft:
            checks.append(
                Check("no soft-deleted copy", True, "soft-deleted listing has none")
            )
        else:
            declared = bool(entry.decision.residual)
            checks.append(
                Check(
                    "no soft-deleted copy",
                    declared,
                    "soft-deleted copy remains"
                    + (
                        ", as the plan stated"
                        if declared
                        else ", which the plan did not expect"
                    ),
                )
            )
        return Evidence(key=item.key, checks=tuple(checks))

    def _verify_container_gone(
        self, batch: Sequence[PlannedItem]
    ) -> Iterator[Evidence]:
        with self._translated(f"checking container {self.container_name!r}"):
            exists = self.container.exists()
        check = Check(
            "container deleted with every blob",
            not exists,
            "container no longer exists" if not exists else "container still exists",
        )
        for entry in batch:
            yield Evidence(key=entry.item.key, checks=(check,))


def _delete_request(attributes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"name": attributes["name"]}
    if attributes["snapshot"]:
        request["snapshot"] = attributes["snapshot"]
    elif attributes["version_id"] and not attributes["is_current_version"]:
        request["version_id"] = attributes["version_id"]
    else:
        request["delete_snapshots"] = "include"
    return request


def _soft_delete_expiry(attributes: Any) -> datetime | None:
    deleted = attributes.get("deleted_time")
    days = attributes.get("remaining_retention_days")
    if days is not None:
        return (datetime.now(UTC) + timedelta(days=int(days))).replace(microsecond=0)
    if deleted:
        return datetime.fromisoformat(deleted)
    return None
