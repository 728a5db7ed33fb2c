"""S3 plugin: every object version, delete marker and multipart upload under a prefix.

A target is ``s3://bucket/prefix``; the prefix is taken literally (no
percent-decoding, no path normalisation), so ``a/./b`` selects exactly the keys
that start with ``a/./b``. An empty prefix selects the whole bucket and needs
the option ``whole_bucket: true``.

Options read from the target's mapping in the config:

``endpoint_url``
    S3-compatible endpoint; otherwise boto3's standard chain decides
    (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, profile, region).
``region``
    Region of the bucket; otherwise boto3's standard chain decides.
``whole_bucket``, ``delete_bucket``
    Confirm an empty prefix; delete the emptied bucket afterwards.
``bypass_governance``
    Delete governance-mode versions under Object Lock (needs
    ``s3:BypassGovernanceRetention``).
``method``
    ``delete-all-versions`` (default) or ``lifecycle``, which installs
    expiration rules and leaves the deleting to S3.
``purge_crypto``, ``kms_pending_days``, ``kms_endpoint_url``
    Schedule deletion of the customer-managed KMS keys of SSE-KMS versions,
    with a pending window of 7 to 30 days.
``inspect_versions``
    ``sample`` (default): during planning, send HEAD to up to
    ``INSPECT_SAMPLE`` versions of each listing page to read encryption,
    retention and legal hold, and to every version when that sample finds
    more than one encryption or any SSE-C. ``true``: HEAD every version.
    ``false``: none. Every version is read on Object Lock buckets and with
    ``purge_crypto``.
``page_size``, ``retry_mode``, ``max_attempts``, ``workers``, ``verify_sample``
    Listing page size (at most 1000), boto3 retry mode (``standard`` or
    ``adaptive``) and attempts, concurrent requests, and HEAD requests per
    verified batch.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import structlog

from plugins._s3 import MISSING_BOTO3, client_error
from plugins._s3.completion import CompletionMixin
from plugins._s3.entries import (
    DEFAULT_WORKERS,
    DELETE_REQUEST_LIMIT,
    NOT_FOUND_CODES,
    _Entry,
    _iso,
    _parse_timestamp,
)
from plugins._s3.facts import FactsMixin
from plugins._s3.listing import ListingMixin
from plugins._s3.purge import PurgeMixin
from plugins.base import (
    Check,
    Decision,
    Evidence,
    Item,
    JobContext,
    Method,
    PlannedItem,
    Plugin,
    Refusal,
    Target,
    TargetInfo,
    chunked,
)
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    MissingDependency,
    PluginError,
    PurgeFailed,
    TargetNotFound,
    TargetUnreachable,
)

ALLOWED_OPTIONS = frozenset(
    {
        "endpoint_url",
        "region",
        "whole_bucket",
        "delete_bucket",
        "bypass_governance",
        "method",
        "purge_crypto",
        "kms_pending_days",
        "kms_endpoint_url",
        "inspect_versions",
        "page_size",
        "retry_mode",
        "max_attempts",
        "workers",
        "verify_sample",
    }
)


class S3Plugin(FactsMixin, ListingMixin, PurgeMixin, CompletionMixin, Plugin):
    """Purge every version, delete marker and multipart upload under an S3 prefix."""

    name = "s3"
    schemes = ("s3",)
    requires = ("boto3", "botocore")
    methods = (Method.DELETE_ALL_VERSIONS, Method.PURGE_CRYPTO, Method.LIFECYCLE)
    #: One purge call runs up to ``DEFAULT_WORKERS`` DeleteObjects requests of
    #: at most ``DELETE_REQUEST_LIMIT`` keys each, concurrently.
    batch_size = DELETE_REQUEST_LIMIT * DEFAULT_WORKERS

    def __init__(self, target: Target, context: JobContext) -> None:
        super().__init__(target, context)
        self.bucket, self.prefix = self._parse_url(target.url)
        self.options = self._validate_options(dict(target.options))
        self.log = structlog.get_logger(__name__).bind(
            plugin=self.name, target=target.url
        )
        self._s3: Any = None
        self._kms: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._state: sqlite3.Connection | None = None
        self._state_dir: tempfile.TemporaryDirectory | None = None
        self._bucket_facts: dict[str, Any] | None = None
        self._kms_managers: dict[str, str] = {}
        #: Customer-managed KMS keys of the versions planned for purge-crypto.
        self._crypto_keys: set[str] = set()
        #: True once the job's checkpoints contain the plan record (``_save_plan``).
        self._plan_saved = False
        #: True when an earlier process of this job started deleting.
        self._resumed_purge = False
        #: True when an earlier process of this job deleted the bucket.
        self._bucket_gone = False
        self._lifecycle_rules: list[str] = []
        self._started: datetime | None = None
        self._rescanned = False
        self._snapshot_ready = False
        self._sampled: Counter[str] = Counter()
        self._unreadable: list[str] = []
        self._deleted_any = False

    # -- target shape -----------------------------------------------------

    @staticmethod
    def _parse_url(url: str) -> tuple[str, str]:
        if not url.startswith("s3://"):
            raise InvalidTarget(
                f"invalid S3 target {url!r}: expected s3://bucket/prefix"
            )
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise InvalidTarget(
                f"invalid S3 target {url!r}: the bucket name is missing"
            )
        return bucket, prefix

    def _validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - ALLOWED_OPTIONS)

        if unknown:
            raise InvalidTarget(
                f"unknown option(s) {', '.join(unknown)} for target {self.target.url}; "
                f"S3 targets accept {', '.join(sorted(ALLOWED_OPTIONS))}"
            )
        if not self.prefix and options.get("whole_bucket") is not True:
            raise InvalidTarget(
                f"target {self.target.url} selects every object in bucket "
                f"{self.bucket!r}; set 'whole_bucket: true' under the target in the "
                f"config to confirm, or give a prefix such as s3://{self.bucket}/path/"
            )
        if options.get("delete_bucket") and self.prefix:
            raise InvalidTarget(
                f"delete_bucket is set for {self.target.url}, which is a prefix; the "
                f"bucket can only be deleted when the target is s3://{self.bucket} "
                "with whole_bucket: true"
            )

        method = options.setdefault("method", Method.DELETE_ALL_VERSIONS.value)
        if method not in (Method.DELETE_ALL_VERSIONS.value, Method.LIFECYCLE.value):
            raise InvalidTarget(
                f"invalid method {method!r} for {self.target.url}; expected "
                "delete-all-versions or lifecycle"
            )
        pending = options.setdefault("kms_pending_days", 30)
        if not isinstance(pending, int) or not 7 <= pending <= 30:
            raise InvalidTarget(
                f"invalid kms_pending_days {pending!r} for {self.target.url}; "
                "KMS accepts a whole number of days from 7 to 30"
            )

        page_size = options.setdefault("page_size", DELETE_REQUEST_LIMIT)
        if not isinstance(page_size, int) or not 1 <= page_size <= DELETE_REQUEST_LIMIT:
            raise InvalidTarget(
                f"invalid page_size {page_size!r} for {self.target.url}; expected 1 to 1000"
            )
        retry_mode = options.setdefault("retry_mode", "standard")
        if retry_mode not in ("standard", "adaptive"):
            raise InvalidTarget(
                f"invalid retry_mode {retry_mode!r} for {self.target.url}; "
                "expected standard or adaptive"
            )

        options.setdefault("max_attempts", 10)
        options.setdefault("workers", DEFAULT_WORKERS)
        options.setdefault("verify_sample", 10)
        inspect = options.setdefault("inspect_versions", "sample")
        if not (inspect is True or inspect is False or inspect == "sample"):
            raise InvalidTarget(
                f"invalid inspect_versions {inspect!r} for {self.target.url}; "
                "expected sample, true or false"
            )
        return options

    @property
    def whole_bucket(self) -> bool:
        return not self.prefix

    # -- clients and errors -----------------------------------------------

    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = self._make_client("s3", self.options.get("endpoint_url"))
        return self._s3

    def _kms_client(self) -> Any:
        if self._kms is None:
            endpoint = self.options.get("kms_endpoint_url") or self.options.get(
                "endpoint_url"
            )
            self._kms = self._make_client("kms", endpoint)
        return self._kms

    def _make_client(self, service: str, endpoint_url: str | None) -> Any:
        try:
            import boto3
            import botocore.session
            from botocore.config import Config
        except ImportError as exc:
            raise MissingDependency(MISSING_BOTO3) from exc
        config = Config(
            retries={
                "mode": self.options["retry_mode"],
                "total_max_attempts": self.options["max_attempts"],
            },
            max_pool_connections=self.options["workers"] * 2 + 2,
        )
        with self._translated(f"creating the {service} client"):
            core = botocore.session.get_session()
            parsers = core.get_component("response_parser_factory")
            parsers.set_parser_defaults(timestamp_parser=_parse_timestamp)
            session = boto3.session.Session(botocore_session=core)
            return session.client(
                service,
                endpoint_url=endpoint_url or None,
                region_name=self.options.get("region") or None,
                config=config,
            )

    def _endpoint(self) -> str:
        if self._s3 is not None:
            return self._s3.meta.endpoint_url
        return self.options.get("endpoint_url") or "the default S3 endpoint"

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn botocore exceptions raised inside the block into plugin errors."""
        try:
            yield
        except PluginError:
            raise
        except Exception as exc:
            error = self._translate(exc, action)
            if error is None:
                raise
            self.log.debug("s3_error", action=action, exc_info=True)
            raise error from exc

    def _translate(self, exc: Exception, action: str) -> PluginError | None:
        try:
            from botocore import exceptions as bce
        except ImportError:
            # Without botocore no SDK error can have been raised.
            return None

        bucket = self.bucket
        if isinstance(exc, bce.ClientError):
            return self._translate_client_error(exc, action)
        if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
            return AccessDenied(
                f"no AWS credentials found for {action} on bucket {bucket!r}; configure "
                "a profile, environment variables or an instance role"
            )
        if isinstance(
            exc,
            bce.EndpointConnectionError
            | bce.ConnectTimeoutError
            | bce.ReadTimeoutError
            | bce.ConnectionClosedError
            | bce.ProxyConnectionError,
        ):
            return TargetUnreachable(
                f"cannot reach the S3 endpoint {self._endpoint()} while {action} for "
                f"bucket {bucket!r}; check endpoint_url, AWS_ENDPOINT_URL_S3, the "
                "region and the network, then run the command again"
            )
        if isinstance(exc, bce.BotoCoreError):
            return PurgeFailed(
                f"S3 client error while {action} for bucket {bucket!r}: {exc}"
            )
        return None

    def _translate_client_error(self, exc: Any, action: str) -> PluginError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        bucket = self.bucket
        if code == "NoSuchBucket":
            return TargetNotFound(
                f"S3 bucket {bucket!r} does not exist at {self._endpoint()}; check the "
                f"bucket name in {self.target.url} and the endpoint_url or region"
            )
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301") or (
            status == 301
        ):
            region = (
                headers.get("x-amz-bucket-region") or error.get("Region") or "another"
            )
            return InvalidTarget(
                f"S3 bucket {bucket!r} is in the {region} region, not the one the client "
                f"used; set 'region: {region}' under the target {self.target.url}"
            )
        if code in (
            "AccessDenied",
            "403",
            "AllAccessDisabled",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
        ):
            return AccessDenied(
                f"S3 denied {action} on bucket {bucket!r} ({code}); grant the "
                f"credentials that permission on arn:aws:s3:::{bucket} or use a "
                "profile that has it, then run the command again"
            )
        return PurgeFailed(
            f"S3 request failed while {action} for bucket {bucket!r}: {code}: "
            f"{error.get('Message', '')}"
        )

    @staticmethod
    def _error_code(exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.options["workers"], thread_name_prefix="lethe-s3"
            )
        return self._pool

    # -- describe -----------------------------------------------------------

    def describe(self) -> TargetInfo:
        if self._deleted_by_this_job():
            media = {
                "media_type": "object storage (Amazon S3 API)",
                "bucket": self.bucket,
                "prefix": self.prefix,
                "server": self._endpoint(),
                "bucket_deleted": True,
            }
            note = (
                f"the bucket {self.bucket!r} was deleted by an earlier run of this job"
            )
            return TargetInfo(media=media, notes=(note,))
        facts = self._read_bucket_facts()
        counts = self._snapshot()
        self._load_plan()
        notes = [
            f"versioning: {facts['versioning']}",
            f"object lock: {'enabled' if facts['object_lock'] else 'not enabled'}",
            f"default encryption: {facts['default_encryption']}",
            (
                f"selected: versions {counts['versions']} ({counts['bytes']} bytes), "
                f"delete markers {counts['markers']}, incomplete multipart uploads "
                f"{counts['uploads']}"
            ),
            self._inspection_note(counts["versions"]),
        ]

        notes.extend(f"lifecycle rule: {rule}" for rule in facts["lifecycle"])
        notes.extend(
            f"replication rule {rule['id']} copies to {rule['destination']}"
            for rule in facts["replication"]
        )
        notes.append(self._bucket_fate())
        if self._unreadable:
            notes.append(
                "could not read, so treated as not configured: "
                + "; ".join(self._unreadable)
            )
        if self.options["method"] == Method.LIFECYCLE.value:
            notes.append(
                "method lifecycle: Lethe installs expiration rules and S3 deletes "
                "asynchronously, usually within two days; 'lethe verify' reports the "
                "versions still present until the listing is empty"
            )

        residual = [
            f"replicas in {rule['destination']} (replication rule {rule['id']}) are "
            f"not purged; add s3://{rule['destination_bucket']}/{self.prefix} as "
            "its own target"
            for rule in facts["replication"]
        ]
        residual.append(
            "S3 server access logs, CloudTrail data events and S3 Inventory reports "
            "may name the purged keys; they are outside this target"
        )

        media = {
            "media_type": "object storage (Amazon S3 API)",
            "bucket": self.bucket,
            "prefix": self.prefix,
            "region": facts["region"],
            "server": self._endpoint(),
            "versioning": facts["versioning"],
            "object_lock": facts["object_lock"],
            "counts": counts,
            "replication_destinations": [
                r["destination"] for r in facts["replication"]
            ],
            "bucket_deleted": self._deletes_bucket(),
        }
        self.log.info("s3_described", **counts, versioning=facts["versioning"])
        return TargetInfo(media=media, notes=tuple(notes), residual=tuple(residual))

    def _deletes_bucket(self) -> bool:
        return self.whole_bucket and self.options.get("delete_bucket") is True

    def _bucket_fate(self) -> str:
        if self._deletes_bucket():
            return (
                f"the bucket {self.bucket!r} itself is deleted once it is empty "
                "(delete_bucket: true)"
            )
        if self.whole_bucket:
            return (
                f"the bucket {self.bucket!r} itself is kept, empty; set "
                "delete_bucket: true to delete it"
            )
        return f"the bucket {self.bucket!r} itself is kept; only the prefix is purged"

    # -- listing --------------------------------------------------------------

    # -- discover and plan ----------------------------------------------------

    def discover(self) -> Iterator[Item]:
        self._started = self._started or datetime.now(UTC)
        if not self._snapshot_ready:
            self._snapshot()
        mode = self._inspection()
        for page in self._snapshot_rows():
            unread = [
                entry
                for entry, detail in page
                if mode == "all" and entry.kind == "version" and detail is None
            ]
            heads = dict(
                zip(
                    (entry.item_key for entry in unread),
                    self._executor().map(self._inspect_version, unread),
                )
            )
            for entry, detail in page:
                yield self._make_item(entry, detail or heads.get(entry.item_key), mode)

    def _make_item(
        self, entry: _Entry, detail: Mapping[str, Any] | None, mode: str = "none"
    ) -> Item:
        identity: dict[str, Any] = {"key": entry.key, "id": entry.ident}
        if entry.etag:
            identity["etag"] = entry.etag
        if entry.modified:
            identity["modified"] = _iso(entry.modified)
        attributes: dict[str, Any] = {"bucket": self.bucket, "key": entry.key}
        if entry.kind == "version":
            attributes["is_latest"] = entry.is_latest
            attributes["storage_class"] = entry.storage_class
            # NOTE: a version the sample left unread gets no SSE-C residual in
            # its plan entry even when it is SSE-C; the describe note gives
            # how many versions were read.
            unread = "sample" if mode == "sample" else "false"
            attributes.update(
                detail or {"encryption": f"not read (inspect_versions: {unread})"}
            )
        noun = {"version": "version", "marker": "delete marker", "upload": "upload"}
        return Item(
            key=entry.item_key,
            kind=entry.kind,
            size=entry.size,
            identity=identity,
            attributes=attributes,
            label=f"s3://{self.bucket}/{entry.key} ({noun[entry.kind]} {entry.ident})",
        )

    def plan_item(self, item: Item) -> Decision:
        refusal = self._lock_refusal(item)
        if refusal is not None:
            self.log.warning("s3_refused", item=item.key, reason=refusal.reason)
            return Decision(refusal=refusal)
        params: dict[str, Any] = {}
        if item.attributes.get("lock_mode") == "GOVERNANCE":
            params["bypass_governance"] = True
        residual = self._item_residual(item)
        if self.options["method"] == Method.LIFECYCLE.value:
            return Decision(method=Method.LIFECYCLE, params=params, residual=residual)
        key_id = item.attributes.get("kms_key_id")
        if (
            self.options.get("purge_crypto") is True
            and key_id
            and self._kms_manager(key_id) == "CUSTOMER"
        ):
            params["kms_key_id"] = key_id
            self._crypto_keys.add(key_id)
            return Decision(
                method=Method.PURGE_CRYPTO, params=params, residual=residual
            )
        return Decision(
            method=Method.DELETE_ALL_VERSIONS, params=params, residual=residual
        )

    def _lock_refusal(self, item: Item) -> Refusal | None:
        attributes = item.attributes
        if attributes.get("legal_hold"):
            return Refusal(
                "legal-hold",
                "legal hold on this version; S3 refuses to delete it until the hold "
                "is removed",
            )
        mode = attributes.get("lock_mode")
        until_text = attributes.get("retain_until")
        if not mode or not until_text:
            return None
        until = datetime.fromisoformat(until_text)
        if until <= datetime.now(UTC):
            return None
        if mode == "COMPLIANCE":
            return Refusal(
                "object-lock",
                f"compliance-mode retention; blocked until {until.date().isoformat()}, "
                "and no credential can lift it earlier",
                blocked_until=until,
            )
        if self.options.get("bypass_governance") is True:
            return None
        return Refusal(
            "object-lock",
            f"governance-mode retention until {until.date().isoformat()}; set "
            "bypass_governance: true for the target to purge it (needs "
            "s3:BypassGovernanceRetention)",
            blocked_until=until,
        )

    def _item_residual(self, item: Item) -> tuple[str, ...]:
        encryption = item.attributes.get("encryption", "")
        if encryption.startswith("SSE-C"):
            residual = (
                "encrypted with a customer-provided key (SSE-C); the key is held by "
                "whoever wrote the object and is outside Lethe's reach"
            )
            return (residual,)
        return ()

    # -- purge ------------------------------------------------------------------

    # -- bookkeeping on disk -----------------------------------------------

    # -- complete: rescan, key shredding, bucket ----------------------------

    # -- lifecycle ----------------------------------------------------------------

    # -- verify -------------------------------------------------------------------

    def verify(self, batch: Sequence[PlannedItem]) -> Iterator[Evidence]:
        """Check each item against a fresh listing, and HEAD a sample of versions."""
        self._rescan_remaining()
        sample = self._sample(batch)
        heads = dict(
            zip(
                (entry.item.key for entry in sample),
                self._executor().map(self._head_gone, sample),
            )
        )
        db = self._db()
        for entry in batch:
            listed = (
                db.execute(
                    "SELECT 1 FROM remaining WHERE item = ?", (entry.item.key,)
                ).fetchone()
                is not None
            )
            checks = [Check("listing", not listed, self._listing_detail(entry, listed))]
            if heads.get(entry.item.key) is not None:
                checks.append(heads[entry.item.key])
            yield Evidence(entry.item.key, tuple(checks))

    def _listing_detail(self, entry: PlannedItem, listed: bool) -> str:
        if not listed:
            return "absent from a fresh listing of versions, markers and uploads"
        if entry.decision.method == Method.LIFECYCLE:
            return (
                "still listed; the lifecycle rule expires it when S3 next runs "
                "expiration (about daily); run 'lethe verify' again later"
            )
        return "still listed under the prefix after the purge"

    def _rescan_remaining(self) -> None:
        """Store every entry a fresh listing finds under the prefix, once per job."""
        if self._rescanned:
            return
        db = self._db()
        with db:
            db.execute("DELETE FROM remaining")
            try:
                for page in chunked(self._list_entries(), self.options["page_size"]):
                    db.executemany(
                        "INSERT OR IGNORE INTO remaining VALUES (?)",
                        ((entry.item_key,) for entry in page),
                    )
            except TargetNotFound:
                # S3 deletes only empty buckets, so a bucket that is gone
                # contains no version, marker or upload.
                if not self._deletes_bucket():
                    raise
                self.log.info("s3_bucket_absent", bucket=self.bucket)
        self._rescanned = True

    def _sample(self, batch: Sequence[PlannedItem]) -> list[PlannedItem]:
        versions = [entry for entry in batch if entry.item.kind == "version"]
        size = self.options["verify_sample"]
        if not versions or size <= 0:
            return []
        step = max(1, len(versions) // size)
        return versions[::step][:size]

    def _head_gone(self, entry: PlannedItem) -> Check | None:
        """HEAD a purged version; None when HEAD cannot tell (a noncurrent null version)."""
        ClientError = client_error()

        identity = entry.item.identity
        version = identity["id"]
        with self._translated("checking a purged version with HEAD"):
            try:
                head = self._head_version(identity["key"], version)
            except ClientError as exc:
                code = self._error_code(exc)
                if code in NOT_FOUND_CODES:
                    return Check("head", True, f"HEAD of version {version}: not found")
                if code == "405" and version == "null":
                    return None
                if code in ("400", "BadRequest"):
                    return self._listed_check(identity["key"], version)
                return Check("head", False, f"HEAD of version {version}: {code}")
        if head is None:
            return None
        return Check("head", False, f"HEAD of version {version}: still readable")

    def _listed_check(self, key: str, version: str) -> Check:
        """Check a version whose HEAD returned 400 by listing the versions of its key.

        S3 returns 400 to HEAD on an SSE-C version without its customer key,
        and moto returns 400 for a deleted version in a suspended bucket.
        """
        listed = False
        for page in self._version_pages(prefix=key):
            listed = any(e.key == key and e.ident == version for e in page)
            if listed:
                break
        state = "still listed" if listed else "not listed"
        detail = f"HEAD of version {version}: 400; a listing of its key: {state}"
        return Check("head", not listed, detail)

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._state is not None:
            self._state.close()
            self._state = None
        if self._state_dir is not None:
            self._state_dir.cleanup()
            self._state_dir = None
        for client in (self._s3, self._kms):
            if client is not None:
                client.close()
        self._s3 = self._kms = None

    @classmethod
    def capabilities(cls) -> Mapping[str, Any]:
        capabilities = dict(super().capabilities())
        capabilities["options"] = sorted(ALLOWED_OPTIONS)
        return capabilities
