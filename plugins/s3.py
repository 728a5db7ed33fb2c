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
import json
import os
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
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

#: Most keys S3 accepts in one DeleteObjects request.
DELETE_REQUEST_LIMIT = 1000
#: Concurrent DeleteObjects requests per purge batch.
DEFAULT_WORKERS = 4
#: Versions per listing page that ``inspect_versions: sample`` reads with HEAD.
INSPECT_SAMPLE = 10
#: Rounds of "list from scratch, delete what is left" before giving up.
MAX_SWEEP_ROUNDS = 10
#: Error codes inside a DeleteObjects reply that are worth another attempt.
RETRYABLE_CODES = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}
)
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NoSuchUpload"})
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
LIFECYCLE_RULE_PREFIX = "lethe-expire-"


def _xml_safe(key: str) -> bool:
    """Return whether a key survives the XML body of a DeleteObjects request.

    XML 1.0 cannot carry most control characters, and XML parsers turn a
    carriage return into a line feed, so such keys go through DeleteObject,
    which carries the key in the URL path. Tab and line feed pass intact.
    """
    for char in key:
        code = ord(char)
        if char in "\t\n":
            continue
        if code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF:
            return False
        if code in (0xFFFE, 0xFFFF):
            return False
    return True


def _parse_timestamp(value: Any) -> datetime:
    """Parse a timestamp of a botocore response.

    botocore's default parser goes through dateutil, which took about half
    of the client CPU time spent parsing listing pages in a profile. S3
    writes listing times as ISO 8601 with a zone, which
    ``datetime.fromisoformat`` reads directly.
    Other forms (HTTP dates in headers, epoch numbers from KMS) go to
    botocore's parser.
    """
    if isinstance(value, str) and "T" in value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


@dataclass(frozen=True)
class _Entry:
    """One listed version, delete marker or upload, before it becomes an Item."""

    kind: str
    key: str
    ident: str
    size: int = 0
    etag: str = ""
    modified: datetime | None = None
    is_latest: bool = False
    storage_class: str = ""

    @property
    def item_key(self) -> str:
        # The identifier comes first because S3 version and upload ids never
        # contain a colon, while object keys may.
        return f"{self.kind}:{self.ident}:{self.key}"


def _split_item_key(item_key: str) -> tuple[str, str, str]:
    kind, ident, key = item_key.split(":", 2)
    return kind, ident, key


class S3Plugin(Plugin):
    """Purge every version, delete marker and multipart upload under an S3 prefix."""

    name = "s3"
    schemes = ("s3",)
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
        self._crypto_keys: set[str] = set()
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
            raise MissingDependency(
                "the S3 plugin needs boto3; install it with: pip install 'lethe[s3]'"
            ) from exc
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
        from botocore import exceptions as bce

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
        facts = self._read_bucket_facts()
        counts = self._snapshot()
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

    def _read_bucket_facts(self) -> dict[str, Any]:
        if self._bucket_facts is not None:
            return self._bucket_facts
        client = self._client()
        bucket = self.bucket
        with self._translated("reading the bucket versioning state"):
            status = client.get_bucket_versioning(Bucket=bucket).get("Status")
        versioning = {"Enabled": "enabled", "Suspended": "suspended"}.get(
            status, "never enabled"
        )

        facts: dict[str, Any] = {"versioning": versioning}
        facts["region"] = self._optional(
            lambda: (
                client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
                or "us-east-1"
            ),
            "reading the bucket region",
            default="unknown",
        )

        lock = self._optional(
            lambda: client.get_object_lock_configuration(Bucket=bucket),
            "reading the Object Lock configuration",
            absent=("ObjectLockConfigurationNotFoundError",),
        )
        facts["object_lock"] = bool(
            lock
            and lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
            == "Enabled"
        )

        facts["replication"] = self._replication_rules()
        facts["lifecycle"] = self._lifecycle_summaries()
        facts["default_encryption"] = self._default_encryption()
        self._bucket_facts = facts
        return facts

    def _optional(
        self,
        call: Any,
        action: str,
        absent: tuple[str, ...] = (),
        default: Any = None,
    ) -> Any:
        """Run a read call; return ``default`` when S3 reports it as not configured."""
        from botocore.exceptions import ClientError

        try:
            with self._translated(action):
                try:
                    return call()
                except ClientError as exc:
                    if self._error_code(exc) in absent:
                        return default
                    raise
        except PurgeFailed:
            # S3-compatible stores often lack these sub-resources and return
            # NotImplemented, so the plan lists the read as failed.
            self.log.warning("s3_read_failed", action=action)
            self._unreadable.append(action)
            return default

    def _replication_rules(self) -> list[dict[str, str]]:
        config = self._optional(
            lambda: self._client().get_bucket_replication(Bucket=self.bucket),
            "reading the replication configuration",
            absent=("ReplicationConfigurationNotFoundError",),
        )
        rules = []
        for rule in (config or {}).get("ReplicationConfiguration", {}).get("Rules", []):
            destination = rule.get("Destination", {}).get("Bucket", "")
            rules.append(
                {
                    "id": rule.get("ID", "(no id)"),
                    "destination": destination,
                    "destination_bucket": destination.rsplit(":", 1)[-1],
                }
            )
        return rules

    def _lifecycle_summaries(self) -> list[str]:
        config = self._optional(
            lambda: self._client().get_bucket_lifecycle_configuration(
                Bucket=self.bucket
            ),
            "reading the lifecycle configuration",
            absent=("NoSuchLifecycleConfiguration",),
        )
        summaries = []
        for rule in (config or {}).get("Rules", []):
            actions = [
                name
                for name in (
                    "Expiration",
                    "NoncurrentVersionExpiration",
                    "Transitions",
                    "NoncurrentVersionTransitions",
                    "AbortIncompleteMultipartUpload",
                )
                if name in rule
            ]
            summaries.append(
                f"{rule.get('ID', '(no id)')} ({rule.get('Status')}): {', '.join(actions)}"
            )
        return summaries

    def _default_encryption(self) -> str:
        config = self._optional(
            lambda: self._client().get_bucket_encryption(Bucket=self.bucket),
            "reading the default encryption",
            absent=("ServerSideEncryptionConfigurationNotFoundError",),
        )
        rules = (
            (config or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        )
        if not rules:
            return "none configured"
        default = rules[0].get("ApplyServerSideEncryptionByDefault", {})
        return _encryption_name(
            default.get("SSEAlgorithm"), default.get("KMSMasterKeyID")
        )

    def _snapshot(self) -> dict[str, int]:
        """List the prefix once into the scratch database and count what is there.

        :meth:`discover` then streams from this snapshot instead of listing
        again, so planning costs one listing, and the plan shows the same
        entries that the counts describe.
        """
        counts = {"versions": 0, "markers": 0, "uploads": 0, "bytes": 0}
        sample = self._inspection() == "sample"
        self._sampled.clear()
        db = self._db()
        with db:
            db.execute("DELETE FROM listing")
            for page in chunked(self._list_entries(), self.options["page_size"]):
                details = self._sample_page(page) if sample else {}
                db.executemany(
                    "INSERT INTO listing (kind, key, ident, size, etag, modified,"
                    " is_latest, storage_class, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        (
                            e.kind,
                            e.key,
                            e.ident,
                            e.size,
                            e.etag,
                            _iso(e.modified),
                            int(e.is_latest),
                            e.storage_class,
                            details.get(e.item_key),
                        )
                        for e in page
                    ),
                )
                for entry in page:
                    counts[f"{entry.kind}s"] += 1
                    counts["bytes"] += entry.size
        self._snapshot_ready = True
        return counts

    def _sample_page(self, page: Sequence[_Entry]) -> dict[str, str]:
        """HEAD up to ``INSPECT_SAMPLE`` versions spread over a listing page.

        Returns the JSON text of each read version's details by item key, and
        counts the encryption found in ``self._sampled``.
        """
        versions = [entry for entry in page if entry.kind == "version"]
        step = max(1, -(-len(versions) // INSPECT_SAMPLE))
        sample = versions[::step]
        details = {}
        for entry, head in zip(sample, self._executor().map(self._inspect_version, sample)):
            details[entry.item_key] = json.dumps(head)
            self._sampled[head["encryption"]] += 1
        return details

    def _inspection(self) -> str:
        """Return how planning reads versions with HEAD: all, sample or none."""
        facts = self._read_bucket_facts()
        if (
            self.options["inspect_versions"] is True
            or facts["object_lock"]
            or self.options.get("purge_crypto") is True
            or self._sample_mixed()
        ):
            return "all"
        return "sample" if self.options["inspect_versions"] == "sample" else "none"

    def _sample_mixed(self) -> bool:
        """Return whether the sample leaves the other versions' encryption open.

        That is the case when it found more than one encryption, or SSE-C,
        whose key lies outside S3. Versions HEAD could not read do not count.
        """
        known = [name for name in self._sampled if not name.startswith("unknown")]
        return len(known) > 1 or any(name.startswith("SSE-C") for name in known)

    def _inspection_note(self, versions: int) -> str:
        mode = self._inspection()
        read = "encryption, retention and legal hold of versions"
        if mode == "none":
            return f"{read}: not read (inspect_versions: false)"
        if mode == "sample":
            found = ", ".join(f"{n} {c}" for n, c in sorted(self._sampled.items()))
            return (
                f"{read}: read with HEAD on a sample of {sum(self._sampled.values())} "
                f"of {versions} versions ({found or 'none read'}); the other versions "
                "were not read; set inspect_versions: true to read each one"
            )
        if self._sample_mixed():
            return (
                f"{read}: read with HEAD for every version, because a sample found "
                "more than one encryption or SSE-C"
            )
        return f"{read}: read with HEAD for every version"

    def _snapshot_pages(self) -> Iterator[list[_Entry]]:
        """Stream the snapshot taken by :meth:`_snapshot`, a page at a time."""
        for page in self._snapshot_rows():
            yield [entry for entry, _ in page]

    def _snapshot_rows(self) -> Iterator[list[tuple[_Entry, dict[str, Any] | None]]]:
        """Stream the snapshot a page at a time, each entry with its sampled details.

        The details are those a sample HEAD read, or None.
        """
        db = self._db()
        last = 0
        while True:
            rows = db.execute(
                "SELECT seq, kind, key, ident, size, etag, modified, is_latest,"
                " storage_class, detail FROM listing WHERE seq > ? ORDER BY seq"
                " LIMIT ?",
                (last, self.options["page_size"]),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [
                (
                    _Entry(
                        kind=row[1],
                        key=row[2],
                        ident=row[3],
                        size=row[4],
                        etag=row[5],
                        modified=datetime.fromisoformat(row[6]) if row[6] else None,
                        is_latest=bool(row[7]),
                        storage_class=row[8],
                    ),
                    json.loads(row[9]) if row[9] else None,
                )
                for row in rows
            ]

    # -- listing --------------------------------------------------------------

    def _list_entries(self, uploads: bool = True) -> Iterator[_Entry]:
        """Stream every version, marker and upload under the prefix, page by page."""
        for page in self._version_pages():
            yield from page
        if uploads:
            yield from self._list_uploads()

    def _version_pages(self, prefix: str | None = None) -> Iterator[list[_Entry]]:
        client = self._client()
        paginator = client.get_paginator("list_object_versions")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=self.prefix if prefix is None else prefix,
            PaginationConfig={"PageSize": self.options["page_size"]},
        )
        iterator = iter(pages)
        while True:
            with self._translated("listing object versions"):
                page = next(iterator, None)
            if page is None:
                return
            yield _page_entries(page)

    def _list_uploads(self) -> Iterator[_Entry]:
        paginator = self._client().get_paginator("list_multipart_uploads")
        pages = iter(
            paginator.paginate(
                Bucket=self.bucket,
                Prefix=self.prefix,
                PaginationConfig={"PageSize": self.options["page_size"]},
            )
        )
        while True:
            with self._translated("listing multipart uploads"):
                page = next(pages, None)
            if page is None:
                return
            for upload in page.get("Uploads", []):
                yield _Entry(
                    kind="upload",
                    key=upload["Key"],
                    ident=upload["UploadId"],
                    modified=upload.get("Initiated"),
                )

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

    def _inspect_version(self, entry: _Entry) -> dict[str, Any]:
        """Read a version's encryption, retention and legal hold with HEAD."""
        from botocore.exceptions import ClientError

        try:
            with self._translated(f"reading version {entry.ident} of a key"):
                try:
                    head = self._head_version(entry.key, entry.ident)
                except ClientError as exc:
                    # S3 returns 400 to a HEAD without the customer key of an
                    # SSE-C object. Other errors are translated.
                    if self._error_code(exc) in ("400", "BadRequest"):
                        return {"encryption": "SSE-C (HEAD needs the customer key)"}
                    if self._error_code(exc) in NOT_FOUND_CODES:
                        return {"encryption": "unknown", "gone": True}
                    raise
        except PurgeFailed:
            return {"encryption": "unknown"}
        if head is None:
            return {"encryption": "unknown (null version is not the current object)"}
        detail: dict[str, Any] = {
            "encryption": _encryption_name(
                head.get("ServerSideEncryption"),
                head.get("SSEKMSKeyId"),
                head.get("SSECustomerAlgorithm"),
            )
        }
        if head.get("SSEKMSKeyId"):
            detail["kms_key_id"] = head["SSEKMSKeyId"]
        if head.get("ObjectLockMode"):
            detail["lock_mode"] = head["ObjectLockMode"]
            detail["retain_until"] = _iso(head.get("ObjectLockRetainUntilDate"))
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            detail["legal_hold"] = True
        return detail

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

    def _kms_manager(self, key_id: str) -> str:
        """Return KeyManager (CUSTOMER or AWS) of a KMS key, cached per key."""
        if key_id not in self._kms_managers:
            with self._translated(f"describing KMS key {key_id}"):
                metadata = self._kms_client().describe_key(KeyId=key_id)["KeyMetadata"]
            self._kms_managers[key_id] = metadata.get("KeyManager", "AWS")
        return self._kms_managers[key_id]

    # -- purge ------------------------------------------------------------------

    def purge(self, batch: Sequence[PlannedItem]) -> Iterator[PurgeResult]:
        """Delete each permitted item; see :class:`plugins.base.Plugin`.

        Results stream as each DeleteObjects request returns. When the job is
        stopping, requests not yet sent are skipped and their items get no
        result, so a resume sends them.
        """
        self._started = self._started or datetime.now(UTC)
        permitted = [entry for entry in batch if entry.decision.permitted]
        lifecycle = [e for e in permitted if e.decision.method == Method.LIFECYCLE]
        if lifecycle:
            yield from self._install_lifecycle(lifecycle)
        deletes = [e for e in permitted if e.decision.method != Method.LIFECYCLE]
        if not deletes:
            return
        pool = self._executor()
        futures: list[Future] = []
        for work in self._plan_requests(deletes):
            if self.context.should_stop():
                self.log.info("s3_purge_stopping", pending=len(work[1]))
                break
            futures.append(pool.submit(*work))
        for future in as_completed(futures):
            results = future.result()
            self._record_purges(results)
            for result in results:
                if result.status == "purged":
                    self.context.progress(result.bytes)
                yield result

    def _plan_requests(
        self, deletes: Sequence[PlannedItem]
    ) -> Iterator[tuple[Any, list[PlannedItem]]]:
        """Group a batch into DeleteObjects requests, single deletes and aborts."""
        grouped: dict[bool, list[PlannedItem]] = {False: [], True: []}
        for entry in deletes:
            kind = entry.item.kind
            if kind == "upload":
                yield (self._abort_uploads, [entry])
            elif not _xml_safe(entry.item.identity["key"]):
                yield (self._delete_singly, [entry])
            else:
                bypass = bool(entry.decision.params.get("bypass_governance"))
                grouped[bypass].append(entry)
        for bypass, entries in grouped.items():
            worker = self._delete_bypassing if bypass else self._delete_batch
            for chunk in chunked(entries, DELETE_REQUEST_LIMIT):
                yield (worker, chunk)

    def _delete_bypassing(self, chunk: list[PlannedItem]) -> list[PurgeResult]:
        return self._delete_batch(chunk, bypass=True)

    def _delete_batch(
        self, chunk: list[PlannedItem], bypass: bool = False
    ) -> list[PurgeResult]:
        """Send one DeleteObjects request, retrying items S3 reports as throttled."""
        changed, chunk = self._split_changed(chunk)
        results = list(changed)
        for attempt in range(4):
            if not chunk:
                break
            try:
                errors = self._send_delete_objects(chunk, bypass)
            except PurgeFailed as exc:
                # The request failed as a whole after boto3's retries; its
                # items stay in place and a re-run sends them again.
                self.log.error(
                    "s3_delete_request_failed", error=str(exc), items=len(chunk)
                )
                results.extend(
                    PurgeResult(e.item.key, "failed", detail=str(exc)) for e in chunk
                )
                return results
            retry = []
            for entry in chunk:
                error = self._match_error(entry, chunk, errors)
                if error and error.get("Code") in RETRYABLE_CODES and attempt < 3:
                    retry.append(entry)
                else:
                    results.append(self._delete_result(entry, error))
            chunk = retry
            if chunk:
                time.sleep(0.2 * 2**attempt)
        return results

    def _send_delete_objects(
        self, chunk: list[PlannedItem], bypass: bool
    ) -> list[dict[str, Any]]:
        objects = [
            {"Key": e.item.identity["key"], "VersionId": e.item.identity["id"]}
            for e in chunk
        ]
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Delete": {"Objects": objects, "Quiet": True},
        }
        if bypass:
            request["BypassGovernanceRetention"] = True
        with self._translated("deleting object versions (DeleteObjects)"):
            reply = self._client().delete_objects(**request)
        return reply.get("Errors", [])

    def _match_error(
        self,
        entry: PlannedItem,
        chunk: list[PlannedItem],
        errors: list[dict[str, Any]],
    ) -> dict[str, Any] | None:
        """Find the DeleteObjects error for one item, if any.

        Some S3-compatible servers (moto among them) leave VersionId out of the
        error entries. An error naming only the key then applies to the item
        when no other version of that key is in the request. Otherwise a HEAD
        decides.
        """
        key = entry.item.identity["key"]
        version = entry.item.identity["id"]
        for error in errors:
            if error.get("Key") != key:
                continue
            if error.get("VersionId") == version:
                return error
            if error.get("VersionId") is None:
                siblings = sum(1 for e in chunk if e.item.identity["key"] == key)
                if siblings == 1 or self._still_present(entry):
                    return error
        return None

    def _still_present(self, entry: PlannedItem) -> bool:
        from botocore.exceptions import ClientError

        with self._translated("checking a version after DeleteObjects"):
            try:
                self._head_version(
                    entry.item.identity["key"], entry.item.identity["id"]
                )
            except ClientError as exc:
                if self._error_code(exc) in NOT_FOUND_CODES:
                    return False
                if self._error_code(exc) == "405":  # a delete marker still there
                    return True
                raise
        return True

    def _delete_result(
        self, entry: PlannedItem, error: Mapping[str, Any] | None
    ) -> PurgeResult:
        item = entry.item
        method = entry.decision.method
        if error is None:
            return PurgeResult(
                item.key,
                "purged",
                bytes=item.size,
                method=method,
                facts=self._facts(entry),
            )
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        if code == "AccessDenied" and "lock" in message.lower():
            refusal = Refusal("object-lock", f"S3 refused the delete: {message}")
            return PurgeResult(item.key, "blocked", detail=message, refusal=refusal)
        return PurgeResult(
            item.key,
            "failed",
            detail=f"S3 did not delete this version: {code}: {message}; it is still "
            "present, run the purge again",
        )

    def _facts(self, entry: PlannedItem) -> dict[str, Any]:
        facts: dict[str, Any] = {"kind": entry.item.kind}
        for name in ("encryption", "kms_key_id"):
            if name in entry.item.attributes:
                facts[name] = entry.item.attributes[name]
        return facts

    def _split_changed(
        self, chunk: list[PlannedItem]
    ) -> tuple[list[PurgeResult], list[PlannedItem]]:
        """Separate items whose identity no longer matches the plan.

        A version id names immutable content, so only ``null`` versions can be
        overwritten in place. Those come from buckets that were never versioned
        or are suspended, and a HEAD compares their ETag with the plan's.
        """
        changed: list[PurgeResult] = []
        unchanged: list[PlannedItem] = []
        for entry in chunk:
            identity = entry.item.identity
            if entry.item.kind != "version" or identity["id"] != "null":
                unchanged.append(entry)
                continue
            etag = self._current_etag(identity["key"])
            if etag is not None and etag != identity.get("etag"):
                changed.append(
                    PurgeResult(
                        entry.item.key,
                        "failed",
                        detail="the object was overwritten after planning (ETag "
                        "differs); plan again to include the new content",
                    )
                )
            else:
                unchanged.append(entry)
        return changed, unchanged

    def _head_version(self, key: str, version_id: str) -> dict[str, Any] | None:
        """Send HEAD for one version; None when the reply is about another version.

        NOTE: moto returns 400 to HEAD with versionId=null, which S3 accepts.
        The null version is therefore read as the current object, and the
        reply counts only when the current object is that null version.
        """
        client = self._client()
        if version_id != "null":
            return client.head_object(Bucket=self.bucket, Key=key, VersionId=version_id)
        head = client.head_object(Bucket=self.bucket, Key=key)
        if head.get("VersionId") not in (None, "null"):
            return None
        return head

    def _current_etag(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        with self._translated("checking an unversioned object before deleting it"):
            try:
                head = self._head_version(key, "null")
            except ClientError as exc:
                if self._error_code(exc) in NOT_FOUND_CODES | {"405"}:
                    return None
                raise
        return head.get("ETag") if head else None

    def _delete_singly(self, chunk: list[PlannedItem]) -> list[PurgeResult]:
        """Delete items whose keys XML cannot carry, one DeleteObject each."""
        from botocore.exceptions import ClientError

        changed, chunk = self._split_changed(chunk)
        results = list(changed)
        for entry in chunk:
            request: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": entry.item.identity["key"],
                "VersionId": entry.item.identity["id"],
            }
            if entry.decision.params.get("bypass_governance"):
                request["BypassGovernanceRetention"] = True
            with self._translated("deleting an object version (DeleteObject)"):
                try:
                    self._client().delete_object(**request)
                    error = None
                except ClientError as exc:
                    locked = self._read_bucket_facts()["object_lock"]
                    if self._error_code(exc) != "AccessDenied" or not locked:
                        raise
                    error = {
                        "Code": "AccessDenied",
                        "Message": "protected by object lock",
                    }
            results.append(self._delete_result(entry, error))
        return results

    def _abort_uploads(self, chunk: list[PlannedItem]) -> list[PurgeResult]:
        from botocore.exceptions import ClientError

        results = []
        for entry in chunk:
            identity = entry.item.identity
            detail = ""
            with self._translated("aborting a multipart upload"):
                try:
                    self._client().abort_multipart_upload(
                        Bucket=self.bucket, Key=identity["key"], UploadId=identity["id"]
                    )
                except ClientError as exc:
                    if self._error_code(exc) != "NoSuchUpload":
                        raise
                    detail = "already aborted or completed since planning"
            results.append(
                PurgeResult(
                    entry.item.key,
                    "purged",
                    detail=detail,
                    method=entry.decision.method,
                    facts={"kind": "upload"},
                )
            )
        return results

    # -- bookkeeping on disk -----------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """Return the job's scratch database of purged and remaining items.

        It lives in a temporary file, so memory stays flat however many items
        the job purges; it is removed in :meth:`close`.
        """
        if self._state is None:
            self._state_dir = tempfile.TemporaryDirectory(prefix="lethe-s3-")
            path = os.path.join(self._state_dir.name, "state.sqlite")
            self._state = sqlite3.connect(path)
            self._state.executescript(
                "PRAGMA synchronous = OFF; PRAGMA journal_mode = MEMORY;"
                "CREATE TABLE purged (item TEXT PRIMARY KEY, method TEXT, kms TEXT);"
                "CREATE TABLE remaining (item TEXT PRIMARY KEY);"
                "CREATE TABLE listing (seq INTEGER PRIMARY KEY, kind TEXT, key TEXT,"
                " ident TEXT, size INTEGER, etag TEXT, modified TEXT,"
                " is_latest INTEGER, storage_class TEXT, detail TEXT);"
            )
        return self._state

    def _record_purges(self, results: Iterable[PurgeResult]) -> None:
        """Remember deleted items so the sweep after the purge can find leftovers."""
        rows = []
        for result in results:
            if result.status != "purged" or result.method == Method.LIFECYCLE:
                continue
            kms = None
            if result.method == Method.PURGE_CRYPTO:
                kms = result.facts.get("kms_key_id")
                self._crypto_keys.add(kms)
            method = result.method.value if result.method else ""
            rows.append((result.key, method, kms))
        if not rows:
            return
        self._deleted_any = True
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO purged VALUES (?, ?, ?)", rows)

    def _was_purged(self, item_key: str) -> bool:
        row = self._db().execute("SELECT 1 FROM purged WHERE item = ?", (item_key,))
        return row.fetchone() is not None

    # -- complete: rescan, key shredding, bucket ----------------------------

    def complete(self) -> Iterator[PurgeResult]:
        if not self._deleted_any:
            return
        yield self._sweep()
        for key_id in sorted(self._crypto_keys):
            yield self._shred_key(key_id)
        if self._deletes_bucket():
            yield self._delete_bucket()

    def _sweep(self) -> PurgeResult:
        """List from scratch and delete purged items that are still listed.

        The listing restarts after every delete instead of following its page
        marker, because a marker that names a deleted version can make S3 (and
        emulators) skip or repeat entries. Entries the job did not purge
        (refused, held, or written after planning) are counted, never deleted.
        """
        redeleted = 0
        for round_number in range(1, MAX_SWEEP_ROUNDS + 1):
            leftovers: list[_Entry] = []
            others = 0
            for entry in self._list_entries():
                if self._was_purged(entry.item_key):
                    leftovers.append(entry)
                    if len(leftovers) >= DELETE_REQUEST_LIMIT:
                        break
                else:
                    others += 1
            if not leftovers:
                self.log.info("s3_sweep_done", rounds=round_number, redeleted=redeleted)
                return PurgeResult(
                    "rescan",
                    "purged",
                    detail=f"listing under the prefix holds no purged item after "
                    f"{round_number} round(s); {others} entries were not selected "
                    "(refused, held or written after planning)",
                    facts={
                        "rounds": round_number,
                        "redeleted": redeleted,
                        "not_selected": others,
                    },
                )
            self.log.warning(
                "s3_sweep_leftovers", count=len(leftovers), round=round_number
            )
            redeleted += len(leftovers)
            self._redelete(leftovers)
        return PurgeResult(
            "rescan",
            "failed",
            detail=f"purged items were still listed after {MAX_SWEEP_ROUNDS} rounds of "
            "deleting; run the purge again",
            facts={"redeleted": redeleted},
        )

    def _redelete(self, leftovers: list[_Entry]) -> None:
        entries = [
            PlannedItem(
                Item(
                    key=e.item_key, kind=e.kind, identity={"key": e.key, "id": e.ident}
                ),
                self._purged_decision(e.item_key),
            )
            for e in leftovers
        ]
        for worker, chunk in self._plan_requests(entries):
            worker(chunk)

    def _purged_decision(self, item_key: str) -> Decision:
        row = (
            self._db()
            .execute("SELECT method FROM purged WHERE item = ?", (item_key,))
            .fetchone()
        )
        method = Method(row[0]) if row and row[0] else Method.DELETE_ALL_VERSIONS
        return Decision(
            method=method,
            params={"bypass_governance": self.options.get("bypass_governance") is True},
        )

    def _shred_key(self, key_id: str) -> PurgeResult:
        """Schedule deletion of a KMS key once nothing kept under the prefix uses it."""
        step = f"purge-crypto:{key_id}"
        users = self._remaining_users_of(key_id)
        if users:
            refusal = Refusal(
                "in-use",
                f"KMS key {key_id} still encrypts {users} version(s) under the prefix "
                "that the job keeps; deleting it would destroy them too",
            )
            return PurgeResult(step, "blocked", detail=refusal.detail, refusal=refusal)
        pending = self.options["kms_pending_days"]
        with self._translated(f"scheduling deletion of KMS key {key_id}"):
            reply = self._kms_client().schedule_key_deletion(
                KeyId=key_id, PendingWindowInDays=pending
            )
        deletion = reply.get("DeletionDate")
        when = _iso(deletion) or "unknown"
        self.log.info("s3_kms_key_scheduled", key_id=key_id, deletion_date=when)
        return PurgeResult(
            step,
            "purged",
            method=Method.PURGE_CRYPTO,
            detail=f"KMS key {key_id} is scheduled for deletion on {when}; "
            "crypto-shredding completes only then, and until then CancelKeyDeletion "
            "can restore the key",
            facts={
                "kms_key_id": key_id,
                "deletion_date": when,
                "pending_window_days": pending,
                "crypto_shredding_complete": False,
            },
        )

    def _remaining_users_of(self, key_id: str) -> int:
        users = 0
        for page in self._version_pages():
            versions = [entry for entry in page if entry.kind == "version"]
            for head in self._executor().map(self._inspect_version, versions):
                if (
                    head.get("kms_key_id") == key_id
                    or head.get("encryption") == "unknown"
                ):
                    users += 1
        return users

    def _delete_bucket(self) -> PurgeResult:
        """Delete the emptied bucket; S3 refuses while anything is left in it."""
        from botocore.exceptions import ClientError

        with self._translated("deleting the bucket"):
            try:
                self._client().delete_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if self._error_code(exc) != "BucketNotEmpty":
                    raise
                return PurgeResult(
                    "bucket",
                    "failed",
                    detail=f"bucket {self.bucket!r} was kept because it is not empty "
                    "(refused or held versions remain)",
                )
        self.log.info("s3_bucket_deleted", bucket=self.bucket)
        return PurgeResult("bucket", "purged", detail=f"bucket {self.bucket!r} deleted")

    # -- lifecycle ----------------------------------------------------------------

    def _install_lifecycle(self, entries: list[PlannedItem]) -> Iterator[PurgeResult]:
        if not self._lifecycle_rules:
            self._lifecycle_rules = self._put_lifecycle_rules()
        detail = (
            f"expiration rules {', '.join(self._lifecycle_rules)} installed; S3 "
            "deletes this entry asynchronously and 'lethe verify' confirms it"
        )
        for entry in entries:
            yield PurgeResult(
                entry.item.key,
                "purged",
                detail=detail,
                bytes=entry.item.size,
                method=Method.LIFECYCLE,
                facts={"rules": list(self._lifecycle_rules)},
            )

    def _put_lifecycle_rules(self) -> list[str]:
        """Add expiration rules for the prefix to the bucket's lifecycle configuration.

        PutBucketLifecycleConfiguration replaces the whole configuration, so the
        existing rules are read first and kept.
        """
        config = self._optional(
            lambda: self._client().get_bucket_lifecycle_configuration(
                Bucket=self.bucket
            ),
            "reading the lifecycle configuration",
            absent=("NoSuchLifecycleConfiguration",),
        )
        tag = self.context.job_id or uuid.uuid4().hex[:12]
        versions_rule = f"{LIFECYCLE_RULE_PREFIX}{tag}-versions"
        markers_rule = f"{LIFECYCLE_RULE_PREFIX}{tag}-markers"
        ours = {versions_rule, markers_rule}
        rules = [r for r in (config or {}).get("Rules", []) if r.get("ID") not in ours]
        prefix_filter = {"Prefix": self.prefix}
        rules.append(
            {
                "ID": versions_rule,
                "Status": "Enabled",
                "Filter": prefix_filter,
                "Expiration": {"Days": 1},
                "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            }
        )
        rules.append(
            {
                "ID": markers_rule,
                "Status": "Enabled",
                "Filter": prefix_filter,
                "Expiration": {"ExpiredObjectDeleteMarker": True},
            }
        )
        with self._translated("installing lifecycle expiration rules"):
            self._client().put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": rules}
            )
        self.log.info("s3_lifecycle_installed", rules=sorted(ours))
        return [versions_rule, markers_rule]

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
        from botocore.exceptions import ClientError

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


def _page_entries(page: Mapping[str, Any]) -> list[_Entry]:
    entries = [
        _Entry(
            kind="version",
            key=version["Key"],
            ident=version.get("VersionId") or "null",
            size=version.get("Size", 0),
            etag=version.get("ETag", ""),
            modified=version.get("LastModified"),
            is_latest=bool(version.get("IsLatest")),
            storage_class=version.get("StorageClass", ""),
        )
        for version in page.get("Versions", [])
    ]
    entries.extend(
        _Entry(
            kind="marker",
            key=marker["Key"],
            ident=marker.get("VersionId") or "null",
            modified=marker.get("LastModified"),
            is_latest=bool(marker.get("IsLatest")),
        )
        for marker in page.get("DeleteMarkers", [])
    )
    return entries


def _encryption_name(
    algorithm: str | None, kms_key: str | None = None, customer: str | None = None
) -> str:
    if customer:
        return "SSE-C"
    if algorithm == "AES256":
        return "SSE-S3"
    if algorithm in ("aws:kms", "aws:kms:dsse"):
        name = "DSSE-KMS" if algorithm == "aws:kms:dsse" else "SSE-KMS"
        return f"{name} ({kms_key})" if kms_key else name
    return "none"
