"""Facts the S3 plan reports: bucket configuration and version details.

The methods here belong to :class:`plugins.s3.S3Plugin`, which supplies the
client, the options, error translation and the thread pool they use.
"""

from __future__ import annotations

from typing import Any

from plugins._s3 import client_error
from plugins._s3.entries import (
    NOT_FOUND_CODES,
    _encryption_name,
    _Entry,
    _iso,
)
from plugins.errors import PurgeFailed


class FactsMixin:
    """Read the bucket's configuration and, with HEAD, the details of versions."""

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
        ClientError = client_error()

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

    def _inspect_version(self, entry: _Entry) -> dict[str, Any]:
        """Read a version's encryption, retention and legal hold with HEAD."""
        ClientError = client_error()

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

    def _kms_manager(self, key_id: str) -> str:
        """Return KeyManager (CUSTOMER or AWS) of a KMS key, cached per key."""
        if key_id not in self._kms_managers:
            with self._translated(f"describing KMS key {key_id}"):
                metadata = self._kms_client().describe_key(KeyId=key_id)["KeyMetadata"]
            self._kms_managers[key_id] = metadata.get("KeyManager", "AWS")
        return self._kms_managers[key_id]
