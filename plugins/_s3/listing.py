"""Listing of an S3 prefix, and the snapshot the plan is made from.

The methods here belong to :class:`plugins.s3.S3Plugin`, which supplies the
client, the options, error translation and the thread pool they use.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from plugins._s3.entries import (
    INSPECT_SAMPLE,
    _Entry,
    _iso,
    _page_entries,
)
from plugins.base import (
    chunked,
)


class ListingMixin:
    """List versions, markers and uploads, and keep the planning snapshot on disk."""

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
        heads = self._executor().map(self._inspect_version, sample)
        for entry, head in zip(sample, heads, strict=True):
            details[entry.item_key] = json.dumps(head)
            self._sampled[head["encryption"]] += 1
        return details

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
