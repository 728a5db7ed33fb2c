"""The job journal: one SQLite file in the state directory.

Every state change of an item is committed before the engine moves on, so
after a crash or SIGTERM the journal records exactly which items were planned,
in flight (``purging``), destroyed but not yet verified (``purged``),
verified, failed, refused or blocked. Items are read back in pages by row id,
so a job of any size is never held in memory.

Item states:

- ``planned``: permitted, not touched yet
- ``purging``: the destroy step started and its outcome is not recorded
- ``purged``: the destroy step completed; verification is still owed
- ``verified``: the independent rescan agreed; only now is it destroyed
- ``failed``: the destroy step or the verification failed
- ``refused``: the plan refused it (``refusal`` gives the reason)
- ``blocked``: the store refused to destroy it for a lawful reason
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.errors import JournalError, UnknownJob
from plugins.base import (
    Decision,
    Item,
    Method,
    PlannedItem,
    Refusal,
    Target,
    TargetInfo,
)


def residual_note(path: Path) -> str:
    """Return the residual-risk statement about the names the journal keeps."""
    return (
        f"Lethe's journal {path} keeps each item's key and label (file paths, object "
        "keys), which can themselves be personal data; protect, retain or purge the "
        "state directory accordingly."
    )


ITEM_STATES = (
    "planned",
    "purging",
    "purged",
    "verified",
    "failed",
    "refused",
    "blocked",
)
FILE_NAME = "journal.sqlite"
PAGE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    state TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    plan_hash TEXT,
    config_digest TEXT,
    settings TEXT NOT NULL,
    source_plan TEXT,
    summary TEXT,
    certificate TEXT
);
CREATE TABLE IF NOT EXISTS targets (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    position INTEGER NOT NULL,
    url TEXT NOT NULL,
    options TEXT NOT NULL,
    plugin TEXT NOT NULL,
    info TEXT NOT NULL,
    PRIMARY KEY (job_id, position)
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    target INTEGER NOT NULL,
    key BLOB NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    label TEXT NOT NULL,
    identity TEXT NOT NULL,
    attributes TEXT NOT NULL,
    classification TEXT NOT NULL,
    method TEXT,
    params TEXT NOT NULL,
    refusal TEXT,
    residual TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    plan_hash TEXT,
    evidence TEXT,
    fingerprints TEXT NOT NULL,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    updated TEXT NOT NULL,
    UNIQUE (job_id, target, key)
);
CREATE INDEX IF NOT EXISTS items_by_state ON items (job_id, state, id);
CREATE TABLE IF NOT EXISTS item_fingerprints (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    target INTEGER NOT NULL,
    key BLOB NOT NULL,
    digests TEXT NOT NULL,
    PRIMARY KEY (job_id, target, key)
);
CREATE TABLE IF NOT EXISTS steps (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    target INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    target INTEGER NOT NULL,
    key BLOB NOT NULL,
    data TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (job_id, target, key)
);
CREATE TABLE IF NOT EXISTS rechecks (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    target INTEGER NOT NULL,
    key BLOB NOT NULL,
    at TEXT NOT NULL,
    verified INTEGER NOT NULL,
    evidence TEXT NOT NULL
);
"""


def key_bytes(key: str) -> bytes:
    """Encode an item key for the journal, keeping undecodable file-name bytes.

    Keys are stored as BLOBs because a file name that is not valid UTF-8
    arrives as a str with surrogate escapes (``os.fsdecode``), which SQLite
    TEXT cannot store; BLOBs also sort bytewise, so paging by key is stable.
    """
    return key.encode("utf-8", "surrogateescape")


def key_text(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", "surrogateescape")


def display_text(text: str) -> str:
    """Make a label or message storable as TEXT, escaping undecodable bytes."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
)
_DECODER = json.JSONDecoder()


def dumps(value: Any) -> str:
    """Serialise to the canonical JSON the journal, plan and audit log share.

    Non-ASCII characters are escaped, so file names with surrogate escapes
    (undecodable bytes) survive the round trip. One encoder serves every
    call, and the empty values most journal columns hold skip it.
    """
    kind = type(value)
    if value is None:
        return "null"
    if (kind is dict or kind is list or kind is tuple) and not value:
        return "[]" if kind is not dict else "{}"
    return _ENCODER.encode(value)


def loads(text: str) -> Any:
    """Parse JSON text as ``json.loads`` does, faster for the journal's columns.

    Columns written by :func:`dumps` contain no white space, so one call of
    the decoder parses them. Any other text goes to ``json.loads``, which
    also raises its error for text that is not JSON. Each call returns new
    objects, so a caller may change what it gets.
    """
    if text == "{}":
        return {}
    if text == "[]":
        return []
    try:
        value, end = _DECODER.raw_decode(text)
    except (json.JSONDecodeError, TypeError):
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


def encode_digests(digests: Sequence[str]) -> str:
    """Return the journal's JSON text of an item's hex fingerprint digests.

    Hex digits need no escaping, so joining the digests gives the text of
    :func:`dumps` several times faster.
    """
    if not digests:
        return "[]"
    return '["' + '","'.join(digests) + '"]'


class _StringCache:
    """A bounded map from a value to its conversion, emptied when full.

    Many items of a job share one residual-risk list, so the list is parsed
    and encoded once. Only immutable results (strings, tuples of strings)
    may be cached, because every caller with an equal key gets one object.
    """

    LIMIT = 256

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}

    def get(self, key: Any, make: Any) -> Any:
        try:
            return self._values[key]
        except KeyError:
            pass
        value = make(key)
        if len(self._values) >= self.LIMIT:
            self._values.clear()
        self._values[key] = value
        return value


def _tuple_of_json(text: str) -> tuple[Any, ...]:
    return tuple(loads(text))


def _json_of_tuple(value: tuple[Any, ...]) -> str:
    return dumps(list(value))


_RESIDUAL_DECODED = _StringCache()
_RESIDUAL_ENCODED = _StringCache()


def residual_from_json(text: str) -> tuple[str, ...]:
    """Return the residual risks a journal column holds, as a shared tuple."""
    return _RESIDUAL_DECODED.get(text, _tuple_of_json)


def residual_to_json(residual: Sequence[str]) -> str:
    """Return the journal column of a residual-risk list."""
    if type(residual) is tuple and all(type(risk) is str for risk in residual):
        return _RESIDUAL_ENCODED.get(residual, _json_of_tuple)
    return dumps(list(residual))


@dataclass(frozen=True)
class TargetRow:
    position: int
    target: Target
    plugin: str
    info: TargetInfo


@dataclass(frozen=True)
class JobRow:
    id: str
    created: str
    updated: str
    state: str
    dry_run: bool
    plan_hash: str | None
    config_digest: str | None
    settings: Mapping[str, Any]
    source_plan: str | None
    summary: Mapping[str, Any] | None
    certificate: str | None


@dataclass(frozen=True)
class ItemRow:
    """One journal row: the item, the plan's decision and the current state."""

    target: int
    key: str
    kind: str
    size: int
    label: str = ""
    identity: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    classification: str = "unclassified"
    method: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    refusal: Mapping[str, Any] | None = None
    residual: tuple[str, ...] = ()
    state: str = "planned"
    detail: str = ""
    evidence: Any = None
    fingerprints: tuple[str, ...] = ()
    bytes_done: int = 0
    row_id: int = 0

    def item(self) -> Item:
        return Item(
            self.key, self.kind, self.size, self.identity, self.attributes, self.label
        )

    def planned_item(
        self,
        fingerprints: tuple[bytes, ...] = (),
        flags: Mapping[str, bool] | None = None,
    ) -> PlannedItem:
        """Rebuild the plan's decision; fingerprints come from memory, if at all.

        ``flags`` are added to the decision's params (``resumed``, ``recheck``).
        """
        if self.method is None:
            decision = Decision(
                refusal=refusal_from_json(self.refusal), residual=self.residual
            )
            return PlannedItem(self.item(), decision)
        decision = Decision(
            method=Method(self.method),
            residual=self.residual,
            fingerprints=fingerprints,
            params={**self.params, **(flags or {})},
        )
        return PlannedItem(self.item(), decision)


def refusal_to_json(refusal: Refusal | None) -> dict[str, Any] | None:
    if refusal is None:
        return None
    until = refusal.blocked_until.isoformat() if refusal.blocked_until else None
    return {"reason": refusal.reason, "detail": refusal.detail, "blocked_until": until}


def refusal_from_json(value: Mapping[str, Any] | None) -> Refusal:
    value = value or {"reason": "not-supported", "detail": "no refusal recorded"}
    until = value.get("blocked_until")
    return Refusal(
        value["reason"],
        value.get("detail", ""),
        datetime.fromisoformat(until) if until else None,
    )


def info_to_json(info: TargetInfo) -> dict[str, Any]:
    return {
        "media": dict(info.media),
        "notes": list(info.notes),
        "residual": list(info.residual),
    }


def info_from_json(value: Mapping[str, Any]) -> TargetInfo:
    return TargetInfo(
        media=value.get("media", {}),
        notes=tuple(value.get("notes", ())),
        residual=tuple(value.get("residual", ())),
    )


@dataclass(frozen=True)
class StateChange:
    """A new state for one item, with the detail, bytes, evidence or refusal seen."""

    target: int
    key: str
    state: str
    detail: str = ""
    bytes_done: int | None = None
    evidence: Any = None
    refusal: Mapping[str, Any] | None = None

    def assignments(self) -> tuple[str, list[Any]]:
        columns = ["state = ?", "detail = ?"]
        values: list[Any] = [self.state, display_text(self.detail)]
        if self.bytes_done is not None:
            columns.append("bytes_done = ?")
            values.append(self.bytes_done)
        if self.evidence is not None:
            columns.append("evidence = ?")
            values.append(dumps(self.evidence))
        if self.refusal is not None:
            columns.append("refusal = ?")
            values.append(dumps(self.refusal))
        return ", ".join(columns), values


class Journal:
    """The SQLite journal of every job run from one state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The journal contains item keys (file paths, object keys), which can be
        # personal data, so it is created readable by its owner only; SQLite
        # gives its -wal and -shm files the same mode. An existing journal is
        # never opened here: closing any descriptor of a database file drops
        # the POSIX locks every SQLite connection of this process holds on it.
        if not os.path.exists(path):
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                os.close(os.open(path, flags, 0o600))
            except FileExistsError:
                pass
            except OSError as error:
                raise JournalError(
                    f"cannot create the journal {path}: {error.strerror}"
                ) from error
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise JournalError(f"cannot open the journal {path}: {error}") from error
        self._db.row_factory = sqlite3.Row

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        return cls(state_dir / FILE_NAME)

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement in its own committed transaction."""
        try:
            with self._transaction():
                return self._db.execute(sql, parameters)
        except sqlite3.Error as error:
            raise JournalError(
                f"cannot write the journal {self.path}: {error}"
            ) from error

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # Jobs

    def create_job(
        self,
        job_id: str,
        dry_run: bool,
        settings: Mapping[str, Any],
        config_digest: str | None,
        source_plan: str | None = None,
    ) -> None:
        stamp = now()
        self._write(
            "INSERT INTO jobs (id, created, updated, state, dry_run, config_digest,"
            " settings, source_plan) VALUES (?, ?, ?, 'planning', ?, ?, ?, ?)",
            (
                job_id,
                stamp,
                stamp,
                int(dry_run),
                config_digest,
                dumps(settings),
                source_plan,
            ),
        )

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set job columns (state, plan_hash, summary, certificate, dry_run)."""
        allowed = {"state", "plan_hash", "summary", "certificate", "dry_run"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown job columns: {sorted(unknown)}")
        values = [dumps(v) if k == "summary" else v for k, v in fields.items()]
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._write(
            f"UPDATE jobs SET {assignments}, updated = ? WHERE id = ?",
            (*values, now(), job_id),
        )

    def job(self, job_id: str) -> JobRow:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(
                f"job {job_id!r} is not in the journal {self.path}. Check the job "
                "id, or give the job's state directory with --state-dir when it "
                "ran with another one"
            )
        return JobRow(
            id=row["id"],
            created=row["created"],
            updated=row["updated"],
            state=row["state"],
            dry_run=bool(row["dry_run"]),
            plan_hash=row["plan_hash"],
            config_digest=row["config_digest"],
            settings=json.loads(row["settings"]),
            source_plan=row["source_plan"],
            summary=json.loads(row["summary"]) if row["summary"] else None,
            certificate=row["certificate"],
        )

    # Targets

    def add_target(
        self, job_id: str, position: int, target: Target, plugin: str, info: TargetInfo
    ) -> None:
        self._write(
            "INSERT INTO targets (job_id, position, url, options, plugin, info)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                job_id,
                position,
                target.url,
                dumps(dict(target.options)),
                plugin,
                dumps(info_to_json(info)),
            ),
        )

    def targets(self, job_id: str) -> list[TargetRow]:
        rows = self._db.execute(
            "SELECT * FROM targets WHERE job_id = ? ORDER BY position", (job_id,)
        ).fetchall()
        return [
            TargetRow(
                row["position"],
                Target(row["url"], json.loads(row["options"])),
                row["plugin"],
                info_from_json(json.loads(row["info"])),
            )
            for row in rows
        ]

    # Items

    def add_items(self, job_id: str, rows: Iterable[ItemRow], page: int = PAGE) -> None:
        """Insert planned rows, committing every ``page`` rows."""
        batch: list[ItemRow] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= page:
                self._insert(job_id, batch)
                batch = []
        if batch:
            self._insert(job_id, batch)

    def add_item(self, job_id: str, row: ItemRow) -> None:
        self._insert(job_id, [row])

    def _insert(self, job_id: str, batch: list[ItemRow]) -> None:
        stamp = now()
        # The fingerprint digests go to a table of their own, and the items'
        # column keeps '[]'. SQLite rewrites a whole row on every UPDATE, and
        # the digests are the largest part of a row group's item, whose state
        # changes several times.
        digests = [
            (job_id, row.target, key_bytes(row.key), dumps(list(row.fingerprints)))
            for row in batch
            if row.fingerprints
        ]
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO items (job_id, target, key, kind, size, label, identity,"
                    " attributes, classification, method, params, refusal, residual, state,"
                    " detail, fingerprints, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?)",
                    [self._item_values(job_id, row, stamp) for row in batch],
                )
                self._db.executemany(
                    "INSERT INTO item_fingerprints (job_id, target, key, digests)"
                    " VALUES (?, ?, ?, ?)",
                    digests,
                )
        except sqlite3.IntegrityError as error:
            raise JournalError(
                f"a plugin yielded the same item key twice in one target: {error}"
            ) from error

    def add_fingerprint_digests(
        self, job_id: str, found: Iterable[tuple[int, str, str]]
    ) -> None:
        """Record items' fingerprint digests, given as (target, key, encoded digests).

        The engine computes the digests during compaction, after the items
        were inserted, and encodes them with :func:`encode_digests` in the
        same thread. Digests recorded before for an item are replaced.
        """
        rows = [(job_id, target, key_bytes(key), text) for target, key, text in found]
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO item_fingerprints (job_id, target, key, digests)"
                " VALUES (?, ?, ?, ?)",
                rows,
            )

    @staticmethod
    def _item_values(job_id: str, row: ItemRow, stamp: str) -> tuple[Any, ...]:
        return (
            job_id,
            row.target,
            key_bytes(row.key),
            row.kind,
            row.size,
            display_text(row.label),
            dumps(row.identity),
            dumps(row.attributes),
            row.classification,
            row.method,
            dumps(row.params),
            dumps(row.refusal) if row.refusal else None,
            residual_to_json(row.residual),
            row.state,
            display_text(row.detail),
            stamp,
        )

    def set_plan_hash(self, job_id: str, plan_hash: str) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE items SET plan_hash = ? WHERE job_id = ?", (plan_hash, job_id)
            )
            self._db.execute(
                "UPDATE jobs SET plan_hash = ?, updated = ? WHERE id = ?",
                (plan_hash, now(), job_id),
            )

    def set_states(
        self,
        job_id: str,
        target: int,
        keys: Sequence[str],
        state: str,
        detail: str = "",
    ) -> None:
        """Move several items to one state in a single transaction."""
        self._check_state(state)
        stamp = now()
        with self._transaction():
            self._db.executemany(
                "UPDATE items SET state = ?, detail = ?, updated = ?"
                " WHERE job_id = ? AND target = ? AND key = ?",
                [
                    (state, display_text(detail), stamp, job_id, target, key_bytes(key))
                    for key in keys
                ],
            )

    def set_state(
        self, job_id: str, target: int, key: str, state: str, **fields: Any
    ) -> None:
        """Record one item's new state in its own transaction."""
        self.apply(job_id, [StateChange(target, key, state, **fields)])

    def apply(self, job_id: str, changes: Sequence[StateChange]) -> None:
        """Record the outcomes of one batch of items in a single transaction."""
        stamp = now()
        # One executemany per run of changes that set the same columns, so a
        # batch of purged or verified items shares one statement and the
        # changes still apply in their order.
        statements: list[tuple[str, list[tuple[Any, ...]]]] = []
        for change in changes:
            self._check_state(change.state)
            assignments, values = change.assignments()
            row = (*values, stamp, job_id, change.target, key_bytes(change.key))
            if statements and statements[-1][0] == assignments:
                statements[-1][1].append(row)
            else:
                statements.append((assignments, [row]))
        try:
            with self._transaction():
                for assignments, rows in statements:
                    self._db.executemany(
                        f"UPDATE items SET {assignments}, updated = ?"
                        " WHERE job_id = ? AND target = ? AND key = ?",
                        rows,
                    )
        except sqlite3.Error as error:
            raise JournalError(
                f"cannot write the journal {self.path}: {error}"
            ) from error

    def requeue(self, job_id: str, target: int, key: str, detail: str) -> None:
        """Return an item left in flight to ``planned`` and mark its decision resumed.

        ``params["resumed"]`` informs the plugin that the item may differ from
        its planned identity only by the interrupted destroy step itself
        (for files: the same inode with a new mtime).
        """
        self._write(
            "UPDATE items SET state = 'planned', detail = ?, updated = ?,"
            " params = json_set(params, '$.resumed', json('true'))"
            " WHERE job_id = ? AND target = ? AND key = ?",
            (display_text(detail), now(), job_id, target, key_bytes(key)),
        )

    @staticmethod
    def _check_state(state: str) -> None:
        if state not in ITEM_STATES:
            raise ValueError(f"invalid item state {state!r}")

    def items(
        self,
        job_id: str,
        target: int | None = None,
        states: Sequence[str] | None = None,
        by_key: bool = False,
        fingerprints: bool = True,
    ) -> Iterator[ItemRow]:
        """Stream items in pages, by row id or ordered by (target, key).

        Paging by row id tolerates state updates between pages: a row whose
        state changes after it was read is not read twice. Without
        ``fingerprints`` the rows' fingerprint digests, the largest column
        of a row group's item, are neither read nor decoded.
        """
        names = ("*",) if fingerprints else _COLUMNS_BUT_FINGERPRINTS
        for row in self.columns(job_id, names, target, states, by_key):
            yield self._with_digests(job_id, row) if fingerprints else _item_row(row)

    def _with_digests(self, job_id: str, row: sqlite3.Row) -> ItemRow:
        """Return the item of a full row, with the digests kept in their own table."""
        item = _item_row(row)
        found = self._db.execute(
            "SELECT digests FROM item_fingerprints WHERE job_id = ? AND target = ? AND key = ?",
            (job_id, row["target"], row["key"]),
        ).fetchone()
        if found is None:
            return item
        return replace(item, fingerprints=item.fingerprints + tuple(loads(found[0])))

    def fingerprint_count(self, job_id: str, state: str) -> int:
        """Count the fingerprint digests of a job's items in ``state``.

        Journals written before the digests had a table of their own keep
        them in the items' column, so both are counted.
        """
        row = self._db.execute(
            "SELECT COALESCE(SUM(json_array_length(i.fingerprints)"
            " + COALESCE(json_array_length(f.digests), 0)), 0)"
            " FROM items AS i LEFT JOIN item_fingerprints AS f"
            " ON f.job_id = i.job_id AND f.target = i.target AND f.key = i.key"
            " WHERE i.job_id = ? AND i.state = ?",
            (job_id, state),
        ).fetchone()
        return int(row[0])

    def columns(
        self,
        job_id: str,
        names: Sequence[str],
        target: int | None = None,
        states: Sequence[str] | None = None,
        by_key: bool = False,
    ) -> Iterator[sqlite3.Row]:
        """Stream some columns of items, raw, paged as :meth:`items` pages.

        A pass that reads a few fields of every item (a digest, the ledger)
        selects only those and decodes no other JSON column. Each row also
        carries ``id``, ``target`` and ``key``, which the paging needs;
        ``key`` is the stored BLOB (see :func:`key_text`).
        """
        if "*" in names:
            selected = "*"
        else:
            unknown = set(names) - _ITEM_COLUMNS
            if unknown:
                raise ValueError(f"unknown item columns: {sorted(unknown)}")
            selected = ", ".join(dict.fromkeys(("id", "target", "key", *names)))
        where = ["job_id = ?"]
        parameters: list[Any] = [job_id]
        if target is not None:
            where.append("target = ?")
            parameters.append(target)
        if states is not None:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            parameters.extend(states)
        if by_key:
            yield from self._pages_by_key(selected, " AND ".join(where), parameters)
            return
        last = 0
        while True:
            rows = self._db.execute(
                f"SELECT {selected} FROM items WHERE {' AND '.join(where)}"
                " AND id > ? ORDER BY id LIMIT ?",
                (*parameters, last, PAGE),
            ).fetchall()
            if not rows:
                return
            yield from rows
            last = rows[-1]["id"]

    def _pages_by_key(
        self, selected: str, where: str, parameters: list[Any]
    ) -> Iterator[sqlite3.Row]:
        last_target, last_key = -1, b""
        while True:
            # A row value is a range on the (job_id, target, key) index, so
            # each page starts where the last ended. The equivalent OR made
            # SQLite 3.40 step over every earlier row of the job per page.
            rows = self._db.execute(
                f"SELECT {selected} FROM items WHERE {where} AND (target, key) > (?, ?)"
                " ORDER BY target, key LIMIT ?",
                (*parameters, last_target, last_key, PAGE),
            ).fetchall()
            if not rows:
                return
            yield from rows
            last_target, last_key = rows[-1]["target"], rows[-1]["key"]

    def get_item(self, job_id: str, target: int, key: str) -> ItemRow | None:
        row = self._db.execute(
            "SELECT * FROM items WHERE job_id = ? AND target = ? AND key = ?",
            (job_id, target, key_bytes(key)),
        ).fetchone()
        return self._with_digests(job_id, row) if row else None

    def count_states(self, job_id: str) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT state, COUNT(*) AS n FROM items WHERE job_id = ? GROUP BY state",
            (job_id,),
        ).fetchall()
        return {row["state"]: row["n"] for row in rows}

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a read-only aggregate query (summaries, certificates)."""
        return self._db.execute(sql, parameters).fetchall()

    # Target-wide steps and re-verification

    def add_step(
        self, job_id: str, target: int, name: str, status: str, detail: str
    ) -> None:
        self._write(
            "INSERT INTO steps (job_id, target, name, status, detail, at) VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, target, name, status, detail, now()),
        )

    def steps(self, job_id: str) -> list[sqlite3.Row]:
        return self.query(
            "SELECT * FROM steps WHERE job_id = ? ORDER BY rowid", (job_id,)
        )

    def add_recheck(
        self, job_id: str, target: int, key: str, verified: bool, evidence: Any
    ) -> None:
        self._write(
            "INSERT INTO rechecks (job_id, target, key, at, verified, evidence) VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, target, key_bytes(key), now(), int(verified), dumps(evidence)),
        )


class Checkpoints:
    """The checkpoints table, which plugins write from their own threads.

    A plugin saves a checkpoint from its I/O threads, while the engine's
    connection belongs to the thread that opened it. This class therefore
    keeps a second connection to the same journal and runs one statement
    at a time under a lock. Each save commits before it returns.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, timeout=30, check_same_thread=False
            )
            self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as error:
            raise JournalError(f"cannot open the journal {path}: {error}") from error

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def for_target(self, job_id: str, target: int) -> TargetCheckpoints:
        return TargetCheckpoints(self, job_id, target)

    def load(self, job_id: str, target: int, key: str) -> Mapping[str, Any] | None:
        row = self._execute(
            "SELECT data FROM checkpoints WHERE job_id = ? AND target = ? AND key = ?",
            (job_id, target, key_bytes(key)),
        )
        return json.loads(row[0]) if row else None

    def save(
        self, job_id: str, target: int, key: str, data: Mapping[str, Any] | None
    ) -> None:
        if data is None:
            sql = "DELETE FROM checkpoints WHERE job_id = ? AND target = ? AND key = ?"
            parameters: tuple[Any, ...] = (job_id, target, key_bytes(key))
        else:
            sql = (
                "INSERT OR REPLACE INTO checkpoints (job_id, target, key, data, updated)"
                " VALUES (?, ?, ?, ?, ?)"
            )
            parameters = (job_id, target, key_bytes(key), dumps(data), now())
        self._execute(sql, parameters)

    def clear(self, job_id: str) -> None:
        """Delete every checkpoint of a job, once the job has finished."""
        self._execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))

    def _execute(self, sql: str, parameters: Sequence[Any]) -> Any:
        """Run one statement in autocommit mode; return its first row, if any."""
        try:
            with self._lock:
                return self._db.execute(sql, parameters).fetchone()
        except sqlite3.Error as error:
            raise JournalError(
                f"cannot access the checkpoints in the journal {self.path}: {error}"
            ) from error


@dataclass(frozen=True)
class TargetCheckpoints:
    """The :class:`~plugins.base.CheckpointStore` of one target of one job."""

    table: Checkpoints
    job_id: str
    target: int

    def load(self, key: str) -> Mapping[str, Any] | None:
        return self.table.load(self.job_id, self.target, key)

    def save(self, key: str, data: Mapping[str, Any] | None) -> None:
        self.table.save(self.job_id, self.target, key, data)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


_ITEM_COLUMNS = frozenset(
    (
        "id",
        "target",
        "key",
        "kind",
        "size",
        "label",
        "identity",
        "attributes",
        "classification",
        "method",
        "params",
        "refusal",
        "residual",
        "state",
        "detail",
        "plan_hash",
        "evidence",
        "fingerprints",
        "bytes_done",
        "updated",
    )
)


_COLUMNS_BUT_FINGERPRINTS = tuple(sorted(_ITEM_COLUMNS - {"fingerprints"}))


def _item_row(row: sqlite3.Row) -> ItemRow:
    refusal = row["refusal"]
    evidence = row["evidence"]
    fingerprints = row["fingerprints"] if "fingerprints" in row.keys() else "[]"
    return ItemRow(
        target=row["target"],
        key=key_text(row["key"]),
        kind=row["kind"],
        size=row["size"],
        label=row["label"],
        identity=loads(row["identity"]),
        attributes=loads(row["attributes"]),
        classification=row["classification"],
        method=row["method"],
        params=loads(row["params"]),
        refusal=loads(refusal) if refusal else None,
        residual=residual_from_json(row["residual"]),
        state=row["state"],
        detail=row["detail"],
        evidence=loads(evidence) if evidence else None,
        fingerprints=tuple(loads(fingerprints)),
        bytes_done=row["bytes_done"],
        row_id=row["id"],
    )
