"""Batch request bodies and batch response parsing for Cloud Storage deletes.

These run without an emulator: the response bodies below follow the layout
of the service's batch documentation, fake-gcs-server 1.54 and
gcp-storage-emulator 2026.7.19.
"""

from __future__ import annotations

import pytest

from plugins._gcs_batch import (
    BatchUnsupported,
    CallResult,
    DeleteCall,
    build_delete_batch,
    parse_batch_response,
)

CALLS = [DeleteCall("a/b c", 11, 1), DeleteCall("d", 12, None)]


def test_request_has_one_part_per_call():
    headers, body, ids = build_delete_batch("bkt", CALLS)

    boundary = headers["Content-Type"].split("boundary=", 1)[1]
    text = body.decode()
    assert headers["Content-Type"].startswith("multipart/mixed; ")
    assert text.count(f"--{boundary}\r\n") == 2
    assert text.endswith(f"--{boundary}--\r\n")
    assert len(set(ids)) == 2
    assert f"Content-ID: <{ids[0]}>" in text
    assert (
        "DELETE /storage/v1/b/bkt/o/a%2Fb%20c"
        "?generation=11&ifMetagenerationMatch=1 HTTP/1.1\r\n\r\n" in text
    )
    assert "/o/d?generation=12 HTTP/1.1" in text


def test_request_path_prefix():
    _, body, _ = build_delete_batch("bkt", CALLS[1:], "/emulator/")

    assert (
        "DELETE /emulator/storage/v1/b/bkt/o/d?generation=12 HTTP/1.1" in body.decode()
    )


def test_request_size_limits():
    with pytest.raises(ValueError):
        build_delete_batch("bkt", [])
    with pytest.raises(ValueError):
        build_delete_batch("bkt", [CALLS[1]] * 101)


def _part(status_line: str, content_id: str | None, body: str = "") -> str:
    header = f"Content-ID: <response-{content_id}>\r\n" if content_id else ""
    return (
        "--B\r\nContent-Type: application/http\r\n"
        f"{header}\r\n{status_line}\r\nContent-Type: application/json\r\n\r\n{body}\r\n"
    )


def test_response_matched_by_content_id():
    error = '{"error": {"code": 412, "message": "precondition failed"}}'
    body = _part("HTTP/1.1 412 Precondition Failed", "y", error)
    body += _part("HTTP/1.1 204 No Content", "x") + "--B--\r\n"

    results = parse_batch_response(
        "multipart/mixed; boundary=B", body.encode(), ["x", "y"]
    )

    assert results["x"].status == 204
    assert results["y"] == CallResult(412, "precondition failed")


def test_unanswered_call_left_out():
    body = _part("HTTP/1.1 204 No Content", "x") + "--B--\r\n"

    results = parse_batch_response(
        'multipart/mixed; boundary="B"', body.encode(), ["x", "y"]
    )

    assert set(results) == {"x"}


def test_response_matched_by_position():
    # gcp-storage-emulator: no Content-ID and no blank line before the status line.
    part = "--B\r\nContent-Type: application/http\r\nHTTP/1.1 {} X\r\n\r\n"
    body = part.format(204) + part.format(404) + "--B--"

    results = parse_batch_response(
        "multipart/mixed; boundary=B", body.encode(), ["x", "y"]
    )

    assert results["x"].status == 204
    assert results["y"].status == 404


def test_position_needs_every_answer():
    part = "--B\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 X\r\n\r\n"
    body = part + "--B--"

    results = parse_batch_response(
        "multipart/mixed; boundary=B", body.encode(), ["x", "y"]
    )

    assert results == {}


def test_non_multipart_response_rejected():
    with pytest.raises(BatchUnsupported):
        parse_batch_response("application/json", b"{}", ["x"])
