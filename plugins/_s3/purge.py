"""The S3 purge: DeleteObjects batches, single deletes, aborts, lifecycle rules.

The methods here belong to :class:`plugins.s3.S3Plugin`, which supplies the
client, the options, error translation and the thread pool they use.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, as_completed
from datetime import UTC, datetime
from typing import Any

from plugins._s3 import client_error
from plugins._s3.entries import (
    DELETE_REQUEST_LIMIT,
    LIFECYCLE_RULE_PREFIX,
    NOT_FOUND_CODES,
    RETRYABLE_CODES,
    _xml_safe,
)
from plugins.base import (
    Method,
    PlannedItem,
    PurgeResult,
    Refusal,
    chunked,
)
from plugins.errors import PurgeFailed


class PurgeMixin:
    """Delete planned items and record what was deleted."""

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
        self._save_plan()
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
        ClientError = client_error()

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

    def _current_etag(self, key: str) -> str | None:
        ClientError = client_error()

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
        ClientError = client_error()

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
        ClientError = client_error()

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

    def _record_purges(self, results: Iterable[PurgeResult]) -> None:
        """Remember deleted items so the sweep after the purge can find leftovers."""
        rows = []
        for result in results:
            if result.status != "purged" or result.method == Method.LIFECYCLE:
                continue
            kms = None
            if result.method == Method.PURGE_CRYPTO:
                kms = result.facts.get("kms_key_id")
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
