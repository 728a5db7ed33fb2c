"""A recording Azure Blob transport for contract tests at the SDK boundary.

Azurite has no blob versions, soft delete, immutability policies or legal
holds. ``FakeBlobTransport`` replaces the HTTP transport of
azure-storage-blob: it records every request the SDK sends (blob batch
sub-requests included) and responds from a small model of one container
that follows the Blob service's documented rules for those features:

* deleting a base blob makes its current version a previous version;
* with soft delete on, deleted blobs, snapshots and versions are kept as
  soft-deleted, and ``deletetype=permanent`` removes a soft-deleted snapshot
  or version only when the account allows permanent delete;
* a copy under an unexpired immutability policy or a legal hold returns 409
  with the service's error code, and nothing is removed.
"""

from __future__ import annotations

import re
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from xml.sax.saxutils import escape

import requests
from azure.core.pipeline.transport import RequestsTransport, RequestsTransportResponse

ACCOUNT = "fakeaccount"
CONTAINER = "fakecontainer"
_SUBREQUEST = re.compile(r"^(DELETE) (\S+) HTTP/1\.1", re.MULTILINE)


@dataclass
class Copy:
    """One listed entry: a base blob, a snapshot or a version."""

    name: str
    snapshot: str | None = None
    version_id: str | None = None
    current: bool = False
    deleted: bool = False
    legal_hold: bool = False
    immutable_until: datetime | None = None
    size: int = 5
    encryption_scope: str | None = None


@dataclass
class FakeBlobTransport(RequestsTransport):
    copies: list[Copy] = field(default_factory=list)
    soft_delete_days: int = 0
    allow_permanent_delete: bool = False
    container_policy: bool = False
    container_legal_hold: bool = False
    requests_sent: list[tuple[str, str]] = field(default_factory=list)
    #: Blob names whose first batch sub-request gets 503 ServerBusy.
    busy_once: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        super().__init__()

    # -- transport ------------------------------------------------------------

    def send(self, request, **kwargs):  # noqa: ANN001, ANN003 - azure-core signature
        url = urllib.parse.unquote(request.url)
        self.requests_sent.append((request.method, url))
        status, headers, body = self._dispatch(request.method, request.url, request)
        response = requests.Response()
        response.status_code = status
        response.headers.update(
            {
                "x-ms-request-id": str(uuid.uuid4()),
                "x-ms-version": "2025-01-05",
                **headers,
            }
        )
        response._content = body.encode("utf-8") if isinstance(body, str) else body
        response.url = request.url
        response.reason = "OK" if status < 400 else "Error"
        return RequestsTransportResponse(request, response)

    def sent(self, method: str, fragment: str) -> list[str]:
        return [
            url
            for verb, url in self.requests_sent
            if verb == method and fragment in url
        ]

    # -- routing --------------------------------------------------------------

    def _dispatch(
        self, method: str, url: str, request
    ) -> tuple[int, dict, str | bytes]:  # noqa: ANN001
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        path = urllib.parse.unquote(parts.path).lstrip("/")
        if query.get("restype") == "service" and query.get("comp") == "properties":
            return 200, {"Content-Type": "application/xml"}, self._service_properties()
        container, _, name = path.partition("/")
        if container != CONTAINER:
            return _error(404, "ContainerNotFound")
        if query.get("comp") == "batch":
            return self._batch(request)
        if query.get("comp") == "list":
            return 200, {"Content-Type": "application/xml"}, self._list(query)
        if query.get("restype") == "container" and method == "GET":
            return 200, self._container_headers(), b""
        if method == "DELETE":
            if request.headers.get("x-ms-delete-snapshots"):
                query["x-ms-delete-snapshots"] = request.headers[
                    "x-ms-delete-snapshots"
                ]
            return self._delete(name, query)
        if method == "PUT" and query.get("comp") == "undelete":
            for copy in self.copies:
                if copy.name == name and copy.deleted and not copy.version_id:
                    copy.deleted = False
            return 200, {}, b""
        return _error(400, "UnsupportedByFake")

    def _service_properties(self) -> str:
        enabled = "true" if self.soft_delete_days else "false"
        days = f"<Days>{self.soft_delete_days}</Days>" if self.soft_delete_days else ""
        allow = "true" if self.allow_permanent_delete else "false"
        return (
            '<?xml version="1.0" encoding="utf-8"?><StorageServiceProperties>'
            f"<DeleteRetentionPolicy><Enabled>{enabled}</Enabled>{days}"
            f"<AllowPermanentDelete>{allow}</AllowPermanentDelete></DeleteRetentionPolicy>"
            "</StorageServiceProperties>"
        )

    def _container_headers(self) -> dict:
        return {
            "Last-Modified": format_datetime(
                datetime(2026, 1, 1, tzinfo=UTC), usegmt=True
            ),
            "ETag": '"0x1"',
            "x-ms-has-immutability-policy": "true"
            if self.container_policy
            else "false",
            "x-ms-has-legal-hold": "true" if self.container_legal_hold else "false",
            "x-ms-default-encryption-scope": "cmk-scope",
            "x-ms-deny-encryption-scope-override": "false",
        }

    def _list(self, query: dict) -> str:
        prefix = query.get("prefix", "")
        include = query.get("include", "")
        blobs = []
        for copy in self.copies:
            if not copy.name.startswith(prefix):
                continue
            if copy.deleted and "deleted" not in include:
                continue
            blobs.append(self._blob_xml(copy))
        return (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<EnumerationResults ServiceEndpoint="https://{ACCOUNT}.blob.core.windows.net/" '
            f'ContainerName="{CONTAINER}"><Prefix>{escape(prefix)}</Prefix><Blobs>'
            + "".join(blobs)
            + "</Blobs><NextMarker /></EnumerationResults>"
        )

    def _blob_xml(self, copy: Copy) -> str:
        stamp = format_datetime(datetime(2026, 1, 1, tzinfo=UTC), usegmt=True)
        extra = ""
        if copy.snapshot:
            extra += f"<Snapshot>{copy.snapshot}</Snapshot>"
        if copy.version_id:
            extra += f"<VersionId>{copy.version_id}</VersionId>"
            extra += f"<IsCurrentVersion>{'true' if copy.current else 'false'}</IsCurrentVersion>"
        if copy.deleted:
            extra += "<Deleted>true</Deleted>"
        props = f"<Last-Modified>{stamp}</Last-Modified><Etag>0x1</Etag>"
        props += f"<Content-Length>{copy.size}</Content-Length><BlobType>BlockBlob</BlobType>"
        if copy.deleted:
            props += f"<DeletedTime>{stamp}</DeletedTime>"
            props += f"<RemainingRetentionDays>{self.soft_delete_days}</RemainingRetentionDays>"
        if copy.immutable_until:
            until = format_datetime(copy.immutable_until, usegmt=True)
            props += (
                f"<ImmutabilityPolicyUntilDate>{until}</ImmutabilityPolicyUntilDate>"
            )
            props += "<ImmutabilityPolicyMode>Locked</ImmutabilityPolicyMode>"
        if copy.legal_hold:
            props += "<LegalHold>true</LegalHold>"
        if copy.encryption_scope:
            props += (
                f"<EncryptionScope>{escape(copy.encryption_scope)}</EncryptionScope>"
            )
        return f"<Blob><Name>{escape(copy.name)}</Name>{extra}<Properties>{props}</Properties></Blob>"

    # -- deletes --------------------------------------------------------------

    def _delete(self, name: str, query: dict) -> tuple[int, dict, bytes]:
        snapshot = query.get("snapshot")
        version = query.get("versionid")
        permanent = query.get("deletetype") == "permanent"
        if snapshot or version:
            matches = [
                c
                for c in self.copies
                if c.name == name
                and c.snapshot == snapshot
                and (version is None or c.version_id == version)
            ]
        else:
            matches = [
                c
                for c in self.copies
                if c.name == name
                and not c.snapshot
                and (c.current or not c.version_id)
                and not c.deleted
            ]
        if not matches:
            return _error(404, "BlobNotFound")
        blocked = self._blocked(matches[0])
        if blocked:
            return _error(409, blocked)
        copy = matches[0]
        if permanent:
            if not (copy.deleted and self.allow_permanent_delete):
                return _error(
                    409,
                    "OperationNotAllowedOnRootBlob"
                    if not copy.deleted
                    else "PermanentDeleteNotAllowed",
                )
            self.copies.remove(copy)
            return 202, {"x-ms-delete-type-permanent": "true"}, b""
        if snapshot or version:
            self._remove_or_soft_delete(copy)
            return 202, {}, b""
        if query.get("x-ms-delete-snapshots") is None and not self._snapshots_ok(
            name, query
        ):
            return _error(409, "SnapshotsPresent")
        for child in [
            c for c in self.copies if c.name == name and c.snapshot and not c.deleted
        ]:
            self._remove_or_soft_delete(child)
        if copy.version_id:
            copy.current = False  # the current version becomes a previous version
        else:
            self._remove_or_soft_delete(copy)
        return 202, {}, b""

    def _snapshots_ok(self, name: str, query: dict) -> bool:
        return not any(
            c.name == name and c.snapshot and not c.deleted for c in self.copies
        )

    def _blocked(self, copy: Copy) -> str | None:
        if copy.legal_hold or self.container_legal_hold:
            return "BlobImmutableDueToLegalHold"
        if copy.immutable_until and copy.immutable_until > datetime.now(UTC):
            return "BlobImmutableDueToPolicy"
        if self.container_policy:
            return "BlobImmutableDueToPolicy"
        return None

    def _remove_or_soft_delete(self, copy: Copy) -> None:
        if self.soft_delete_days:
            copy.deleted = True
        else:
            self.copies.remove(copy)

    def _batch(self, request) -> tuple[int, dict, bytes]:  # noqa: ANN001
        body = (
            request.body
            if isinstance(request.body, bytes)
            else _serialized_body(request)
        )
        text = body.decode("utf-8", "replace")
        boundary = "batchresponse_" + uuid.uuid4().hex
        parts = []
        for index, (method, target) in enumerate(_SUBREQUEST.findall(text)):
            url = urllib.parse.unquote(target)
            self.requests_sent.append((method, url))
            headers_block = text.split(f"{method} {target} HTTP/1.1", 1)[1].split(
                "\r\n\r\n", 1
            )[0]
            target_parts = urllib.parse.urlsplit(target)
            query = dict(urllib.parse.parse_qsl(target_parts.query))
            if "x-ms-delete-snapshots" in headers_block:
                query["x-ms-delete-snapshots"] = "include"
            name = urllib.parse.unquote(target_parts.path).lstrip("/").partition("/")[2]
            if name in self.busy_once:
                self.busy_once.discard(name)
                status, headers, _ = _error(503, "ServerBusy")
            else:
                status, headers, _ = self._delete(name, query)
            header_lines = "".join(
                f"{key}: {value}\r\n" for key, value in headers.items()
            )
            parts.append(
                f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: {index}\r\n\r\n"
                f"HTTP/1.1 {status} {'Accepted' if status < 400 else 'Error'}\r\n{header_lines}"
                f"x-ms-version: 2025-01-05\r\nContent-Length: 0\r\n\r\n"
            )
        payload = "".join(parts) + f"--{boundary}--\r\n"
        return (
            202,
            {"Content-Type": f"multipart/mixed; boundary={boundary}"},
            payload.encode(),
        )


def _serialized_body(request) -> bytes:  # noqa: ANN001
    request.prepare_multipart_body()
    return (
        request.body if isinstance(request.body, bytes) else str(request.body).encode()
    )


def _error(status: int, code: str) -> tuple[int, dict, bytes]:
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{code} (fake Blob service)</Message></Error>"
    )
    return (
        status,
        {"x-ms-error-code": code, "Content-Type": "application/xml"},
        body.encode(),
    )


def plugin_class(transport: FakeBlobTransport):
    """Return an AzurePlugin subclass whose client sends through ``transport``."""
    from azure.storage.blob import BlobServiceClient

    from plugins.azure import AzurePlugin

    class FakeServiceAzurePlugin(AzurePlugin):
        def make_service_client(self):
            return BlobServiceClient(
                f"https://{ACCOUNT}.blob.core.windows.net",
                transport=transport,
                retry_total=0,
            )

    return FakeServiceAzurePlugin
