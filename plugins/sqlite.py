"""SQLite rows: delete with secure_delete, clean full-text indexes, VACUUM.

Target: ``sqlite:///path/app.db?table=customers&where=id = ?&param=42``.
The WHERE clause uses SQLite placeholders (``?`` or ``:name``) and its values
travel as bind parameters. After the deletes the plugin optimizes every
FTS3/4/5 index, runs VACUUM with temporary files in memory, and truncates the
write-ahead log with ``wal_checkpoint(TRUNCATE)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from plugins import _rows
from plugins.base import JobContext, PurgeResult, Target, TargetInfo
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    NotSupported,
    PluginError,
    PurgeFailed,
    TargetNotFound,
)

#: Seconds a statement waits for another connection's lock before failing.
DEFAULT_LOCK_TIMEOUT = 5.0


#: An SQL name as a trigger's text may spell it: quoted in one of SQLite's
#: three ways, or bare.
_NAME = r'(?:"(?:[^"]|"")*"|\[[^\]]*\]|`(?:[^`]|``)*`|[^\s"\[`(),;.]+)'
_TRIGGER_EVENT = re.compile(
    rf"^\s*CREATE\s+(?:TEMP(?:ORARY)?\s+)?TRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?:{_NAME}\s*\.\s*)?{_NAME}\s+(?:BEFORE\s+|AFTER\s+|INSTEAD\s+OF\s+)?"
    r"(DELETE|INSERT|UPDATE)\b",
    re.IGNORECASE,
)
# NOTE: A write that this pattern misses, such as one inside an
# application-defined SQL function, leaves its table counted as surviving rows.
_TRIGGER_WRITE = re.compile(
    rf"\b(?:INSERT|REPLACE|UPDATE)\s+(?:OR\s+\w+\s+)?(?:INTO\s+)?"
    rf"(?:{_NAME}\s*\.\s*)?({_NAME})",
    re.IGNORECASE,
)


class _Trigger(NamedTuple):
    """A trigger of the database file, read from its CREATE TRIGGER text."""

    name: str
    #: "delete", "insert" or "update", or "" when the text did not parse. A
    #: trigger whose text did not parse is treated as firing on every event.
    event: str
    #: Names of the tables and views its statements insert into or update.
    writes: tuple[str, ...]


def _parse_trigger(name: str, sql: str) -> _Trigger:
    header = _TRIGGER_EVENT.match(sql)
    body = sql[header.end() :] if header else sql
    writes = tuple(_unquote(found) for found in _TRIGGER_WRITE.findall(body))
    return _Trigger(name, header.group(1).lower() if header else "", writes)


def _unquote(name: str) -> str:
    if name[:1] == '"':
        return name[1:-1].replace('""', '"')
    if name[:1] == "`":
        return name[1:-1].replace("``", "`")
    if name[:1] == "[":
        return name[1:-1]
    return name


class _Changed(Exception):
    """Rolls back a grouped delete whose rows may not be the ones discovery read."""


def _json_safe(value: Any) -> bool:
    """Tell whether a key value reaches SQLite unchanged through json_each().

    SQLite 3.40 cuts a JSON string at an escaped NUL character, so the key
    "a\\u0000b" would delete the row with the key "a".
    """
    kind = type(value)
    return kind is int or (kind is str and "\0" not in value)


class SQLitePlugin(_rows.RowStorePlugin):
    """Rows of one table in an SQLite database file."""

    name = "sqlite"
    schemes = ("sqlite",)
    default_lock_timeout = DEFAULT_LOCK_TIMEOUT
    placeholder = "?"
    #: Each transaction copies the pages it changes to the rollback journal,
    #: and rows in key order still touch index pages all over the file, so
    #: fewer transactions copy fewer pages. Deleting 100,000 rows took 0.32 s
    #: in one batch against 0.45 to 0.48 s in batches of 20,000.
    batch_size = 100_000

    def __init__(self, target: Target, context: JobContext) -> None:
        super().__init__(target, context)
        parts = target.parts
        if parts.netloc:
            raise InvalidTarget(
                f"SQLite target {target.url!r} has a host part; write sqlite:///ABSOLUTE/PATH"
            )
        path = urllib.parse.unquote(parts.path)
        # sqlite:///srv/app.db and sqlite:////srv/app.db both name /srv/app.db.
        self.path = "/" + path.lstrip("/") if path.strip("/") else ""
        if not self.path:
            raise InvalidTarget(f"SQLite target {target.url!r} names no file")
        self.connection: sqlite3.Connection | None = None
        self.journal_mode = ""
        self.build_secure_delete = 0
        self._fts5_secure_delete: dict[str, bool] = {}
        self._fts_cache: dict[str, str] | None = None
        # PRAGMA data_version as discovery started to read the selection.
        self._selection_version: int | None = None

    # -- connection ---------------------------------------------------------

    def connect(self) -> None:
        if self.connection is not None:
            return
        if not os.path.isfile(self.path):
            raise TargetNotFound(f"SQLite database {self.path} does not exist")
        uri = f"file:{urllib.parse.quote(self.path)}?mode=rw"
        self.connection = sqlite3.connect(
            uri, uri=True, isolation_level=None, timeout=self.lock_timeout
        )
        conn = self.connection
        self.build_secure_delete = conn.execute("PRAGMA secure_delete").fetchone()[0]
        # Builds differ in the default, so set it explicitly: freed cells and
        # pages are then overwritten with zeros.
        conn.execute("PRAGMA secure_delete = ON")
        if conn.execute("PRAGMA secure_delete").fetchone()[0] != 1:
            raise PurgeFailed(
                f"SQLite did not turn secure_delete on for {self.path}; this build "
                "fixes it off, so purge with a Python linked to another SQLite"
            )
        conn.execute("PRAGMA foreign_keys = ON")
        # VACUUM's temporary copy of the database would otherwise land, and
        # be unlinked, in the temporary directory.
        conn.execute("PRAGMA temp_store = MEMORY")
        self.journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
        if self.journal_mode == "persist":
            # A persistent journal keeps old page images after commit.
            self.journal_mode = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]

    def close_connections(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def translate(self, error: Exception, action: str) -> PluginError:
        self.log.debug("driver error", action=action, exc_info=error)
        message = str(error)
        lowered = message.lower()
        where = f"could not {action} on {self.path}"
        if isinstance(error, PluginError):
            return error
        if "locked" in lowered or "busy" in lowered:
            return PurgeFailed(
                f"{where}: the database is locked by another connection "
                f"(waited {self.lock_timeout:g} s); finish or close that connection "
                "and run the purge again"
            )
        if "no such table" in lowered or "no such column" in lowered:
            return TargetNotFound(f"{where}: {message}; check the table and WHERE clause")
        if "readonly" in lowered or "read-only" in lowered:
            return AccessDenied(
                f"{where}: the database is read-only ({message}); run with write access"
            )
        if "unable to open" in lowered:
            return AccessDenied(f"{where}: {message}; check the path and its permissions")
        if isinstance(error, sqlite3.ProgrammingError) and "binding" in lowered:
            return InvalidTarget(
                f"{where}: the WHERE placeholders do not match 'params' ({message})"
            )
        if isinstance(error, sqlite3.IntegrityError):
            # SQLite names no key, and delete_dependents only follows
            # RESTRICT and NO ACTION keys, so the advice covers SET DEFAULT.
            return PurgeFailed(
                f"{where}: a constraint rejected the delete ({message}); "
                "set delete_dependents: true for RESTRICT or NO ACTION keys, give "
                "each ON DELETE SET DEFAULT key a default that names an existing "
                "row, or remove the referencing rows first"
            )
        if "not a database" in lowered:
            return InvalidTarget(f"{self.path} is not an SQLite database ({message})")
        return PurgeFailed(f"{where}: {message}")

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    @property
    def conn(self) -> sqlite3.Connection:
        if self.connection is None:
            self.connect()
        assert self.connection is not None
        return self.connection

    # -- catalog ------------------------------------------------------------

    def _schema(self) -> list[tuple[str, str]]:
        return self.conn.execute(
            "SELECT name, COALESCE(sql, '') FROM sqlite_schema "
            "WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        ).fetchall()

    def _fts_tables(self) -> dict[str, str]:
        """Map each FTS virtual table to its module (fts3, fts4 or fts5)."""
        found = {}
        for name, sql in self._schema():
            text = sql.lower()
            if text.startswith("create virtual table"):
                for module in ("fts5", "fts4", "fts3"):
                    if f"using {module}" in text:
                        found[name] = module
                        break
        return found

    def full_text_indexed(self, table: str) -> bool:
        # An external-content FTS table may index any table, so any FTS
        # table in the file counts.
        if self._fts_cache is None:
            self._fts_cache = self._fts_tables()
        return bool(self._fts_cache)

    def _shadow_tables(self) -> set[str]:
        # SQLite 3.37 and later mark shadow tables in PRAGMA table_list. Older
        # builds fall back to a guess by name, which also takes a user table
        # named like a shadow table ("docs_archive" beside "docs") for one.
        try:
            return {
                row[1]
                for row in self.conn.execute("PRAGMA main.table_list")
                if row[2] == "shadow"
            }
        except sqlite3.DatabaseError:
            self.log.debug("PRAGMA table_list unavailable", version=sqlite3.sqlite_version)
        virtual = [
            name for name, sql in self._schema() if sql.lower().startswith("create virtual")
        ]
        return {
            name
            for name, _ in self._schema()
            if any(name.startswith(f"{owner}_") for owner in virtual)
        }

    def load_table(self, name: str) -> _rows.TableInfo:
        real = self.conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ? COLLATE NOCASE",
            (name,),
        ).fetchone()
        if real is None:
            self._reject_view(name)
            raise TargetNotFound(
                f"table {name!r} does not exist in {self.path}; "
                "check the 'table' option (names are case-insensitive)"
            )
        table = real[0]
        self._reject_internal(table)
        info = self.conn.execute(f"PRAGMA table_info({self.quote(table)})").fetchall()
        columns = [row[1] for row in info]
        key = [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5] > 0]
        implicit = not key
        if implicit:
            # Tables created WITHOUT ROWID always have a primary key, so every
            # table without one has a rowid. VACUUM may renumber it.
            key = [self._rowid_name(table, columns)]
        indexes = [
            row[1] for row in self.conn.execute(f"PRAGMA index_list({self.quote(table)})")
        ]
        return _rows.TableInfo(
            table, columns, key, indexes, self._foreign_keys_to(table, key), implicit
        )

    def _reject_view(self, name: str) -> None:
        """Raise InvalidTarget when ``name`` is a view, whose rows live in other tables."""
        view = self.conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'view' AND name = ? COLLATE NOCASE",
            (name,),
        ).fetchone()
        if view is not None:
            raise InvalidTarget(
                f"{view[0]} in {self.path} is a view, and its rows are stored in the "
                "tables it reads; name the table it reads in the 'table' option"
            )

    def _rowid_name(self, table: str, columns: list[str]) -> str:
        """Return a name of the table's rowid that no column of the table takes.

        A column named "rowid" hides the rowid under that name, and deleting
        by it would delete every row sharing the column's value.
        """
        used = {column.lower() for column in columns}
        for name in ("rowid", "_rowid_", "oid"):
            if name not in used:
                return name
        raise NotSupported(
            f"table {table} of {self.path} has no primary key, and its columns "
            "rowid, _rowid_ and oid hide the rowid, so its rows cannot be "
            "addressed one by one; add a primary key or rename one of those columns"
        )

    def _reject_internal(self, table: str) -> None:
        """Raise InvalidTarget for a table that SQLite or a virtual table maintains."""
        if table.lower().startswith("sqlite_"):
            raise InvalidTarget(
                f"table {table} of {self.path} is internal to SQLite, and deleting its "
                "rows would damage the database; name a user table in the 'table' option"
            )
        if table in self._shadow_tables():
            raise InvalidTarget(
                f"table {table} of {self.path} is a shadow table that a virtual table "
                "(such as a full-text index) maintains; name the virtual table or the "
                "table it indexes in the 'table' option"
            )

    def _foreign_keys_to(self, parent: str, parent_key: list[str]) -> list[_rows.ForeignKey]:
        found = []
        for child, _ in self._schema():
            groups: dict[int, list[tuple]] = {}
            for row in self.conn.execute(f"PRAGMA foreign_key_list({self.quote(child)})"):
                if row[2].lower() == parent.lower():
                    groups.setdefault(row[0], []).append(row)
            for rows in groups.values():
                rows.sort(key=lambda row: row[1])
                targets = tuple(row[4] for row in rows)
                if any(target is None for target in targets):
                    targets = tuple(parent_key)
                found.append(
                    _rows.ForeignKey(
                        child,
                        tuple(row[3] for row in rows),
                        parent,
                        targets,
                        rows[0][6].lower(),
                    )
                )
        return found

    def _triggers_on(self, table: str) -> list[_Trigger]:
        rows = self.conn.execute(
            "SELECT name, COALESCE(sql, '') FROM sqlite_schema "
            "WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE ORDER BY name",
            (table,),
        ).fetchall()
        return [_parse_trigger(name, sql) for name, sql in rows]

    def _delete_triggers(self, table: str) -> list[_Trigger]:
        return [
            trigger for trigger in self._triggers_on(table) if trigger.event in ("delete", "")
        ]

    def trigger_written_tables(self, tables: Sequence[str]) -> set[str]:
        # A written table or view may have triggers of its own (an INSTEAD
        # OF trigger of a view, an AFTER INSERT trigger), and those fire on
        # any event, so the search follows them too.
        pending = [(name, True) for name in tables]
        followed: set[tuple[str, bool]] = set()
        written: set[str] = set()
        while pending:
            name, deletes_only = pending.pop()
            if (name.lower(), deletes_only) in followed:
                continue
            followed.add((name.lower(), deletes_only))
            triggers = self._delete_triggers(name) if deletes_only else self._triggers_on(name)
            for trigger in triggers:
                for target in trigger.writes:
                    written.add(target.lower())
                    pending.append((target, False))
        return {name for name, _ in self._schema() if name.lower() in written}

    def user_tables(self) -> list[str]:
        shadows = self._shadow_tables()
        return [name for name, _ in self._schema() if name not in shadows]

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def stream(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Iterator[tuple]:
        # An SQLite cursor steps the statement row by row as it is iterated.
        cursor = self.conn.cursor()
        try:
            yield from cursor.execute(sql, params)
        finally:
            cursor.close()

    @contextlib.contextmanager
    def read_only(self) -> Iterator[None]:
        before = self.conn.execute("PRAGMA query_only").fetchone()[0]
        self.conn.execute("PRAGMA query_only = ON")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA query_only = {int(before)}")

    def is_read_only_error(self, error: Exception) -> bool:
        return isinstance(error, sqlite3.OperationalError) and "readonly" in str(error)

    def selection_starting(self) -> None:
        # Read before the statement starts: in WAL mode another connection
        # can commit while the rows stream from an older snapshot, and a
        # version read afterwards would already count that commit.
        self._selection_version = self._data_version()

    def unchanged_since_selection(self) -> bool:
        # PRAGMA data_version changes when another connection commits to the
        # file, and never for this connection's own changes.
        return (
            self._selection_version is not None
            and self._data_version() == self._selection_version
        )

    def _data_version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    # -- purge --------------------------------------------------------------

    @contextlib.contextmanager
    def purge_transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock first, so no other connection can
        # change or renumber a row between its re-read and its delete.
        self._enable_fts5_secure_delete()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            # Rows of one table that reference each other in a cycle can only
            # go together, so NO ACTION keys are checked at COMMIT instead of
            # after each DELETE. RESTRICT keys are still checked at once.
            self.conn.execute("PRAGMA defer_foreign_keys = ON")
            yield
            # A COMMIT that a deferred key rejects leaves the transaction
            # open, so the handler below rolls it back.
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def delete_rows(self, table: _rows.TableInfo, keys: Sequence[Sequence[Any]]) -> int:
        condition = " AND ".join(f"{self.quote(col)} = ?" for col in table.key)
        sql = f"DELETE FROM {self.quote(table.name)} WHERE {condition}"
        # A savepoint undoes the rows deleted before a failing one, so the
        # batch is deleted whole or not at all.
        self.conn.execute("SAVEPOINT lethe_delete")
        try:
            cursor = self.conn.executemany(sql, [tuple(key) for key in keys])
        except BaseException:
            self.conn.execute("ROLLBACK TO lethe_delete")
            self.conn.execute("RELEASE lethe_delete")
            raise
        self.conn.execute("RELEASE lethe_delete")
        return cursor.rowcount

    def delete_group_rows(
        self,
        table: _rows.TableInfo,
        keys: Sequence[Sequence[Any]],
        digests: Sequence[str],
        versions: Sequence[Any] | None,
    ) -> set[int] | None:
        # Without another connection's commit since discovery, every row is
        # still at its key with the digest discovery read, so the rows are
        # deleted by key without reading them again.
        try:
            with self.purge_transaction():
                if not self.unchanged_since_selection():
                    raise _Changed
                if self._delete_keys(table, keys) != len(keys):
                    # No other connection committed, so the keys do not
                    # address the planned rows one to one. Every later
                    # purge of this plugin reads the rows again.
                    self._selection_version = None
                    raise _Changed
        except _Changed:
            return None
        return set(range(len(keys)))

    def _delete_keys(
        self, table: _rows.TableInfo, keys: Sequence[Sequence[Any]]
    ) -> int:
        """Delete the rows at ``keys`` and return how many the statements deleted.

        The count leaves out rows that triggers deleted.
        """
        column = table.key[0]
        if len(table.key) == 1 and all(_json_safe(key[0]) for key in keys):
            # One statement reads the keys from a JSON array, which is cheaper
            # than a statement per key.
            cursor = self.conn.execute(
                f"DELETE FROM {self.quote(table.name)} WHERE {self.quote(column)} IN "
                "(SELECT value FROM json_each(?))",
                (json.dumps([key[0] for key in keys]),),
            )
            return cursor.rowcount
        return self.delete_rows(table, keys)

    def _enable_fts5_secure_delete(self) -> None:
        """Turn on FTS5 secure-delete where the library supports it (3.42+).

        With it, a delete removes the row's terms from the index instead of
        adding a delete marker that leaves the terms in place until a merge.
        """
        for name, module in self._fts_tables().items():
            if module != "fts5" or name in self._fts5_secure_delete:
                continue
            table = self.quote(name)
            try:
                self.conn.execute(
                    f"INSERT INTO {table}({table}, rank) VALUES ('secure-delete', 1)"
                )
                self._fts5_secure_delete[name] = True
            except sqlite3.DatabaseError:
                self._fts5_secure_delete[name] = False

    def compaction_steps(self) -> Iterator[PurgeResult]:
        for name, module in self._fts_tables().items():
            yield self.step(
                f"fts-optimize:{name}",
                lambda name=name: self._optimize_fts(name),
                f"merged the {module} index of {name} so deleted terms leave its shadow tables",
            )
        yield self.step(
            "vacuum",
            lambda: self.conn.execute("VACUUM") and None,
            "rebuilt the database file without free pages",
        )
        if self.journal_mode == "wal":
            yield self.step(
                "wal-checkpoint",
                self._checkpoint,
                "copied the write-ahead log into the database and truncated it",
            )

    def _optimize_fts(self, name: str) -> dict[str, Any]:
        table = self.quote(name)
        self.conn.execute(f"INSERT INTO {table}({table}) VALUES ('optimize')")
        return {"secure_delete": self._fts5_secure_delete.get(name, False)}

    def _checkpoint(self) -> dict[str, Any]:
        busy, frames, copied = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            holders = self.open_by_others()
            who = ", ".join(holders) if holders else "another connection of this process"
            raise PurgeFailed(
                f"the write-ahead log of {self.path} could not be checkpointed because "
                f"another connection holds a read transaction ({who}); old pages stay "
                "in the -wal file until it closes, then run the purge again"
            )
        return {"wal_frames": frames, "checkpointed": copied}

    def open_by_others(self) -> list[str]:
        """List processes other than this one that have the database open."""
        import psutil

        paths = set(self._companion_files())
        holders = []
        for process in psutil.process_iter(["pid", "name"]):
            if process.pid == os.getpid():
                continue
            try:
                files = process.open_files()
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            if any(os.path.realpath(entry.path) in paths for entry in files):
                holders.append(f"pid {process.pid} ({process.info['name']})")
        return holders

    # -- plan facts and verification -----------------------------------------

    def engine_info(self) -> TargetInfo:
        page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        notes = [
            f"SQLite {sqlite3.sqlite_version}, journal mode {self.journal_mode}, "
            f"{pages} pages of {page_size} bytes, {free} free",
            "secure_delete was "
            + ("on" if self.build_secure_delete else "off")
            + " by default in this build; the purge turns it on",
        ]
        fts = self._fts_tables()
        if fts:
            notes.append(
                "full-text indexes with shadow tables: "
                + ", ".join(f"{name} ({module})" for name, module in fts.items())
            )
        holders = self.open_by_others()
        if holders:
            notes.append(
                "other processes have the database open and may block the "
                f"checkpoint: {', '.join(holders)}"
            )
        directory = os.path.dirname(os.path.realpath(self.path))
        residual = [
            "VACUUM rewrites the file in place, but old pages written to the -wal or "
            "-journal file before they were truncated or unlinked stay in free blocks "
            f"of the filesystem holding {directory}; wipe its free space as a "
            "follow-up step",
            f"copies and backups of {self.path} made before the purge",
        ]
        residual.extend(self._trigger_residual(self.table(self.selection.table).name))
        media = {
            "engine": "sqlite",
            "version": sqlite3.sqlite_version,
            "path": self.path,
            "size": os.path.getsize(self.path),
        }
        return TargetInfo(media=media, notes=tuple(notes), residual=tuple(residual))

    def _trigger_residual(self, table: str) -> list[str]:
        """Return a residual risk naming the DELETE triggers of ``table``, if it has any."""
        triggers = self._delete_triggers(table)
        if not triggers:
            return []
        names = ", ".join(trigger.name for trigger in triggers)
        written = sorted(self.trigger_written_tables([table]))
        into = f" ({', '.join(written)})" if written else ""
        return [
            f"DELETE triggers on {table} ({names}) run for every purged row. What "
            f"they write to other tables{into}, such as an archive copy, is not "
            "purged, and the byte scan reports it as residue. Review or drop the "
            "triggers before the purge"
        ]

    def data_files(self) -> tuple[list[str], str | None]:
        return [path for path in self._companion_files() if os.path.exists(path)], None

    def _companion_files(self) -> list[str]:
        """Return the database file and its -wal and -journal paths, symlinks resolved.

        SQLite resolves a symlinked database path and names the -wal and
        -journal files after the real file, so they sit beside it.
        """
        real = os.path.realpath(self.path)
        return [real + suffix for suffix in ("", "-wal", "-journal")]
