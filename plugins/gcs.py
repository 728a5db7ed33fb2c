"""Google Cloud Storage plugin: every generation and soft-deleted copy under a prefix.

A target ``gs://bucket/prefix`` selects every generation whose name starts
with the prefix: the live one, the noncurrent ones a versioned bucket keeps,
and the soft-deleted ones Cloud Storage keeps after a delete (seven days by
default). Live and noncurrent generations are deleted by generation number,
in parallel. Soft-deleted generations cannot be deleted
early through any Cloud Storage call, so they are reported with the time the
service hard-deletes them.

Soft-delete retention is fixed when an object is deleted. With the target
option ``allow_bucket_changes: true`` the plugin sets the bucket's retention
to 0 before its first delete and restores the old value afterwards, so the
generations it deletes are gone at once. Without it, the plan lists the
soft-deleted copies as residual, with the date they disappear.

With ``purge_crypto: true`` (and optionally ``kms_endpoint``), the Cloud KMS
key versions that encrypt the purged generations are destroyed after the
purge, once no other generation in the bucket uses them (``_gcs_cmek``).

Credentials and the endpoint come from the SDK's standard chain only:
Application Default Credentials, and ``STORAGE_EMULATOR_HOST`` for an
emulator (the SDK then uses anonymous credentials).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import structlog

from plugins._gcs_batch import (
    BatchUnsupported,
    DeleteCall,
    build_delete_batch,
    parse_batch_response,
)
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
    ItemChanged,
    MissingDependency,
    PluginError,
    TargetNotFound,
    TargetUnreachable,
)

#: Generations handed to one purge or verify call.
BATCH_LIMIT = 100
#: Threads that send delete requests in parallel.
DEFAULT_WORKERS = 8
#: Batch requests one purge call sends at once, each with part of its batch.
BATCHES_IN_FLIGHT = 4
#: Minimum calls per batch request when a purge call is split over several.
MIN_BATCH_CALLS = 10
#: Statuses with which an endpoint rejects the batch endpoint itself.
BATCH_UNSUPPORTED_STATUSES = frozenset({400, 404, 405, 501})
#: Objects per listing page; the JSON API returns at most 1,000.
PAGE_SIZE = 1000
ALLOWED_OPTIONS = frozenset(
    {
        "project",
        "whole_bucket",
        "delete_bucket",
        "allow_bucket_changes",
        "release_holds",
        "retry_deadline",
        "workers",
        "purge_crypto",
        "kms_endpoint",
    }
)
#: Seconds the SDK keeps retrying a transient error before the plugin gives up.
DEFAULT_RETRY_DEADLINE = 60.0
#: Checkpoint that keeps the plan's key versions for a resumed job.
CMEK_CHECKPOINT = "purge-crypto"
#: Checkpoint that keeps the soft-delete retention the job replaced with 0.
RETENTION_CHECKPOINT = "soft-delete-retention"
#: Checkpoint saved before the job deletes the bucket itself.
BUCKET_CHECKPOINT = "delete-bucket"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _parse_url(url: str) -> tuple[str, str]:
    parts = Target(url).parts
    if parts.scheme != "gs" or not parts.netloc:
        raise InvalidTarget(
            f"invalid Cloud Storage target {url!r}: expected gs://bucket or "
            "gs://bucket/prefix"
        )
    if parts.query or parts.fragment:
        raise InvalidTarget(
            f"invalid Cloud Storage target {url!r}: '?' and '#' are not allowed; "
            "set options under the target in the config"
        )
    return parts.netloc, parts.path[1:] if parts.path.startswith("/") else parts.path


def _import_storage() -> Any:
    try:
        from google.cloud import storage
    except ImportError as exc:
        raise MissingDependency(
            "the gs plugin needs google-cloud-storage; install it with "
            "pip install 'lethe[gcs]'"
        ) from exc
    return storage


class GCSPlugin(Plugin):
    """Delete every generation of the objects under a Cloud Storage prefix."""

    name = "gcs"
    schemes = ("gs",)
    requires = ("google.cloud.storage",)
    methods = (Method.DELETE_ALL_VERSIONS,)
    batch_size = BATCH_LIMIT

    def __init__(self, target: Target, context: JobContext) -> None:
        super().__init__(target, context)
        self.bucket_name, self.prefix = _parse_url(target.url)
        self.options = self._validate_options(dict(target.options))
        self.log = structlog.get_logger(__name__).bind(
            plugin=self.name, target=target.url
        )
        self._client: Any = None
        self._bucket: Any = None
        self._retry: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._bucket_deleted = False
        #: False once the endpoint has rejected a batch request or returned no usable parts.
        self._batches_supported = True
        #: Soft-delete retention in seconds when describe() read the bucket.
        self._soft_delete_seconds = 0
        #: The retention the plugin replaced with 0, to be restored in complete().
        self._replaced_soft_delete: int | None = None
        self._kms_client: Any = None
        #: Key versions under the prefix that purge_crypto destroys, as planned.
        self._cmek_versions: set[str] = set()
        #: True once the job's checkpoints contain ``_cmek_versions``.
        self._cmek_saved = False

    # -- set-up ---------------------------------------------------------------

    def _validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - ALLOWED_OPTIONS)
        if unknown:
            raise InvalidTarget(
                f"unknown option(s) {', '.join(unknown)} for target {self.target.url}; "
                f"gs targets accept {', '.join(sorted(ALLOWED_OPTIONS))}"
            )
        if not self.prefix and options.get("whole_bucket") is not True:
            raise InvalidTarget(
                f"target {self.target.url} selects every object in bucket "
                f"{self.bucket_name!r}; set 'whole_bucket: true' under the target to "
                f"confirm, or give a prefix such as gs://{self.bucket_name}/path/"
            )
        if options.get("delete_bucket") and self.prefix:
            raise InvalidTarget(
                f"delete_bucket is set for {self.target.url}, which is a prefix; the "
                f"bucket can only be deleted when the target is gs://{self.bucket_name}"
            )
        workers = options.setdefault("workers", DEFAULT_WORKERS)
        if not isinstance(workers, int) or not 1 <= workers <= 64:
            raise InvalidTarget(
                f"workers for {self.target.url} must be a whole number from 1 to 64, "
                f"not {workers!r}"
            )
        deadline = options.setdefault("retry_deadline", DEFAULT_RETRY_DEADLINE)
        if not isinstance(deadline, int | float) or deadline <= 0:
            raise InvalidTarget(
                f"retry_deadline for {self.target.url} must be a positive number of "
                f"seconds, not {deadline!r}"
            )
        return options

    def make_client(self) -> Any:
        """Create the storage client from Application Default Credentials.

        With ``STORAGE_EMULATOR_HOST`` set, the SDK targets that emulator with
        anonymous credentials. Tests override this to pass an endpoint and a
        recording HTTP session.
        """
        storage = _import_storage()
        return storage.Client(project=self.options.get("project"))

    def make_kms_client(self) -> Any:
        """Create the Cloud KMS client (tests override this to reach a local fake)."""
        from plugins import _gcpkms

        return _gcpkms.make_client(self.options.get("kms_endpoint"))

    @property
    def kms_client(self) -> Any:
        if self._kms_client is None:
            from plugins import _gcpkms

            with _gcpkms.translated("connecting to Cloud KMS"):
                self._kms_client = self.make_kms_client()
        return self._kms_client

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._translated(f"connecting to Cloud Storage for {self.target.url}"):
                self._client = self.make_client()
                _size_connection_pools(self._client, int(self.options["workers"]))
            from google.cloud.storage.retry import DEFAULT_RETRY

            self._retry = DEFAULT_RETRY.with_timeout(
                float(self.options["retry_deadline"])
            )
        return self._client

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        self._kms_client = None

    # -- error translation ----------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, action: str, resource: str | None = None) -> Iterator[None]:
        try:
            yield
        except PluginError:
            raise
        except Exception as exc:
            error = self._translate(
                exc, action, resource or f"bucket {self.bucket_name!r}"
            )
            self.log.debug("sdk_error", action=action, exc_info=True)
            raise error from exc

    def _translate(self, exc: Exception, action: str, resource: str) -> PluginError:
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth

        if isinstance(exc, api.NotFound):
            return TargetNotFound(
                f"{action} failed: {resource} not found; check the name in "
                f"{self.target.url} and the project"
            )
        if isinstance(exc, api.Forbidden | api.Unauthorized):
            return AccessDenied(
                f"{action} failed: permission denied on {resource} ({exc.message}); "
                "grant the credentials storage.objects.list, storage.objects.delete "
                "and storage.buckets.get, or use other Application Default Credentials"
            )
        if isinstance(exc, auth.DefaultCredentialsError):
            return AccessDenied(
                f"{action} failed: no Application Default Credentials were found; run "
                "'gcloud auth application-default login' or set "
                "GOOGLE_APPLICATION_CREDENTIALS"
            )
        if isinstance(
            exc, api.RetryError | api.ServerError | auth.TransportError | OSError
        ):
            return TargetUnreachable(
                f"{action} failed: the Cloud Storage endpoint {self._endpoint()} did not "
                f"answer ({type(exc).__name__}); check the network, STORAGE_EMULATOR_HOST "
                "and the service status, then run the job again"
            )
        if isinstance(exc, api.GoogleAPICallError):
            return TargetUnreachable(
                f"{action} failed on {resource}: HTTP {exc.code} {exc.message}"
            )
        import requests

        if isinstance(exc, requests.RequestException):
            return TargetUnreachable(
                f"{action} failed: the Cloud Storage endpoint {self._endpoint()} did not "
                f"answer ({type(exc).__name__}); check the network and "
                "STORAGE_EMULATOR_HOST, then run the job again"
            )
        return TargetUnreachable(
            f"{action} failed on {resource}: {type(exc).__name__}: {exc}"
        )

    def _endpoint(self) -> str:
        if self._client is None:
            return "(not connected)"
        return str(
            getattr(self._client, "api_endpoint", None)
            or self._client._connection.API_BASE_URL
        )

    # -- describe -------------------------------------------------------------

    def _load_bucket(self) -> Any:
        if self._bucket is None:
            client = self.client
            with self._translated(f"reading bucket {self.bucket_name!r}"):
                self._bucket = client.get_bucket(self.bucket_name, retry=self._retry)
        return self._bucket

    def describe(self) -> TargetInfo:
        if self._deleted_by_this_job():
            return self._deleted_bucket_info()
        bucket = self._load_bucket()
        self._soft_delete_seconds = _soft_delete_seconds(bucket)
        media: dict[str, Any] = {
            "media_type": "Google Cloud Storage bucket",
            "bucket": self.bucket_name,
            "prefix": self.prefix,
            "location": bucket.location,
            "project_number": bucket.project_number,
            "versioning": bool(bucket.versioning_enabled),
            "soft_delete_retention_seconds": self._soft_delete_seconds,
            "default_kms_key_name": bucket.default_kms_key_name,
            "retention_period_seconds": bucket.retention_period,
            "retention_policy_locked": bool(bucket.retention_policy_locked),
        }
        notes = [
            self._versioning_note(bucket),
            self._soft_delete_note(),
            self._bucket_note(),
        ]
        residual = list(self._soft_delete_residual())
        if bucket.retention_period:
            state = "locked" if bucket.retention_policy_locked else "unlocked"
            notes.append(
                f"bucket has a {state} retention policy of {bucket.retention_period} s: "
                "objects younger than that are blocked until their retention "
                "expiration time and are not deleted"
            )
        if self.options.get("purge_crypto") is True:
            cmek_notes, cmek_residual = self._plan_cmek(bucket)
            notes.extend(cmek_notes)
            residual.extend(cmek_residual)
        elif bucket.default_kms_key_name:
            residual.append(
                f"objects are encrypted with the customer-managed key "
                f"{bucket.default_kms_key_name}; destroying a key version in Cloud KMS "
                "is scheduled by the provider and is the key owner's decision; the "
                "key version of each object is recorded with its result"
            )
        return TargetInfo(media=media, notes=tuple(notes), residual=tuple(residual))

    def _deleted_by_this_job(self) -> bool:
        """Tell whether an earlier run of this job deleted the bucket, now absent."""
        if self.context.checkpoints.load(BUCKET_CHECKPOINT) is None:
            return False
        with self._translated(f"looking up bucket {self.bucket_name!r}"):
            found = self.client.lookup_bucket(self.bucket_name, retry=self._retry)
        self._bucket_deleted = found is None
        return self._bucket_deleted

    def _deleted_bucket_info(self) -> TargetInfo:
        media = {
            "media_type": "Google Cloud Storage bucket",
            "bucket": self.bucket_name,
            "prefix": self.prefix,
            "bucket_deleted": True,
        }
        note = (
            f"the bucket {self.bucket_name!r} was deleted by an earlier run of this job"
        )
        return TargetInfo(media=media, notes=(note,))

    def _plan_cmek(self, bucket: Any) -> tuple[list[str], list[str]]:
        from plugins import _gcs_cmek

        with self._translated(
            f"listing key versions used in bucket {self.bucket_name!r}"
        ):
            uses = _gcs_cmek.survey(
                self.client, self.bucket_name, self.prefix, self._retry
            )
        saved = self.context.checkpoints.load(CMEK_CHECKPOINT)
        if saved is not None:
            # In a resumed job, generations deleted before the interruption
            # are no longer listed, so the versions come from the saved plan.
            self._cmek_versions = set(saved["versions"])
            self._cmek_saved = True
        else:
            self._cmek_versions = {
                version
                for version, use in uses.items()
                if use.selected or use.selected_soft_deleted
            }
        return _gcs_cmek.plan_lines(uses, self.kms_client, bucket.default_kms_key_name)

    def _save_cmek_plan(self) -> None:
        """Save the planned key versions before the first delete, for a resumed job."""
        if self._cmek_saved or self.options.get("purge_crypto") is not True:
            return
        self.context.checkpoints.save(
            CMEK_CHECKPOINT, {"versions": sorted(self._cmek_versions)}
        )
        self._cmek_saved = True

    def _shred_cmek(self) -> Iterator[PurgeResult]:
        """Destroy the planned key versions that nothing kept in the bucket uses.

        A fresh listing of the whole bucket decides, so a version that a
        generation outside the selection uses now is kept.
        """
        from plugins import _gcs_cmek

        if not self._cmek_versions or self.context.dry_run:
            return
        with self._translated(
            f"listing key versions used in bucket {self.bucket_name!r}"
        ):
            uses = _gcs_cmek.survey(
                self.client, self.bucket_name, self.prefix, self._retry
            )
        for version in sorted(self._cmek_versions):
            result = _gcs_cmek.shred_version(
                self.kms_client, version, uses.get(version)
            )
            self.log.info("cmek_key_version", version=version, status=result.status)
            yield result

    def _versioning_note(self, bucket: Any) -> str:
        state = "enabled" if bucket.versioning_enabled else "disabled"
        return (
            f"object versioning is {state}; every live and noncurrent generation under "
            "the prefix is listed and deleted by generation number"
        )

    def _soft_delete_note(self) -> str:
        seconds = self._soft_delete_seconds
        if seconds <= 0:
            return "soft delete is off: deleted generations are removed at once"
        if self.options.get("allow_bucket_changes") is True:
            return (
                f"soft delete keeps deleted objects for {seconds} s "
                f"({seconds / 86400:g} days); Lethe sets the bucket's soft-delete "
                f"retention from {seconds} s to 0 before its first delete and back to "
                f"{seconds} s afterwards, so the generations it deletes are not kept"
            )
        return (
            f"soft delete keeps deleted objects for {seconds} s ({seconds / 86400:g} "
            "days) and the bucket settings are left alone; set "
            "'allow_bucket_changes: true' to have Lethe set the retention to 0 first"
        )

    def _soft_delete_residual(self) -> Iterator[str]:
        seconds = self._soft_delete_seconds
        if seconds > 0 and self.options.get("allow_bucket_changes") is not True:
            until = datetime.now(UTC) + timedelta(seconds=seconds)
            yield (
                "soft-deleted copies of every deleted generation remain restorable "
                f"until about {until.isoformat(timespec='seconds')}, when Cloud Storage "
                "hard-deletes them"
            )

    def _bucket_note(self) -> str:
        if self._deletes_bucket():
            return (
                f"the bucket {self.bucket_name!r} itself is deleted after its objects "
                "(delete_bucket: true); Cloud Storage keeps a deleted bucket "
                "soft-deleted for its own retention period"
            )
        return f"the bucket {self.bucket_name!r} itself is kept"

    def _deletes_bucket(self) -> bool:
        return not self.prefix and self.options.get("delete_bucket") is True

    # -- discover -------------------------------------------------------------

    def discover(self) -> Iterator[Item]:
        self._load_bucket()
        for blob in self._list(versions=True):
            yield self._item(blob, soft_deleted=False)
        for blob in self._list(soft_deleted=True):
            yield self._item(blob, soft_deleted=True)

    def _list(
        self,
        *,
        versions: bool = False,
        soft_deleted: bool = False,
        start_offset: str | None = None,
        end_offset: str | None = None,
    ) -> Iterator[Any]:
        """Stream generations under the prefix, page by page.

        Booleans go to the JSON API as "true": the SDK would send Python's
        "True", which the API accepts but fake-gcs-server ignores.
        """
        params: dict[str, Any] = {}
        if versions:
            params["versions"] = "true"
        if soft_deleted:
            params["soft_deleted"] = "true"
        what = "soft-deleted objects" if soft_deleted else "object generations"
        action = f"listing {what} under {self.target.url}"
        with self._translated(action):
            listing = self.client.list_blobs(
                self.bucket_name,
                prefix=self.prefix or None,
                start_offset=start_offset,
                end_offset=end_offset,
                page_size=PAGE_SIZE,
                retry=self._retry,
                **params,
            )
            seen_tokens: set[str] = set()
            for page in listing.pages:
                for blob in page:
                    # An emulator without soft delete returns live objects here; skip them.
                    if soft_deleted and blob.soft_delete_time is None:
                        continue
                    yield blob
                token = listing.next_page_token
                if token is not None and token in seen_tokens:
                    raise TargetUnreachable(
                        f"{action} failed: the endpoint {self._endpoint()} returned the "
                        f"page token {token!r} twice, so the listing would never end; "
                        "the endpoint does not page listings correctly"
                    )
                if token is not None:
                    seen_tokens.add(token)

    def _item(self, blob: Any, *, soft_deleted: bool) -> Item:
        live = blob.time_deleted is None and not soft_deleted
        retention = blob.retention
        attributes = {
            "bucket": self.bucket_name,
            "name": blob.name,
            "generation": blob.generation,
            "live": live,
            "soft_deleted": soft_deleted,
            "storage_class": blob.storage_class,
            "content_type": blob.content_type,
            "metadata": dict(blob.metadata or {}),
            "updated": _iso(blob.updated),
            "time_deleted": _iso(blob.time_deleted),
            "soft_delete_time": _iso(blob.soft_delete_time),
            "hard_delete_time": _iso(blob.hard_delete_time),
            "temporary_hold": bool(blob.temporary_hold),
            "event_based_hold": bool(blob.event_based_hold),
            "retention_expiration_time": _iso(blob.retention_expiration_time),
            "object_retention_mode": retention.mode if retention else None,
            "object_retain_until": _iso(retention.retain_until_time)
            if retention
            else None,
            "kms_key_name": blob.kms_key_name,
        }
        if soft_deleted:
            suffix = "soft-deleted"
        else:
            suffix = "live" if live else "noncurrent"
        key = f"{blob.name}#{blob.generation}" + (
            "@soft-deleted" if soft_deleted else ""
        )
        return Item(
            key=key,
            kind="soft-deleted" if soft_deleted else "generation",
            size=int(blob.size or 0),
            identity={
                "generation": blob.generation,
                "metageneration": blob.metageneration,
                "md5_hash": blob.md5_hash,
                "crc32c": blob.crc32c,
            },
            attributes=attributes,
            label=f"gs://{self.bucket_name}/{blob.name} (generation {blob.generation}, {suffix})",
        )

    # -- plan -----------------------------------------------------------------

    def plan_item(self, item: Item) -> Decision:
        attributes = item.attributes
        if attributes["soft_deleted"]:
            return Decision(refusal=self._soft_deleted_refusal(attributes))
        refusal = self._hold_refusal(attributes)
        if refusal is not None:
            return Decision(refusal=refusal)
        release = bool(attributes["temporary_hold"] or attributes["event_based_hold"])
        return Decision(
            method=Method.DELETE_ALL_VERSIONS,
            residual=tuple(self._soft_delete_residual()),
            params={"generation": attributes["generation"], "release_holds": release},
        )

    def _soft_deleted_refusal(self, attributes: Any) -> Refusal:
        until = attributes["hard_delete_time"]
        return Refusal(
            reason="soft-deleted",
            detail=(
                "soft-deleted generation; Cloud Storage offers no call that deletes it "
                f"before its hard-delete time {until}"
            ),
            blocked_until=datetime.fromisoformat(until) if until else None,
        )

    def _hold_refusal(self, attributes: Any) -> Refusal | None:
        now = datetime.now(UTC)
        retain_until = attributes["object_retain_until"]
        if retain_until and datetime.fromisoformat(retain_until) > now:
            return Refusal(
                reason="object-lock",
                detail=(
                    f"object retention ({attributes['object_retention_mode']}) keeps "
                    f"this generation until {retain_until}"
                ),
                blocked_until=datetime.fromisoformat(retain_until),
            )
        expires = attributes["retention_expiration_time"]
        if expires and datetime.fromisoformat(expires) > now:
            bucket = self._bucket
            state = (
                "locked"
                if bucket is not None and bucket.retention_policy_locked
                else "unlocked"
            )
            return Refusal(
                reason="hold",
                detail=(
                    f"the bucket's {state} retention policy keeps this generation until "
                    f"{expires}"
                ),
                blocked_until=datetime.fromisoformat(expires),
            )
        held = [
            name for name in ("temporary_hold", "event_based_hold") if attributes[name]
        ]
        if held and self.options.get("release_holds") is not True:
            names = " and ".join(name.replace("_", "-") for name in held)
            return Refusal(
                reason="hold",
                detail=(
                    f"{names} set, with no end date until someone releases it; set "
                    "'release_holds: true' under the target to release it before deleting"
                ),
            )
        return None

    # -- purge ----------------------------------------------------------------

    def purge(self, batch: Sequence[PlannedItem]) -> Iterator[PurgeResult]:
        bucket = self._load_bucket()
        self._save_cmek_plan()
        self._drop_soft_delete_retention(bucket)
        to_delete: list[PlannedItem] = []
        for entry in batch:
            if entry.decision.params.get("release_holds"):
                failure = self._release_holds(bucket, entry)
                if failure is not None:
                    yield failure
                    continue
            to_delete.append(entry)
        if to_delete:
            yield from self._delete_batch(bucket, to_delete)

    def _drop_soft_delete_retention(self, bucket: Any) -> None:
        if self._replaced_soft_delete is not None or self.context.dry_run:
            return
        if self.options.get("allow_bucket_changes") is not True:
            return
        action = f"setting soft-delete retention of bucket {self.bucket_name!r} to 0"
        with self._translated(action):
            bucket.reload(retry=self._retry)
        seconds = _soft_delete_seconds(bucket)
        # A resumed job finds 0 here when its earlier run set it.
        saved = self.context.checkpoints.load(RETENTION_CHECKPOINT)
        original = saved["seconds"] if saved is not None else seconds
        if seconds > 0:
            if saved is None:
                # Saved before the change, so that a resumed job restores the
                # retention even if this process dies right after the patch.
                self.context.checkpoints.save(
                    RETENTION_CHECKPOINT, {"seconds": seconds}
                )
            with self._translated(action):
                bucket.soft_delete_policy.retention_duration_seconds = 0
                bucket.patch(retry=self._retry)
            self.log.info("soft_delete_retention_set", before=seconds, after=0)
        if original > 0:
            self._replaced_soft_delete = original

    def _release_holds(self, bucket: Any, entry: PlannedItem) -> PurgeResult | None:
        attributes = entry.item.attributes
        blob = bucket.blob(attributes["name"], generation=attributes["generation"])
        try:
            with self._translated(
                f"releasing holds on {entry.item.display}", entry.item.display
            ):
                blob.temporary_hold = False
                blob.event_based_hold = False
                blob.patch(
                    if_metageneration_match=entry.item.identity["metageneration"],
                    retry=self._retry,
                )
        except PluginError as error:
            return PurgeResult(key=entry.item.key, status="failed", detail=str(error))
        self.log.info("holds_released", key=entry.item.key)
        return None

    def _delete_batch(
        self, bucket: Any, entries: list[PlannedItem]
    ) -> Iterator[PurgeResult]:
        """Delete each generation, in JSON API batch requests where possible.

        The entries are split into up to BATCHES_IN_FLIGHT batch requests
        sent at once, so the endpoint works on one while the next is built
        and read. A call without a response part, or with a transient status
        (408, 429 or 5xx), is sent again on its own with the SDK's retry
        policy. An endpoint that rejects batch requests gets single deletes
        for the rest of the job.
        """
        pool = self._worker_pool()
        outcomes: dict[str, PurgeResult | PluginError] = {}
        singles = entries
        if self._batches_supported:
            parts = max(1, min(BATCHES_IN_FLIGHT, len(entries) // MIN_BATCH_CALLS))
            chunks = [entries[index::parts] for index in range(parts)]
            for chunk_outcomes in pool.map(self._send_batch, chunks):
                outcomes.update(chunk_outcomes)
            singles = [entry for entry in entries if entry.item.key not in outcomes]
        if singles:
            single = pool.map(lambda entry: self._delete_one(bucket, entry), singles)
            for entry, outcome in zip(singles, single, strict=True):
                outcomes[entry.item.key] = outcome
        for entry in entries:
            outcome = outcomes[entry.item.key]
            if isinstance(outcome, PluginError):
                raise outcome
            yield outcome

    def _worker_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=int(self.options["workers"]), thread_name_prefix="lethe-gcs"
            )
        return self._pool

    def _send_batch(
        self, entries: list[PlannedItem]
    ) -> dict[str, PurgeResult | PluginError]:
        """Send one batch request of deletes and return each call's outcome.

        Calls left out of the returned mapping are to be sent singly.
        """
        calls = [
            DeleteCall(
                name=entry.item.attributes["name"],
                generation=entry.item.attributes["generation"],
                metageneration=entry.item.identity["metageneration"],
            )
            for entry in entries
        ]
        api_base = self._endpoint().rstrip("/")
        headers, body, ids = build_delete_batch(
            self.bucket_name, calls, urlsplit(api_base).path
        )
        url = f"{api_base}/batch/storage/v1"
        try:
            response = self.client._http.request(
                "POST",
                url,
                data=body,
                headers=headers,
                timeout=float(self.options["retry_deadline"]),
            )
        except Exception:
            self.log.warning("batch_request_failed", calls=len(calls), exc_info=True)
            return {}
        if response.status_code in BATCH_UNSUPPORTED_STATUSES:
            self._disable_batches(f"HTTP {response.status_code}")
            return {}
        if not 200 <= response.status_code < 300:
            self.log.warning("batch_request_failed", status=response.status_code)
            return {}
        try:
            answered = parse_batch_response(
                response.headers.get("Content-Type", ""), response.content, ids
            )
        except BatchUnsupported as exc:
            self._disable_batches(str(exc))
            return {}
        if not answered:
            self._disable_batches("the batch response contained no part for any call")
            return {}
        outcomes: dict[str, PurgeResult | PluginError] = {}
        for entry, content_id in zip(entries, ids, strict=True):
            result = answered.get(content_id)
            if result is None or _is_transient(result.status):
                continue
            outcomes[entry.item.key] = self._delete_outcome(
                entry, result.status, result.message
            )
        return outcomes

    def _disable_batches(self, reason: str) -> None:
        if self._batches_supported:
            self._batches_supported = False
            self.log.info(
                "batch_deletes_unsupported", endpoint=self._endpoint(), reason=reason
            )

    def _delete_one(self, bucket: Any, entry: PlannedItem) -> PurgeResult | PluginError:
        from google.api_core import exceptions as api

        item = entry.item
        try:
            bucket.delete_blob(
                item.attributes["name"],
                generation=item.attributes["generation"],
                if_metageneration_match=item.identity["metageneration"],
                retry=self._retry,
            )
        except (api.NotFound, api.PreconditionFailed, api.Forbidden) as exc:
            return self._delete_outcome(entry, int(exc.code or 0), exc.message)
        except Exception as exc:
            self.log.debug("delete_failed", key=item.key, exc_info=True)
            error = self._translate(exc, f"deleting {item.display}", item.display)
            return PurgeResult(
                key=item.key,
                status="failed",
                detail=f"{error}; the generation remains",
                facts=_delete_facts(item),
            )
        return self._delete_outcome(entry, 204, "")

    def _delete_outcome(
        self, entry: PlannedItem, status: int, message: str
    ) -> PurgeResult | PluginError:
        """Turn the HTTP status of one delete call into its result.

        Returns a PluginError, to be raised by the caller, when the
        credentials may not delete objects at all.
        """
        item = entry.item
        facts = _delete_facts(item)
        if status == 412:
            changed = ItemChanged(
                f"{item.display} changed since the plan (metageneration is no longer "
                f"{item.identity['metageneration']}); plan the target again"
            )
            return PurgeResult(
                key=item.key, status="failed", detail=str(changed), facts=facts
            )
        if status == 403 and _is_retention_message(message):
            return PurgeResult(
                key=item.key,
                status="blocked",
                detail=message,
                refusal=Refusal(reason="hold", detail=message),
                facts=facts,
            )
        if status in (401, 403):
            return AccessDenied(
                f"deleting {item.display} failed: permission denied ({message}); "
                "grant the credentials storage.objects.delete on the bucket"
            )
        if status != 404 and not 200 <= status < 300:
            return PurgeResult(
                key=item.key,
                status="failed",
                detail=(
                    f"deleting {item.display} failed: HTTP {status} {message}; "
                    "the generation remains"
                ),
                facts=facts,
            )
        self.context.progress(item.size)
        self.log.info("generation_deleted", key=item.key)
        return PurgeResult(
            key=item.key,
            status="purged",
            detail="already absent" if status == 404 else "",
            bytes=item.size,
            method=Method.DELETE_ALL_VERSIONS,
            facts=facts,
        )

    # -- complete -------------------------------------------------------------

    def complete(self) -> Iterator[PurgeResult]:
        if self._bucket_deleted:
            # A resumed job whose earlier run finished these steps, the bucket's
            # deletion last, has nothing left to list or restore.
            return
        if self._replaced_soft_delete is None and not self.context.dry_run:
            # A resumed job that deleted nothing itself still restores the
            # retention its earlier run replaced.
            saved = self.context.checkpoints.load(RETENTION_CHECKPOINT)
            if saved is not None:
                self._replaced_soft_delete = saved["seconds"]
        if self._replaced_soft_delete is not None:
            yield self._restore_soft_delete_retention()
        yield self._soft_deleted_remainder()
        yield from self._shred_cmek()
        if self._deletes_bucket():
            yield self._delete_bucket()

    def _restore_soft_delete_retention(self) -> PurgeResult:
        seconds = self._replaced_soft_delete
        bucket = self._load_bucket()
        facts = {"soft_delete_retention_before": seconds, "during_purge": 0}
        try:
            with self._translated(
                f"restoring soft-delete retention of bucket {self.bucket_name!r}"
            ):
                bucket.reload(retry=self._retry)
                bucket.soft_delete_policy.retention_duration_seconds = seconds
                bucket.patch(retry=self._retry)
        except PluginError as error:
            return PurgeResult(
                key="soft-delete-retention",
                status="failed",
                detail=f"{error}; the bucket's soft-delete retention is still 0, set it back to {seconds} s",
                facts=facts,
            )
        self._replaced_soft_delete = None
        self.context.checkpoints.save(RETENTION_CHECKPOINT, None)
        self.log.info("soft_delete_retention_restored", after=seconds)
        return PurgeResult(
            key="soft-delete-retention",
            status="purged",
            detail=f"soft-delete retention was {seconds} s, 0 during the purge, {seconds} s again",
            facts=facts,
        )

    def _soft_deleted_remainder(self) -> PurgeResult:
        count = 0
        latest: datetime | None = None
        for blob in self._list(soft_deleted=True):
            count += 1
            if blob.hard_delete_time and (
                latest is None or blob.hard_delete_time > latest
            ):
                latest = blob.hard_delete_time
        facts = {
            "soft_deleted_remaining": count,
            "latest_hard_delete_time": _iso(latest),
        }
        if count == 0:
            return PurgeResult(
                key="soft-deleted-listing",
                status="purged",
                detail=f"no soft-deleted generation lists under {self.target.url}",
                facts=facts,
            )
        detail = (
            f"{count} soft-deleted generation(s) remain under {self.target.url}; Cloud "
            f"Storage hard-deletes the last of them at {_iso(latest)}"
        )
        return PurgeResult(
            key="soft-deleted-listing",
            status="blocked",
            detail=detail,
            refusal=Refusal(reason="soft-deleted", detail=detail, blocked_until=latest),
            facts=facts,
        )

    def _delete_bucket(self) -> PurgeResult:
        remaining = next(iter(self._list(versions=True)), None)
        if remaining is not None:
            return PurgeResult(
                key="delete-bucket",
                status="blocked",
                detail=(
                    f"bucket {self.bucket_name!r} still holds generations (for example "
                    f"{remaining.name!r}), so it was kept"
                ),
                refusal=Refusal(reason="in-use", detail="bucket is not empty"),
            )
        # Saved first, so a resumed job can tell this deletion from a missing bucket.
        self.context.checkpoints.save(BUCKET_CHECKPOINT, {"bucket": self.bucket_name})
        try:
            with self._translated(f"deleting bucket {self.bucket_name!r}"):
                self._load_bucket().delete(retry=self._retry)
        except PluginError as error:
            return PurgeResult(key="delete-bucket", status="failed", detail=str(error))
        self._bucket_deleted = True
        self.log.info("bucket_deleted", bucket=self.bucket_name)
        return PurgeResult(
            key="delete-bucket",
            status="purged",
            detail=f"bucket {self.bucket_name!r} deleted",
        )

    # -- verify ---------------------------------------------------------------

    def verify(self, batch: Sequence[PlannedItem]) -> Iterator[Evidence]:
        if not batch:
            return
        if self._bucket_deleted:
            yield from self._verify_bucket_gone(batch)
            return
        names = [entry.item.attributes["name"] for entry in batch]
        start, end = min(names), max(names) + "\x00"
        listed = {
            (blob.name, blob.generation)
            for blob in self._list(versions=True, start_offset=start, end_offset=end)
        }
        soft = {
            (blob.name, blob.generation): blob
            for blob in self._list(
                soft_deleted=True, start_offset=start, end_offset=end
            )
        }
        for entry in batch:
            yield self._evidence(entry, listed, soft)

    def _verify_bucket_gone(self, batch: Sequence[PlannedItem]) -> Iterator[Evidence]:
        with self._translated(f"looking up bucket {self.bucket_name!r}"):
            exists = (
                self.client.lookup_bucket(self.bucket_name, retry=self._retry)
                is not None
            )
        check = Check(
            "bucket deleted with every generation",
            not exists,
            "bucket no longer exists" if not exists else "bucket still exists",
        )
        for entry in batch:
            yield Evidence(key=entry.item.key, checks=(check,))

    def _evidence(self, entry: PlannedItem, listed: set, soft: dict) -> Evidence:
        attributes = entry.item.attributes
        ident = (attributes["name"], attributes["generation"])
        gone = ident not in listed
        checks = [
            Check(
                "generation absent from a fresh versions listing",
                gone,
                "not listed" if gone else "still listed",
            )
        ]
        copy = soft.get(ident)
        if copy is None:
            checks.append(
                Check("no soft-deleted copy", True, "soft-deleted listing has none")
            )
        else:
            declared = bool(entry.decision.residual)
            until = _iso(copy.hard_delete_time)
            checks.append(
                Check(
                    "no soft-deleted copy",
                    declared,
                    f"soft-deleted copy remains until {until}"
                    + (
                        ", as the plan stated"
                        if declared
                        else ", which the plan did not expect"
                    ),
                )
            )
        return Evidence(key=entry.item.key, checks=tuple(checks))


def _delete_facts(item: Item) -> dict[str, Any]:
    facts: dict[str, Any] = {"generation": item.attributes["generation"]}
    if item.attributes["kms_key_name"]:
        facts["kms_key_version"] = item.attributes["kms_key_name"]
    return facts


def _is_transient(status: int) -> bool:
    return status in (0, 408, 429) or status >= 500


def _size_connection_pools(client: Any, workers: int) -> None:
    """Let every worker thread keep its own connection open.

    requests keeps 10 connections per host by default. With more workers
    than that, urllib3 discards the surplus after each request ("Connection
    pool is full"), so the next request opens a new connection and TLS
    session.
    """
    import requests

    for adapter in client._http.adapters.values():
        if (
            isinstance(adapter, requests.adapters.HTTPAdapter)
            and adapter._pool_maxsize < workers
        ):
            adapter.init_poolmanager(
                adapter._pool_connections, workers, block=adapter._pool_block
            )


def _soft_delete_seconds(bucket: Any) -> int:
    policy = bucket.soft_delete_policy
    return int(policy.retention_duration_seconds or 0) if policy else 0


def _is_retention_message(message: str) -> bool:
    lowered = message.lower()
    return "hold" in lowered or "retention" in lowered
