"""Steps after the S3 purge: the sweep, key shredding and bucket deletion.

The methods here belong to :class:`plugins.s3.S3Plugin`, which supplies the
client, the options, error translation and the thread pool they use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from plugins._s3 import client_error
from plugins._s3.entries import (
    DELETE_REQUEST_LIMIT,
    MAX_SWEEP_ROUNDS,
    _Entry,
    _iso,
)
from plugins.base import (
    Decision,
    Item,
    Method,
    PlannedItem,
    PurgeResult,
    Refusal,
)

#: Checkpoint saved before the first delete, with the plan's KMS keys.
PLAN_CHECKPOINT = "purge-plan"
#: Checkpoint saved before the job deletes the bucket itself.
BUCKET_CHECKPOINT = "delete-bucket"


class CompletionMixin:
    """Relist until no purged item is left, then shred keys and delete the bucket."""

    def complete(self) -> Iterator[PurgeResult]:
        # A resumed job rescans the items left in flight before it purges the
        # rest, so verification after the purge needs a listing of its own.
        self._rescanned = False
        if self._bucket_gone:
            # A resumed job whose earlier run finished these steps, the bucket's
            # deletion last, has nothing left to list.
            return
        # A resumed job may have deleted everything before the interruption,
        # so it runs these steps even when it deleted nothing itself.
        if not self._deleted_any and not self._resumed_purge:
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

    def _save_plan(self) -> None:
        """Record, before the first delete, that deleting began and which keys to shred.

        A resumed job cannot take the keys from a listing, because the
        versions deleted before the interruption are gone from it.
        """
        if self._plan_saved:
            return
        self.context.checkpoints.save(
            PLAN_CHECKPOINT, {"kms_keys": sorted(self._crypto_keys)}
        )
        self._plan_saved = True

    def _deleted_by_this_job(self) -> bool:
        """Tell whether an earlier run of this job deleted the bucket, now absent."""
        ClientError = client_error()

        if self.context.checkpoints.load(BUCKET_CHECKPOINT) is None:
            return False
        with self._translated("looking up the bucket"):
            try:
                self._client().head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if self._error_code(exc) not in ("404", "NoSuchBucket"):
                    raise
                self._bucket_gone = True
        return self._bucket_gone

    def _load_plan(self) -> None:
        """Take the KMS keys from the record of an earlier process of this job."""
        saved = self.context.checkpoints.load(PLAN_CHECKPOINT)
        if saved is None:
            return
        self._crypto_keys = set(saved["kms_keys"])
        self._plan_saved = True
        self._resumed_purge = True

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
        deletion, pending = self._schedule_deletion(key_id)
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

    def _schedule_deletion(self, key_id: str) -> tuple[Any, int]:
        """Schedule a key's deletion and return its deletion date and pending window.

        KMS rejects the request with KMSInvalidStateException when the key is
        already pending deletion, as after a resumed job's earlier run
        scheduled it. That key's own date and window are returned.
        """
        ClientError = client_error()

        pending = self.options["kms_pending_days"]
        client = self._kms_client()
        with self._translated(f"scheduling deletion of KMS key {key_id}"):
            try:
                reply = client.schedule_key_deletion(
                    KeyId=key_id, PendingWindowInDays=pending
                )
                return reply.get("DeletionDate"), pending
            except ClientError as exc:
                if self._error_code(exc) != "KMSInvalidStateException":
                    raise
                metadata = client.describe_key(KeyId=key_id)["KeyMetadata"]
                if metadata.get("KeyState") != "PendingDeletion":
                    raise
        window = metadata.get("PendingDeletionWindowInDays", pending)
        return metadata.get("DeletionDate"), window

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
        ClientError = client_error()

        # Saved first, so a resumed job can tell this deletion from a missing bucket.
        self.context.checkpoints.save(BUCKET_CHECKPOINT, {"bucket": self.bucket})
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
