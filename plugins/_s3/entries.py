"""Listed S3 entries, and the limits, codes and helpers the S3 plugin shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
