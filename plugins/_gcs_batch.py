"""Cloud Storage JSON API batch requests: object deletes, up to 100 per request.

A batch is one ``POST {endpoint}/batch/storage/v1`` with a
``multipart/mixed`` body. Each part is an ``application/http`` message
containing one API call, and the response contains one part per call with
its own status line (https://cloud.google.com/storage/docs/batch).

The request is built here rather than with ``Client.batch()`` because
google-cloud-storage 3.17 builds each part with the ``email`` package and
sends no ``Content-ID`` part header, and fake-gcs-server 1.54 skips every
part that lacks one. Responses are matched to calls by ``Content-ID`` when
the endpoint returns it (with or without a ``response-`` prefix) and by
position otherwise, since the documentation says the responses come in the
order of the calls (gcp-storage-emulator returns no Content-ID).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

#: Calls the service accepts in one batch request.
MAX_CALLS = 100


@dataclass(frozen=True)
class DeleteCall:
    """One object generation to delete, guarded by its metageneration."""

    name: str
    generation: int
    metageneration: int | None


@dataclass(frozen=True)
class CallResult:
    """Status code and error message of one call inside a batch response."""

    status: int
    message: str


class BatchUnsupported(Exception):
    """The endpoint returned no multipart body for a batch request."""


def build_delete_batch(
    bucket: str, calls: Sequence[DeleteCall], path_prefix: str = ""
) -> tuple[dict[str, str], bytes, list[str]]:
    """Return the headers, body and part ids of a batch of object deletes.

    Each call names only the path of its URL, because the batch
    documentation leaves full URLs undefined. ``path_prefix`` is the path
    of an endpoint served below its host's root, such as an emulator's.
    """
    if not 1 <= len(calls) <= MAX_CALLS:
        raise ValueError(
            f"invalid batch size {len(calls)}: a batch contains 1 to {MAX_CALLS} calls"
        )
    boundary = f"lethe_{uuid.uuid4().hex}"
    batch_id = uuid.uuid4().hex
    bucket_path = f"{path_prefix.rstrip('/')}/storage/v1/b/{quote(bucket, safe='')}/o/"
    ids: list[str] = []
    lines: list[str] = []
    for index, call in enumerate(calls):
        content_id = f"{batch_id}+{index}"
        ids.append(content_id)
        query = f"generation={call.generation}"
        if call.metageneration is not None:
            query += f"&ifMetagenerationMatch={call.metageneration}"
        lines.append(
            f"--{boundary}\r\n"
            "Content-Type: application/http\r\n"
            f"Content-ID: <{content_id}>\r\n"
            "\r\n"
            f"DELETE {bucket_path}{quote(call.name, safe='')}?{query} HTTP/1.1\r\n"
            # The blank line ending the call's headers, then the line break that
            # belongs to the next boundary delimiter.
            "\r\n"
            "\r\n"
        )
    lines.append(f"--{boundary}--\r\n")
    headers = {"Content-Type": f"multipart/mixed; boundary={boundary}"}
    return headers, "".join(lines).encode(), ids


def parse_batch_response(
    content_type: str, body: bytes, ids: Sequence[str]
) -> dict[str, CallResult]:
    """Map the part ids of a batch to the status each call returned.

    A call without a response part is missing from the result. Raises
    BatchUnsupported when the body is not a multipart response.
    """
    boundary = _boundary(content_type)
    if boundary is None:
        raise BatchUnsupported(
            f"batch response has content type {content_type!r}, not multipart/mixed"
        )
    parts = [
        part
        for part in body.replace(b"\r\n", b"\n").split(b"--" + boundary.encode())
        if part.strip() not in (b"", b"--")
    ]
    results: dict[str, CallResult] = {}
    unnamed: list[CallResult] = []
    for part in parts:
        content_id, result = _parse_part(part)
        if content_id is None:
            unnamed.append(result)
        else:
            results[content_id] = result
    if unnamed and not results and len(unnamed) == len(ids):
        return dict(zip(ids, unnamed, strict=True))
    return {key: value for key, value in results.items() if key in set(ids)}


def _boundary(content_type: str) -> str | None:
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != "multipart/mixed":
        return None
    for parameter in parameters.split(";"):
        key, _, value = parameter.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"')
    return None


def _parse_part(part: bytes) -> tuple[str | None, CallResult]:
    """Read the Content-ID and the call's status line and body from one part.

    The status line is the first line starting with ``HTTP/``, so a part
    without the blank line after its own headers (gcp-storage-emulator
    writes none) still parses.
    """
    content_id = None
    status = 0
    status_line = b""
    lines = part.split(b"\n")
    for index, line in enumerate(lines):
        if line.startswith(b"HTTP/"):
            status_line = line
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                status = int(fields[1])
            _, _, payload = b"\n".join(lines[index + 1 :]).partition(b"\n\n")
            return content_id, CallResult(status, _error_message(payload, status_line))
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-id":
            content_id = value.strip().strip("<>").removeprefix("response-")
    return content_id, CallResult(status, "the part holds no HTTP status line")


def _error_message(payload: bytes, status_line: bytes) -> str:
    try:
        document: Any = json.loads(payload)
    except ValueError:
        return status_line.decode("latin-1").strip()
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        return str(document["error"].get("message", ""))
    return ""
