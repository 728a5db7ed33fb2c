"""Cloud Storage test helpers: emulator clients and a recording HTTP adapter.

The recording adapter sits at the SDK boundary, between google-cloud-storage
and the emulator. It records every request the SDK sends (batch sub-requests
included) and can add fields the emulators do not store, such as holds,
retention times and KMS key names, to the JSON the emulator returns. Every
request still reaches the emulator, so a delete the plugin should not have
sent really deletes the object and the test sees it. The one exception is
the ``deny`` hook: a request it matches gets the status code the test sets
and never reaches the emulator. The hook sees each call of a batch request
on its own, so a denied call gets its status inside the batch response and
the other calls still reach the emulator.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from plugins.gcs import GCSPlugin

_BATCH_LINE = re.compile(rb"^(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.1", re.MULTILINE)
_CONTENT_ID = re.compile(rb"^Content-ID: *<([^>]*)>", re.MULTILINE | re.IGNORECASE)
_BOUNDARY = re.compile(r"boundary=\"?([^\";]+)")


class RecordingAdapter(requests.adapters.HTTPAdapter):
    """Record requests and rewrite JSON responses at the SDK boundary."""

    def __init__(self) -> None:
        super().__init__()
        #: (method, decoded path and query) of every request and batch sub-request.
        self.requests: list[tuple[str, str]] = []
        #: (method, decoded URL) of the calls inside batch requests only.
        self.batch_calls: list[tuple[str, str]] = []
        #: Extra fields per object name, merged into object resources.
        self.object_fields: dict[str, dict[str, Any]] = {}
        #: Extra fields merged into bucket resources.
        self.bucket_fields: dict[str, Any] = {}
        #: Returns a status code for requests that must fail without reaching the emulator.
        self.deny: Callable[[str, str], int | None] = lambda method, url: None

    def send(
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        url = urllib.parse.unquote(request.url or "")
        self.requests.append((request.method or "", url))
        body = (
            request.body
            if isinstance(request.body, bytes)
            else (request.body or "").encode()
        )
        is_batch = "/batch/storage/v1" in url
        if is_batch:
            for method, path in _BATCH_LINE.findall(body):
                call = (method.decode(), urllib.parse.unquote(path.decode()))
                self.requests.append(call)
                self.batch_calls.append(call)
        status = self.deny(request.method or "", url)
        if status is not None:
            return self._denied(request, status)
        if is_batch:
            return self._send_batch(request, body, **kwargs)
        response = super().send(request, **kwargs)
        if "application/json" in response.headers.get("Content-Type", ""):
            response._content = self._rewrite(response.content)
        return response

    def _send_batch(
        self, request: requests.PreparedRequest, body: bytes, **kwargs: Any
    ) -> requests.Response:
        """Forward the calls the deny hook lets through and respond to the others here."""
        match = _BOUNDARY.search(request.headers.get("Content-Type", ""))
        assert match is not None, "batch request without a multipart boundary"
        delimiter = b"--" + match.group(1).encode()
        kept: list[bytes] = []
        denied: list[tuple[bytes, int]] = []
        for part in body.split(delimiter):
            if part.strip() in (b"", b"--"):
                continue
            line = _BATCH_LINE.search(part)
            content_id = _CONTENT_ID.search(part)
            status = None
            if line is not None:
                status = self.deny(
                    line.group(1).decode(), urllib.parse.unquote(line.group(2).decode())
                )
            if status is None or content_id is None:
                kept.append(part)
            else:
                denied.append((content_id.group(1), status))
        if not denied:
            return super().send(request, **kwargs)
        if kept:
            request.body = (
                b"".join(delimiter + part for part in kept) + delimiter + b"--\r\n"
            )
            request.headers["Content-Length"] = str(len(request.body))
            response = super().send(request, **kwargs)
            reply = _BOUNDARY.search(response.headers.get("Content-Type", ""))
            assert reply is not None, "batch response without a multipart boundary"
            reply_delimiter = b"--" + reply.group(1).encode()
            content = response.content.rstrip()
            content = content[: -len(reply_delimiter + b"--")]
        else:
            response = self._denied(request, 200)
            reply_delimiter = b"--denied_calls"
            response.headers["Content-Type"] = "multipart/mixed; boundary=denied_calls"
            content = b""
        for content_id, status in denied:
            error = json.dumps(
                {
                    "error": {
                        "code": status,
                        "message": f"HTTP {status} from the test adapter",
                    }
                }
            ).encode()
            content += (
                reply_delimiter
                + b"\r\nContent-Type: application/http\r\nContent-ID: <response-"
                + content_id
                + b">\r\n\r\nHTTP/1.1 "
                + str(status).encode()
                + b" Denied\r\nContent-Type: application/json\r\n\r\n"
                + error
                + b"\r\n"
            )
        response._content = content + reply_delimiter + b"--\r\n"
        return response

    def _denied(
        self, request: requests.PreparedRequest, status: int
    ) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response.request = request
        response.url = request.url or ""
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps(
            {
                "error": {
                    "code": status,
                    "message": f"HTTP {status} from the test adapter",
                }
            }
        ).encode()
        return response

    def _rewrite(self, content: bytes) -> bytes:
        try:
            payload = json.loads(content)
        except ValueError:
            return content
        if not isinstance(payload, dict):
            return content
        resources = (
            payload.get("items", [])
            if payload.get("kind") == "storage#objects"
            else [payload]
        )
        for resource in resources:
            if resource.get("kind") == "storage#object":
                resource.update(self.object_fields.get(resource.get("name"), {}))
            if resource.get("kind") == "storage#bucket":
                resource.update(self.bucket_fields)
        return json.dumps(payload).encode()

    def single_deletes(self) -> int:
        """Count DELETE requests sent on their own, outside batch requests."""
        deletes = sum(1 for method, _ in self.requests if method == "DELETE")
        return deletes - sum(1 for method, _ in self.batch_calls if method == "DELETE")

    def sent(self, method: str, fragment: str) -> list[str]:
        """Return recorded URLs of one method that contain ``fragment``."""
        return [
            url for verb, url in self.requests if verb == method and fragment in url
        ]


def client(endpoint: str, adapter: RecordingAdapter | None = None) -> storage.Client:
    """Return a client for an emulator, with anonymous credentials."""
    session = requests.Session()
    if adapter is not None:
        session.mount("http://", adapter)
    return storage.Client(
        project="lethe-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
        _http=session,
    )


def plugin_class(
    endpoint: str, adapter: RecordingAdapter | None = None
) -> type[GCSPlugin]:
    """Return a GCSPlugin subclass whose client talks to ``endpoint``."""

    class EmulatorGCSPlugin(GCSPlugin):
        def make_client(self) -> Any:
            return client(endpoint, adapter)

    return EmulatorGCSPlugin


def versioned_bucket(gcs: storage.Client, name: str) -> storage.Bucket:
    bucket = gcs.bucket(name)
    bucket.versioning_enabled = True
    return gcs.create_bucket(bucket)


def all_generations(
    gcs: storage.Client, bucket: str, prefix: str = ""
) -> list[tuple[str, int]]:
    """List (name, generation) of every live and noncurrent generation."""
    return [
        (blob.name, blob.generation)
        for blob in gcs.list_blobs(bucket, prefix=prefix or None, versions="true")
    ]
