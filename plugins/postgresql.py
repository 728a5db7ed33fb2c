"""PostgreSQL rows: delete, rewrite table and statistics, checkpoint, switch WAL.

Target: ``postgresql://user@host:5432/db?table=public.customers&where=id = %s``.
The WHERE clause uses psycopg placeholders (``%s`` or ``%(name)s``) and its
values travel as bind parameters. After the deletes the plugin rewrites each
touched table with VACUUM FULL (heap, TOAST and indexes get new files),
refreshes its statistics with ANALYZE and rewrites ``pg_statistic`` so old
most-common values leave its dead tuples, then runs CHECKPOINT and
``pg_switch_wal()``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from plugins import _rows
from plugins.base import JobContext, Method, PlannedItem, PurgeResult, Target, TargetInfo
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    MissingDependency,
    NotSupported,
    PluginError,
    PurgeFailed,
    TargetNotFound,
    TargetUnreachable,
)

#: Seconds a statement waits for a lock before it fails.
DEFAULT_LOCK_TIMEOUT = 10.0
#: Rows per chunk when reading the selection (per FETCH of a server-side
#: cursor where libpq lacks chunked-rows mode).
FETCH_SIZE = 2000
#: First libpq version (17) with chunked-rows mode, as ``pq.version()`` gives it.
CHUNKED_ROWS_LIBPQ = 170000
#: VACUUM FULL runs while open snapshots force it to keep deleted rows.
VACUUM_ATTEMPTS = 5
#: SQLSTATE of a write attempted in a read-only transaction.
READ_ONLY_SQL_TRANSACTION = "25006"
#: Seconds between those runs.
VACUUM_RETRY_DELAY = 2.0
_KEPT_DEAD = re.compile(r"(\d+) dead row versions cannot be removed yet")

#: Session settings that fix the text form of values, which row digests hash.
_TEXT_SETTINGS = {
    "DateStyle": "'ISO, YMD'",
    "IntervalStyle": "'postgres'",
    "TimeZone": "'UTC'",
    "extra_float_digits": "1",
    "bytea_output": "'hex'",
}

#: Schemas of the system catalogs, whose rows a purge must never delete.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")

_DELETE_ACTIONS = {
    "a": "no action",
    "r": "restrict",
    "c": "cascade",
    "n": "set null",
    "d": "set default",
}


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise MissingDependency(
            "the PostgreSQL plugin needs psycopg; install it with "
            "pip install 'lethe[postgresql]'"
        ) from None
    return psycopg


class PostgreSQLPlugin(_rows.ServerDigests, _rows.RowStorePlugin):
    """Rows of one table in a PostgreSQL database."""

    name = "postgresql"
    schemes = ("postgresql", "postgres")
    requires = ("psycopg",)
    default_lock_timeout = DEFAULT_LOCK_TIMEOUT
    placeholder = "%s"

    def __init__(self, target: Target, context: JobContext) -> None:
        super().__init__(target, context)
        parts = target.parts
        if not parts.path.strip("/"):
            raise InvalidTarget(
                f"PostgreSQL target {self.redacted_url()!r} names no database; "
                "write postgresql://USER@HOST/DATABASE?table=NAME"
            )
        self.database = urllib.parse.unquote(parts.path.strip("/"))
        self.conninfo = urllib.parse.urlunsplit(
            ("postgresql", parts.netloc, parts.path, "", "")
        )
        self.connection: Any = None
        self.reader: Any = None
        self._oids: dict[str, int] = {}
        self.privileges: dict[str, bool] = {}
        self._full_text: dict[str, bool] = {}
        self._key_types: dict[str, list[str]] = {}
        # Tables by whether other tables inherit from them, see rows_of().
        self._inherited_from: dict[str, bool] = {}

    # -- connection ---------------------------------------------------------

    def connect(self) -> None:
        if self.connection is not None:
            return
        psycopg = _psycopg()
        self.connection = psycopg.connect(self.conninfo, autocommit=True)
        self.reader = psycopg.connect(self.conninfo)
        self._load_privileges()
        timeout_ms = int(self.lock_timeout * 1000)
        for conn in (self.connection, self.reader):
            conn.execute(f"SET lock_timeout = {timeout_ms}")
            # Row digests are taken from the rows' text form, which these
            # settings shape; fixing them keeps a digest stable across runs.
            for setting, value in _TEXT_SETTINGS.items():
                conn.execute(f"SET {setting} = {value}")
            if self.privileges["superuser"]:
                # Keep this session's statements, and with them any bind
                # parameter, out of the server log.
                conn.execute("SET log_statement = 'none'")
                conn.execute("SET log_min_duration_statement = -1")
        self.reader.commit()
        # The reader only streams selections and surviving rows.
        self.reader.read_only = True

    @contextlib.contextmanager
    def read_only(self) -> Iterator[None]:
        # The old value is restored, so a database set read-only by default
        # still rejects the purge's deletes.
        before = self.conn.execute("SHOW default_transaction_read_only").fetchone()[0]
        self.conn.execute("SET default_transaction_read_only = on")
        try:
            yield
        finally:
            self.conn.execute(
                "SELECT set_config('default_transaction_read_only', %s, false)", (before,)
            )

    def is_read_only_error(self, error: Exception) -> bool:
        return getattr(error, "sqlstate", None) == READ_ONLY_SQL_TRANSACTION

    def _load_privileges(self) -> None:
        row = self.connection.execute(
            "SELECT rolsuper, pg_has_role(current_user, 'pg_checkpoint', 'MEMBER'), "
            "has_function_privilege('pg_switch_wal()', 'EXECUTE'), "
            "pg_has_role(current_user, 'pg_read_all_settings', 'MEMBER'), "
            "pg_is_in_recovery() "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        superuser, checkpoint, switch_wal, settings, recovery = row
        self.privileges = {
            "superuser": superuser,
            "checkpoint": superuser or checkpoint,
            "switch_wal": superuser or switch_wal,
            "read_settings": superuser or settings,
            "in_recovery": recovery,
        }

    def close_connections(self) -> None:
        for conn in (self.reader, self.connection):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    self.log.debug("close failed", exc_info=True)
        self.connection = self.reader = None

    @property
    def conn(self) -> Any:
        if self.connection is None:
            self.connect()
        return self.connection

    def translate(self, error: Exception, action: str) -> PluginError:
        if isinstance(error, PluginError):
            return error
        self.log.debug("driver error", action=action, exc_info=error)
        psycopg = _psycopg()
        errors = psycopg.errors
        where = f"could not {action} in database {self.database}"
        summary = _summary(error)
        if isinstance(error, (errors.LockNotAvailable, errors.DeadlockDetected)):
            return PurgeFailed(
                f"{where}: timed out after {self.lock_timeout:g} s waiting for a lock "
                "held by another session; end that session's transaction and run the "
                "purge again"
            )
        if isinstance(error, errors.ReadOnlySqlTransaction):
            return AccessDenied(
                f"{where}: the server accepts only reads (a standby or "
                "default_transaction_read_only); point the target at the primary"
            )
        if isinstance(error, (errors.UndefinedTable, errors.UndefinedColumn)):
            return TargetNotFound(f"{where}: {summary}; check the table and WHERE clause")
        if isinstance(error, errors.InsufficientPrivilege):
            return AccessDenied(f"{where}: {summary}; grant the privilege or run as the owner")
        if isinstance(error, errors.IntegrityError):
            return PurgeFailed(
                f"{where}: a constraint rejected the statement ({summary}); set "
                "delete_dependents: true or remove the referencing rows first"
            )
        if isinstance(error, psycopg.DataError):
            # The primary message of a data exception quotes the rejected
            # input, which is often a bind parameter naming the rows.
            return InvalidTarget(
                f"{where}: a value was rejected ({type(error).__name__}, SQLSTATE "
                f"{error.sqlstate}); check that each value in 'params' has the type of "
                "what the WHERE clause compares it with"
            )
        if isinstance(error, errors.FeatureNotSupported) and "RETURNING" in summary:
            # The purge deletes with DELETE ... RETURNING, which the server
            # rejects when a DO INSTEAD rule for DELETE lacks a RETURNING clause.
            return PurgeFailed(
                f"{where}: a rule for DELETE on the table rewrites the purge's delete "
                f"({summary}); drop that rule or disable it for the purge with "
                "ALTER TABLE ... DISABLE RULE, then run the purge again"
            )
        if (getattr(error, "sqlstate", None) or "").startswith("42"):
            # Class 42: syntax error or access rule violation.
            return InvalidTarget(f"{where}: the WHERE clause is invalid ({summary})")
        placeholder_error = isinstance(error, (psycopg.ProgrammingError, TypeError))
        if placeholder_error and "placeholder" in summary:
            return InvalidTarget(
                f"{where}: the WHERE placeholders do not match 'params' ({summary})"
            )
        if isinstance(error, psycopg.OperationalError) and action == "connect":
            # Nothing was deleted yet, so the message is about the URL only.
            failure = TargetNotFound if "does not exist" in summary else TargetUnreachable
            return failure(
                f"could not connect to {self.redacted_url()} ({summary}); check the "
                "host, port, user, password and database name in the target URL"
            )
        if isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
            return TargetUnreachable(
                f"{where}: the connection to {self.redacted_url()} failed ({summary}); "
                "rows whose results were reported purged are gone, the batch in "
                "flight was rolled back; run the purge again to finish"
            )
        return PurgeFailed(f"{where}: {summary}")

    def quote(self, name: str) -> str:
        return _quote_name(name)

    def quote_table(self, name: str) -> str:
        # Catalog names (see _catalog_name) split without a database lookup.
        schema, relation, _ = _split_name(name)
        if schema is None:
            return self.quote(relation)
        return f"{self.quote(schema)}.{self.quote(relation)}"

    def rows_of(self, name: str) -> str:
        # A statement on a table that other tables inherit from (INHERITS,
        # not partitioning) reads and deletes their rows too, with keys that
        # may repeat across the tables. VACUUM FULL of that table rewrites
        # none of their files, so the purge keeps to the table's own rows.
        if self._inherits_from(name):
            return f"ONLY {self.quote_table(name)}"
        return self.quote_table(name)

    def _inherits_from(self, name: str) -> bool:
        """Tell whether other tables inherit from the plain table ``name``."""
        found = self._inherited_from.get(name)
        if found is None:
            oid = self._oids.get(name)
            if oid is None:
                oid = self._oids[self.table(name).name]
            found = bool(
                self.conn.execute(
                    "SELECT 1 FROM pg_class c JOIN pg_inherits i ON i.inhparent = c.oid "
                    "WHERE c.oid = %s AND c.relkind = 'r' LIMIT 1",
                    (oid,),
                ).fetchone()
            )
            self._inherited_from[name] = found
        return found

    # -- catalog ------------------------------------------------------------

    def load_table(self, name: str) -> _rows.TableInfo:
        # Names this plugin read from the catalog are known by oid already.
        oid = self._oids.get(name)
        if oid is None:
            oid = self._resolve_table(name)
        namespace, relname = self.conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
            (oid,),
        ).fetchone()
        qualified = _catalog_name(namespace, relname)
        if namespace in SYSTEM_SCHEMAS or namespace.startswith("pg_toast"):
            raise InvalidTarget(
                f"table {qualified} is a system catalog, and deleting its rows would "
                "damage the database; name a table of a user schema in the 'table' option"
            )
        self._oids[qualified] = oid
        columns = [
            record[0]
            for record in self.conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum",
                (oid,),
            )
        ]
        key, key_types = self._primary_key(oid)
        if not key:
            key, key_types = self._row_identity(qualified, oid)
        self._key_types[qualified] = key_types
        indexes = [
            record[0]
            for record in self.conn.execute(
                "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s", (oid,)
            )
        ]
        table = _rows.TableInfo(qualified, columns, key, indexes, self._foreign_keys_to(oid))
        self._tables[qualified] = table
        return table

    def _resolve_table(self, name: str) -> int:
        """Return the oid of the table that the 'table' option ``name`` names.

        A name without double quotes names a table of that whole name on
        the search_path, or, split at its first dot, a table in a schema.
        When both exist, the name is ambiguous and rejected. A name with
        double quotes is read as an SQL name, [schema.]table, in which a
        quoted part may contain dots. Unquoted parts are matched as written,
        without folding to lower case.
        """
        try:
            schema, relation, quoted = _split_name(name)
        except ValueError as error:
            raise InvalidTarget(
                f"table name {name!r} is invalid ({error}); write TABLE or "
                'SCHEMA.TABLE, and double-quote a part that contains a dot or a '
                'double quote, as in public."a.b"'
            ) from None
        found = []
        if schema is None or not quoted:
            whole = relation if schema is None else name
            found += self.conn.execute(
                "SELECT n.nspname, c.relname, c.oid FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND c.relname = %s "
                "AND pg_table_is_visible(c.oid)",
                (whole,),
            ).fetchall()
        if schema is not None:
            found += self.conn.execute(
                "SELECT n.nspname, c.relname, c.oid FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname = %s AND c.relname = %s",
                (schema, relation),
            ).fetchall()
        if not found:
            hint = ""
            if "." in name:
                hint = (
                    ', and double-quote a schema or table name that contains a dot, '
                    'as in "my.schema".orders'
                )
            raise TargetNotFound(
                f"table {name!r} does not exist in database {self.database} "
                f"(or is not on the search_path); check the 'table' option{hint}"
            )
        if len(found) > 1:
            spellings = " or ".join(
                f"{self.quote(namespace)}.{self.quote(relname)}"
                for namespace, relname, _ in found
            )
            raise InvalidTarget(
                f"table name {name!r} is ambiguous in database {self.database}: it "
                f"names {len(found)} tables; write the one you mean with its double "
                f"quotes in the 'table' option: {spellings}"
            )
        return found[0][2]

    def _row_identity(self, qualified: str, oid: int) -> tuple[list[str], list[str]]:
        """Return ctid as the key of a table without a primary key.

        A ctid names a row version's place in the heap, and UPDATE, VACUUM
        FULL and CLUSTER move it. The purge therefore deletes such rows under
        a lock that blocks those statements, and matches each ctid with the
        row's digest. A partitioned table repeats ctids across partitions,
        so it is rejected.
        """
        kind = self.conn.execute("SELECT relkind FROM pg_class WHERE oid = %s", (oid,)).fetchone()
        if kind[0] == "p":
            raise NotSupported(
                f"partitioned table {qualified} has no primary key, and ctid does not "
                "identify a row across partitions; add a primary key or target each "
                "partition, then plan again"
            )
        return ["ctid"], ["tid"]

    def _primary_key(self, oid: int) -> tuple[list[str], list[str]]:
        rows = self.conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.position",
            (oid,),
        ).fetchall()
        return [row[0] for row in rows], [row[1] for row in rows]

    def _foreign_keys_to(self, oid: int) -> list[_rows.ForeignKey]:
        found = []
        rows = self.conn.execute(
            "SELECT n.nspname, c.relname, c.oid, pc.relname, pn.nspname, "
            "ARRAY(SELECT attname FROM unnest(f.conkey) WITH ORDINALITY k(num, pos) "
            "      JOIN pg_attribute ON attrelid = f.conrelid AND attnum = k.num "
            "      ORDER BY k.pos), "
            "ARRAY(SELECT attname FROM unnest(f.confkey) WITH ORDINALITY k(num, pos) "
            "      JOIN pg_attribute ON attrelid = f.confrelid AND attnum = k.num "
            "      ORDER BY k.pos), "
            "f.confdeltype "
            "FROM pg_constraint f "
            "JOIN pg_class c ON c.oid = f.conrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_class pc ON pc.oid = f.confrelid "
            "JOIN pg_namespace pn ON pn.oid = pc.relnamespace "
            "WHERE f.contype = 'f' AND f.confrelid = %s",
            (oid,),
        ).fetchall()
        for (
            child_schema,
            child_relname,
            child_oid,
            parent,
            parent_schema,
            child_columns,
            parent_columns,
            action,
        ) in rows:
            child = _catalog_name(child_schema, child_relname)
            self._oids.setdefault(child, child_oid)
            found.append(
                _rows.ForeignKey(
                    child,
                    tuple(child_columns),
                    _catalog_name(parent_schema, parent),
                    tuple(parent_columns),
                    _DELETE_ACTIONS.get(action, "no action"),
                )
            )
        return found

    def table(self, name: str) -> _rows.TableInfo:
        table = super().table(name)
        self._tables.setdefault(table.name, table)
        return table

    def full_text_indexed(self, table: str) -> bool:
        if table not in self._full_text:
            self._full_text[table] = bool(
                self.conn.execute(
                    "SELECT 1 FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                    "AND atttypid = 'tsvector'::regtype "
                    "UNION ALL SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = %s "
                    "AND a.amname IN ('gin', 'gist') LIMIT 1",
                    (self._oids[table], self._oids[table]),
                ).fetchone()
            )
        return self._full_text[table]

    def user_tables(self) -> list[str]:
        # Temporary tables of other sessions, and tables this role may not
        # SELECT, are left out, because the server refuses to read them. A
        # hit that only their rows would explain stays reported as residue.
        names = []
        for namespace, relname, oid, readable in self.conn.execute(
            "SELECT n.nspname, c.relname, c.oid, has_schema_privilege(n.oid, 'USAGE') "
            "AND has_table_privilege(c.oid, 'SELECT') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%%' "
            "AND NOT pg_is_other_temp_schema(n.oid)"
        ):
            name = _catalog_name(namespace, relname)
            if not readable:
                self.log.warning(
                    "surviving rows not read",
                    table=name,
                    error="no USAGE or SELECT privilege",
                )
                continue
            self._oids.setdefault(name, oid)
            names.append(name)
        return names

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple]:
        return self.conn.execute(sql, params or None).fetchall()

    def stream(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Iterator[tuple]:
        psycopg = _psycopg()
        if psycopg.pq.version() < CHUNKED_ROWS_LIBPQ:
            yield from self._stream_by_fetch(sql, params)
            return
        # In chunked-rows mode the server sends every row without waiting for
        # a FETCH per chunk. It computes the next rows' digests while this
        # process builds items from the rows already received.
        cursor = self.reader.cursor()
        try:
            yield from cursor.stream(sql, params or None, size=FETCH_SIZE)
        finally:
            cursor.close()
            self.reader.rollback()

    def _stream_by_fetch(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any]
    ) -> Iterator[tuple]:
        # A named cursor is a server-side cursor: rows arrive FETCH_SIZE at a
        # time inside the reader connection's transaction.
        cursor = self.reader.cursor(name=f"lethe_{id(self)}_{os.getpid()}")
        cursor.itersize = FETCH_SIZE
        try:
            cursor.execute(sql, params or None)
            yield from cursor
        finally:
            cursor.close()
            self.reader.rollback()

    # -- rows ---------------------------------------------------------------

    def _digest_sql(self, table: _rows.TableInfo, alias: str = "") -> str:
        """Return SQL computing a row's SHA-256 digest from its text form."""
        prefix = f"{alias}." if alias else ""
        values = ", ".join(prefix + self.quote(name) for name in table.columns)
        return f"encode(sha256(convert_to(ROW({values})::text, 'UTF8')), 'hex')"

    def select_list(self, table: _rows.TableInfo) -> str:
        # The server computes the digest, so no row is hashed in Python and
        # the purge can compare digests without reading the rows back.
        keys = ", ".join(self.quote(name) for name in table.key)
        values = ", ".join(self.quote(name) for name in table.columns)
        return f"{keys}, {self._digest_sql(table)}, {values}"

    def key_in(
        self, table: _rows.TableInfo, column: str, values: list[Any]
    ) -> tuple[str, list[Any]]:
        # One array parameter instead of thousands of placeholders to parse.
        if column == "ctid":
            return f"{self.quote(column)} = ANY(%s::tid[])", [values]
        kind = self._key_types.get(table.name, [None])[0]
        if kind is None:
            return f"{self.quote(column)} = ANY(%s)", [values]
        mark, param = _array_param(kind, values)
        return f"{self.quote(column)} = ANY({mark})", [param]

    # -- purge --------------------------------------------------------------

    def _purge_table(
        self, table: _rows.TableInfo, entries: list[PlannedItem]
    ) -> Iterator[PurgeResult]:
        """Delete the rows whose key and digest still match, in one statement.

        Rows that did not match are looked up again in the same transaction:
        a row still at its key changed since planning and fails. A row whose
        ctid is empty may have moved, so its digest is searched in the whole
        table, and only a digest found nowhere counts as already gone.
        """
        try:
            with self.conn.transaction():
                if table.key == ["ctid"]:
                    self.conn.execute(
                        f"LOCK TABLE {self.quote_table(table.name)} IN SHARE ROW EXCLUSIVE MODE"
                    )
                deleted = self._delete_matching(table, *_keys_and_digests(entries))
                rest = [entry for number, entry in enumerate(entries) if number not in deleted]
                changed = self._still_present(table, rest)
        except Exception as error:  # noqa: BLE001 - translated below
            failure = self.translate(error, f"delete {len(entries)} row(s) of {table.name}")
            if isinstance(failure, (TargetUnreachable, AccessDenied)):
                raise failure from None
            self.log.error("delete failed", table=table.name, rows=len(entries), error=str(failure))
            for entry in entries:
                yield PurgeResult(
                    entry.item.key,
                    "failed",
                    f"{_rows.as_sentence(failure)} The transaction was rolled back, so row "
                    f"{entry.item.key} is still present; run the purge again.",
                )
            return
        if deleted and table.name not in self._touched:
            self._touched.append(table.name)
        self.log.info("rows deleted", table=table.name, rows=len(deleted))
        for number, entry in enumerate(entries):
            if entry.item.key in changed:
                yield PurgeResult(entry.item.key, "failed", changed[entry.item.key])
                continue
            self.context.progress(entry.item.size)
            yield PurgeResult(
                entry.item.key,
                "purged",
                "deleted" if number in deleted else "already gone when the purge ran",
                bytes=entry.item.size,
                method=Method.DELETE_AND_COMPACT,
                facts=_rows.EMPTY_MAPPING,
            )

    def row_version_sql(self, table: _rows.TableInfo) -> str | None:
        # Every UPDATE writes a new row version with the updating
        # transaction's id, and a row's xmin keeps its value through
        # freezing and table rewrites, so an equal xmin at the same primary
        # key is the row discovery read. A ctid is not such a key. VACUUM
        # FULL and CLUSTER move rows and keep their xmin, so another row that
        # the same transaction loaded can take a planned row's ctid.
        if table.key == ["ctid"]:
            return None
        return "xmin::text"

    def delete_group_rows(
        self,
        table: _rows.TableInfo,
        keys: Sequence[Sequence[Any]],
        digests: Sequence[str],
        versions: Sequence[Any] | None,
    ) -> set[int] | None:
        with self.conn.transaction():
            if table.key == ["ctid"]:
                self.conn.execute(
                    f"LOCK TABLE {self.quote_table(table.name)} IN SHARE ROW EXCLUSIVE MODE"
                )
            if versions is not None:
                return self._delete_matching(table, keys, versions, by_version=True)
            return self._delete_matching(table, keys, digests)

    def _key_join(
        self, table: _rows.TableInfo, keys: Sequence[Sequence[Any]], digests: Sequence[str]
    ) -> tuple[str, str, list[Any]]:
        """Return an unnest() of the rows' keys and digests, numbered from 1 as p.n.

        Also returns the condition that matches a row x of the table with its
        entry p, and the parameters of both, in that order.
        """
        types = self._key_types[table.name]
        arrays = [[key[column] for key in keys] for column in range(len(types))]
        marks, params = [], []
        for kind, values in zip([*types, "text"], [*arrays, list(digests)]):
            mark, param = _array_param(kind, values)
            marks.append(mark)
            params.append(param)
        names = ", ".join([*(f"k{column}" for column in range(len(types))), "d", "n"])
        source = f"unnest({', '.join(marks)}) WITH ORDINALITY AS p({names})"
        # The first key column also goes through = ANY(array), so the planner
        # reads the rows by index (or by TID) instead of merging the whole
        # index with the key list. Dense integer keys, the common case, go
        # through one index range instead, which took 35 against 53 ms for
        # 20,000 keys here. The join still takes only the planned keys.
        first = f"x.{self.quote(table.key[0])}"
        values = arrays[0]
        dense = (
            len(types) == 1
            and types[0] in _INTEGER_TYPES
            and values
            and all(type(value) is int for value in values)
            and max(values) - min(values) < 2 * len(values)
        )
        if dense:
            access, extra = f"{first} BETWEEN %s AND %s", [min(values), max(values)]
        else:
            access, extra = f"{first} = ANY({marks[0]})", [params[0]]
        match = " AND ".join(
            [
                access,
                *(f"x.{self.quote(column)} = p.k{number}" for number, column in enumerate(table.key)),
            ]
        )
        return source, match, [*params, *extra]

    def _delete_matching(
        self,
        table: _rows.TableInfo,
        keys: Sequence[Sequence[Any]],
        digests: Sequence[str],
        by_version: bool = False,
    ) -> set[int]:
        """Delete the rows still at their key with their digest; return their positions.

        With ``by_version``, ``digests`` contains the rows' xmin values instead.
        """
        source, match, params = self._key_join(table, keys, digests)
        current = "x.xmin::text" if by_version else self._digest_sql(table, "x")
        rows = self.conn.execute(
            f"DELETE FROM {self.rows_of(table.name)} AS x USING {source} "
            f"WHERE {match} AND {current} = p.d "
            "RETURNING p.n",
            params,
        ).fetchall()
        return {row[0] - 1 for row in rows}

    def _still_present(
        self, table: _rows.TableInfo, entries: Sequence[PlannedItem]
    ) -> dict[str, str]:
        """Map each entry that still has a row to the reason it was kept."""
        if not entries:
            return {}
        source, match, params = self._key_join(table, *_keys_and_digests(entries))
        rows = self.conn.execute(
            f"SELECT p.n, {self._digest_sql(table, 'x')} = p.d "
            f"FROM {source} JOIN {self.rows_of(table.name)} AS x ON {match}",
            params,
        ).fetchall()
        found = {entries[number - 1].item.key for number, _ in rows}
        reasons = {}
        skipped = _rows.skipped_delete_reason
        if rows and self._row_security_applies(self._oids[table.name]):
            skipped = _skipped_by_policy_reason
        for number, unchanged in rows:
            key = entries[number - 1].item.key
            # The DELETE matched this row by key and digest, so a row still
            # there as planned is one a trigger or policy kept, not a changed row.
            reasons[key] = (
                skipped(key)
                if unchanged
                else f"row {key} changed since planning; it was not deleted, plan "
                "again to include its new values"
            )
        if table.key != ["ctid"]:
            return reasons
        empty = [entry for entry in entries if entry.item.key not in found]
        digests = [entry.item.identity["digest"] for entry in empty]
        moved = {
            row[0]
            for row in self.conn.execute(
                f"SELECT DISTINCT {self._digest_sql(table, 'x')} FROM "
                f"{self.rows_of(table.name)} AS x "
                f"WHERE {self._digest_sql(table, 'x')} = ANY(%b::text[])",
                (digests,),
            )
        } if digests else set()
        for entry in empty:
            if entry.item.identity["digest"] in moved:
                reasons[entry.item.key] = (
                    f"row {entry.item.key} moved to another ctid since planning (an "
                    "UPDATE or a table rewrite); it was not deleted, plan again"
                )
        return reasons


    def delete_rows(self, table: _rows.TableInfo, keys: Sequence[Sequence[Any]]) -> None:
        name = self.rows_of(table.name)
        with self.conn.transaction():
            cursor = self.conn.cursor()
            if len(table.key) == 1:
                cursor.execute(
                    f"DELETE FROM {name} WHERE {self.quote(table.key[0])} = ANY(%s)",
                    ([key[0] for key in keys],),
                )
            else:
                condition = " AND ".join(f"{self.quote(col)} = %s" for col in table.key)
                cursor.executemany(f"DELETE FROM {name} WHERE {condition}", keys)

    def compaction_steps(self) -> Iterator[PurgeResult]:
        rewritten = []
        for name in self._touched:
            quoted = self.quote_table(name)
            result = self.step(
                f"vacuum-full:{name}",
                lambda quoted=quoted: self._vacuum_full(quoted),
                f"rewrote {name}, its TOAST table and its indexes into new files",
            )
            rewritten.append(result.status == "purged")
            yield result
        if all(rewritten):
            # VACUUM FULL writes the new files directly, not through shared
            # buffers, so they hold their final rows now. The scan runs
            # while the server refreshes statistics and checkpoints.
            # NOTE: a checkpoint can still write hint bits into these files;
            # those pages hold only rows that survived.
            self._scan_rewritten_files()
        for name in self._touched:
            quoted = self.quote_table(name)
            yield self.step(
                f"analyze:{name}",
                lambda quoted=quoted: self.conn.execute(f"ANALYZE {quoted}") and None,
                f"refreshed the statistics of {name}",
            )
        yield self.step(
            "rewrite-statistics",
            self._rewrite_statistics,
            "rewrote pg_statistic so replaced most-common values leave its files",
        )
        yield self.step("checkpoint", self._checkpoint, "flushed every changed page to disk")
        yield self.step("switch-wal", self._switch_wal, "closed the current WAL segment")

    def _scan_rewritten_files(self) -> None:
        """Start the early scan of the rewritten tables' files; verification covers a failure."""
        try:
            files = self._relation_files(statistics=False)
        except Exception:  # noqa: BLE001 - the scan at verification reports errors
            self.log.warning("could not locate the rewritten files", exc_info=True)
            return
        self.start_early_scan(files)

    def _vacuum_full(self, quoted: str) -> dict[str, Any]:
        """Rewrite a table, retrying while old snapshots keep deleted rows.

        VACUUM FULL copies row versions that an open transaction may still
        see ("recently dead"), so the deleted rows would move into the new
        file. VERBOSE reports their count; the step retries, then fails
        naming the sessions that hold old snapshots.
        """
        kept = 0
        for attempt in range(VACUUM_ATTEMPTS):
            messages: list[str] = []

            def handler(diag: Any) -> None:
                # The count of kept rows is in the DETAIL part of the notice.
                messages.append(f"{diag.message_primary} {diag.message_detail}")

            self.conn.add_notice_handler(handler)
            try:
                self.conn.execute(f"VACUUM (FULL, VERBOSE) {quoted}")
            finally:
                self.conn.remove_notice_handler(handler)
            kept = sum(
                int(found.group(1))
                for message in messages
                if (found := _KEPT_DEAD.search(message))
            )
            if kept == 0:
                return {"attempts": attempt + 1}
            time.sleep(VACUUM_RETRY_DELAY)
        raise PurgeFailed(
            f"VACUUM FULL {quoted} had to keep {kept} deleted row version(s) because "
            f"open transactions may still see them ({self._old_snapshots()}); end those "
            "transactions and run the purge again"
        )

    def _old_snapshots(self) -> str:
        rows = self.conn.execute(
            "SELECT pid, datname, state, now() - xact_start FROM pg_stat_activity "
            "WHERE (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) "
            "AND pid <> pg_backend_pid() "
            "ORDER BY age(COALESCE(backend_xid, backend_xmin)) DESC LIMIT 5"
        ).fetchall()
        if not rows:
            return "no session listed; check prepared transactions and replication slots"
        return ", ".join(
            f"pid {pid} in {database} ({state}, transaction open {age})"
            for pid, database, state, age in rows
        )

    def _rewrite_statistics(self) -> dict[str, Any]:
        if not self.privileges["superuser"]:
            raise AccessDenied(
                "VACUUM FULL pg_statistic needs a superuser; the old most-common "
                "values stay in its dead tuples until autovacuum and later writes "
                "reuse the space"
            )
        return self._vacuum_full("pg_catalog.pg_statistic")

    def _checkpoint(self) -> None:
        if not self.privileges["checkpoint"]:
            raise AccessDenied(
                "CHECKPOINT needs a superuser or the pg_checkpoint role; the rewritten "
                "files reach disk at the next scheduled checkpoint"
            )
        self.conn.execute("CHECKPOINT")

    def _switch_wal(self) -> dict[str, Any]:
        if self.privileges["in_recovery"]:
            raise NotSupported("the server is a standby, where WAL cannot be switched")
        if not self.privileges["switch_wal"]:
            raise AccessDenied(
                "pg_switch_wal() needs a superuser or an EXECUTE grant; the WAL segment "
                "holding the deletes stays open until it fills"
            )
        lsn = self.conn.execute("SELECT pg_switch_wal()::text").fetchone()[0]
        return {"wal_lsn": lsn}

    # -- plan facts and verification -----------------------------------------

    def engine_info(self) -> TargetInfo:
        version = self.conn.execute("SHOW server_version").fetchone()[0]
        notes = [f"PostgreSQL {version}, database {self.database}"]
        read_only = self._read_only_reason()
        if read_only and not self.context.dry_run:
            raise AccessDenied(
                f"database {self.database} at {self.target.parts.hostname} accepts only "
                f"reads ({read_only}); point the target at the primary or a writable "
                "database"
            )
        if read_only:
            notes.append(f"the server accepts only reads ({read_only}), so a purge would fail")
        table = self.table(self.selection.table)
        notes.extend(self._storage_notes(table))
        notes.append(self._replication_summary())
        residual = (
            self._missing_privilege_notes(table)
            + self._copy_residual(table)
            + self._server_residual()
        )
        media = {
            "engine": "postgresql",
            "version": version,
            "server": f"{self.target.parts.hostname}:{self.target.parts.port or 5432}",
            "database": self.database,
        }
        return TargetInfo(media=media, notes=tuple(notes), residual=tuple(residual))

    def _read_only_reason(self) -> str | None:
        """Return why this session cannot write, or None when it can."""
        if self.privileges["in_recovery"]:
            return "it is a standby in recovery"
        if self.conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on":
            return "default_transaction_read_only is on"
        return None

    def _storage_notes(self, table: _rows.TableInfo) -> list[str]:
        oid = self._oids[table.name]
        size, toast, toast_size, live = self.conn.execute(
            "SELECT pg_relation_size(c.oid), c.reltoastrelid::regclass::text, "
            "COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0), c.reltuples "
            "FROM pg_class c WHERE c.oid = %s",
            (oid,),
        ).fetchone()
        # reltuples is -1 until the first VACUUM or ANALYZE (PostgreSQL 14+).
        estimate = f"about {int(live)} rows" if live >= 0 else "no row estimate yet"
        notes = [f"{table.name}: {estimate}, heap {size} bytes"]
        if toast and toast != "-":
            notes.append(
                f"TOAST table {toast} keeps values too large for a row "
                f"({toast_size} bytes with its index)"
            )
        notes.append(
            "pg_statistic holds most-common values of the table's columns after ANALYZE"
        )
        if self._inherits_from(table.name):
            children = [
                _catalog_name(namespace, relname)
                for namespace, relname in self.conn.execute(
                    "SELECT n.nspname, c.relname FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE i.inhparent = %s ORDER BY 1, 2",
                    (oid,),
                )
            ]
            notes.append(
                f"table(s) {', '.join(children)} inherit from {table.name}; the selection "
                f"takes only the rows stored in {table.name} itself, so target each of "
                "those tables to purge its rows"
            )
        return notes

    def _replication_summary(self) -> str:
        slots = self.conn.execute("SELECT COUNT(*) FROM pg_replication_slots").fetchone()[0]
        standbys = self.conn.execute("SELECT COUNT(*) FROM pg_stat_replication").fetchone()[0]
        return (
            f"archive_mode={self._setting('archive_mode')}, {slots} replication slot(s), "
            f"{standbys} connected standby(s)"
        )

    def _missing_privilege_notes(self, table: _rows.TableInfo) -> list[str]:
        missing = []
        owner, delete = self.conn.execute(
            "SELECT pg_has_role(current_user, relowner, 'USAGE'), "
            "has_table_privilege(oid, 'DELETE') FROM pg_class WHERE oid = %s",
            (self._oids[table.name],),
        ).fetchone()
        if not delete:
            missing.append(
                f"DELETE on {table.name} is not granted to this user, so the purge will "
                f"fail; GRANT DELETE ON {self.quote_table(table.name)} to the user"
            )
        if not owner:
            missing.append(f"VACUUM FULL {table.name} cannot run: the table's owner is needed")
        if not self.privileges["superuser"]:
            missing.append("VACUUM FULL pg_statistic cannot run: a superuser is needed")
        if not self.privileges["checkpoint"]:
            missing.append("CHECKPOINT cannot run: needs superuser or pg_checkpoint")
        if not self.privileges["switch_wal"]:
            missing.append("pg_switch_wal() cannot run: needs superuser or an EXECUTE grant")
        return missing

    def _copy_residual(self, table: _rows.TableInfo) -> list[str]:
        """Return the rules, triggers, views and policies that copy or hide the rows.

        The purge neither deletes the copies that they write into other
        relations nor scans those relations' files.
        """
        # NOTE: tables reached through foreign keys, and materialized views
        # that read the table through another view, are not inspected.
        oid = self._oids[table.name]
        residual = [
            f"rule {rule} on {table.name} rewrites the purge's DELETE, so it may keep "
            "the rows or copy them into another table"
            for (rule,) in self.conn.execute(
                "SELECT rulename FROM pg_rewrite WHERE ev_class = %s AND ev_type = '4' "
                "ORDER BY 1",
                (oid,),
            )
        ]
        # Bit 3 of tgtype marks a trigger that fires on DELETE.
        residual.extend(
            f"trigger {trigger} on {table.name} runs on the purge's DELETE and may copy "
            "the rows into another table"
            for (trigger,) in self.conn.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal "
                "AND tgtype & 8 <> 0 ORDER BY 1",
                (oid,),
            )
        )
        residual.extend(
            f"materialized view {_catalog_name(namespace, relname)} keeps a copy of "
            f"rows of {table.name} until REFRESH MATERIALIZED VIEW runs"
            for namespace, relname in self.conn.execute(
                "SELECT DISTINCT n.nspname, v.relname FROM pg_depend d "
                "JOIN pg_rewrite r ON r.oid = d.objid "
                "JOIN pg_class v ON v.oid = r.ev_class "
                "JOIN pg_namespace n ON n.oid = v.relnamespace "
                "WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %s "
                "AND v.relkind = 'm' ORDER BY 1, 2",
                (oid,),
            )
        )
        if self._row_security_applies(oid):
            residual.append(
                f"row-level security on {table.name} applies to this user, so rows "
                "that its policies hide are neither selected nor deleted; run the purge "
                "as a user with BYPASSRLS"
            )
        return residual

    def _row_security_applies(self, oid: int) -> bool:
        """Tell whether row-level security policies filter this user's statements."""
        return bool(
            self.conn.execute(
                "SELECT 1 WHERE row_security_active(%s::oid)", (oid,)
            ).fetchone()
        )

    def _setting(self, name: str) -> str | None:
        try:
            return self.conn.execute(f"SHOW {name}").fetchone()[0]
        except _psycopg().Error:
            self.log.debug("setting not readable", setting=name)
            return None

    def _server_residual(self) -> list[str]:
        residual = [
            "WAL segments in pg_wal hold the deleted rows until the server recycles "
            "them after later checkpoints",
            "base backups, dumps and snapshots taken before the purge",
        ]
        archive_mode = self._setting("archive_mode")
        if archive_mode and archive_mode != "off":
            command = self._setting("archive_command") or "unknown"
            residual.append(
                f"WAL archiving is on (archive_mode={archive_mode}, archive_command="
                f"{command!r}): archived segments keep the rows"
            )
        for slot, kind, active in self.conn.execute(
            "SELECT slot_name, slot_type, active FROM pg_replication_slots"
        ):
            residual.append(
                f"replication slot {slot} ({kind}, {'active' if active else 'inactive'}) "
                "retains WAL with the rows"
            )
        for name, address, state in self.conn.execute(
            "SELECT application_name, client_addr::text, state FROM pg_stat_replication"
        ):
            residual.append(
                f"standby {name or address} ({state}) received the rows; purge it as well"
            )
        schema, relation, _ = _split_name(self.selection_table_name())
        for (publication,) in self.conn.execute(
            "SELECT pubname FROM pg_publication_tables "
            "WHERE schemaname = %s AND tablename = %s",
            (schema, relation),
        ):
            residual.append(
                f"publication {publication} sends the table's changes to logical "
                "subscribers, which keep their own copies"
            )
        for (subscription,) in self.conn.execute("SELECT subname FROM pg_subscription"):
            residual.append(f"subscription {subscription} feeds this database")
        residual.extend(self._log_residual())
        directory = self._setting("data_directory") if self.privileges["read_settings"] else None
        residual.append(
            "files replaced by VACUUM FULL leave their old bytes in free blocks of the "
            f"filesystem holding {directory or 'the data directory'}; wipe its free space "
            "as a follow-up step"
        )
        return residual

    def _log_residual(self) -> list[str]:
        statement = self._setting("log_statement")
        error_level = self._setting("log_min_error_statement")
        parts = [f"log_statement={statement}", f"log_min_error_statement={error_level}"]
        text = (
            "the server log may hold earlier statements that named these rows "
            f"({', '.join(parts)})"
        )
        if statement in ("all", "mod"):
            text += "; with log_statement on, bind parameters are logged as statement details"
        return [text]

    def compressed_keys(self, table: _rows.TableInfo) -> frozenset[tuple]:
        # Values of variable length (attlen -1) are the ones PostgreSQL
        # compresses, inline or in TOAST, once a row passes about 2 kB.
        if self.conn.info.server_version < 140000:
            # NOTE: pg_column_compression() is new in PostgreSQL 14, so on
            # older servers compressed values are not found.
            return frozenset()
        columns = [
            record[0]
            for record in self.conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                "AND NOT attisdropped AND attlen = -1",
                (self._oids[table.name],),
            )
        ]
        if not columns:
            return frozenset()
        compressed = " OR ".join(
            f"pg_column_compression({self.quote(column)}) IS NOT NULL"
            for column in columns
        )
        keys = ", ".join(self.quote(column) for column in table.key)
        sql = f"SELECT {keys} FROM {self.rows_of(table.name)} WHERE ({compressed})"
        if self.selection.where:
            sql += f" AND ({self.selection.where})"
        with self.read_only():
            rows = self.query(sql, self.selection.params)
        return frozenset(tuple(row) for row in rows)

    def selection_table_name(self) -> str:
        return self.table(self.selection.table).name

    def data_files(self) -> tuple[list[str], str | None]:
        if not self.privileges["read_settings"]:
            return [], "the data directory location is not readable (needs pg_read_all_settings)"
        directory = self._setting("data_directory")
        if not directory or not os.access(directory, os.R_OK | os.X_OK):
            return [], f"the data directory {directory} is not readable by this process"
        return self._relation_files(statistics=True), None

    def _relation_files(self, statistics: bool) -> list[str]:
        """Return the files of the selected and touched tables and their partitions.

        The files of their TOAST tables and indexes are included, and with
        ``statistics`` those of pg_statistic too. An unreadable data
        directory gives no files.
        """
        directory = self._setting("data_directory") if self.privileges["read_settings"] else None
        if not directory or not os.access(directory, os.R_OK | os.X_OK):
            return []
        relations: list[Any] = []
        for name in [self.selection_table_name(), *self._touched]:
            oid = self._oids[self.table(name).name]
            # A partitioned table has no files, and its rows sit in those of
            # its partitions, at any depth of sub-partitioning.
            relations.extend(
                row[0]
                for row in self.conn.execute(
                    "WITH RECURSIVE tree(oid) AS (SELECT %s::oid UNION ALL "
                    "SELECT i.inhrelid FROM tree t "
                    "JOIN pg_class p ON p.oid = t.oid AND p.relkind = 'p' "
                    "JOIN pg_inherits i ON i.inhparent = t.oid) "
                    "SELECT oid FROM tree UNION ALL "
                    "SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM tree) "
                    "UNION ALL SELECT reltoastrelid FROM pg_class "
                    "WHERE oid IN (SELECT oid FROM tree) AND reltoastrelid <> 0 "
                    "UNION ALL SELECT i.indexrelid FROM pg_class c "
                    "JOIN pg_index i ON i.indrelid = c.reltoastrelid "
                    "WHERE c.oid IN (SELECT oid FROM tree)",
                    (oid,),
                )
            )
        if statistics:
            relations.extend(
                row[0]
                for row in self.conn.execute(
                    "SELECT 'pg_catalog.pg_statistic'::regclass::oid UNION ALL "
                    "SELECT indexrelid FROM pg_index "
                    "WHERE indrelid = 'pg_catalog.pg_statistic'::regclass UNION ALL "
                    "SELECT reltoastrelid FROM pg_class "
                    "WHERE oid = 'pg_catalog.pg_statistic'::regclass AND reltoastrelid <> 0"
                )
            )
        files: list[str] = []
        for oid in dict.fromkeys(relations):
            relative = self.conn.execute("SELECT pg_relation_filepath(%s)", (oid,)).fetchone()[0]
            if relative:
                files.extend(_segments(os.path.join(directory, relative)))
        return files


def _skipped_by_policy_reason(key: str) -> str:
    """Return the failure reason of a row that its DELETE left, under row-level security."""
    return (
        f"row {key} is still present after its DELETE statement, which a row-level "
        "security policy for DELETE or a BEFORE DELETE trigger returning NULL can "
        "skip. It was not deleted. Run the purge as a user with BYPASSRLS, or disable "
        "that trigger for the purge, then run the purge again"
    )


def _catalog_name(schema: str, relation: str) -> str:
    """Return the name under which plans and results show a table: schema.table.

    A part that contains a dot or a double quote is double-quoted, so that
    :func:`_split_name` returns the same parts again.
    """
    parts = [
        _quote_name(part) if "." in part or '"' in part else part
        for part in (schema, relation)
    ]
    return ".".join(parts)


def _quote_name(name: str) -> str:
    """Return ``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _split_name(name: str) -> tuple[str | None, str, bool]:
    """Split a table name into schema (None when absent) and relation.

    Also returns whether the name contains double quotes. A name without
    them splits at its first dot. A name with them is read as an SQL name
    of one or two parts, where a part is either "quoted" (with "" for a
    double quote) or unquoted text without dots. Raises ValueError when the
    name is not of that form.
    """
    if '"' not in name:
        schema, dot, relation = name.partition(".")
        return (schema, relation, False) if dot else (None, name, False)
    parts: list[str] = []
    position = 0
    while True:
        if name.startswith('"', position):
            end = position + 1
            text = []
            while True:
                close = name.find('"', end)
                if close < 0:
                    raise ValueError("a double quote is not closed")
                text.append(name[end:close])
                if not name.startswith('"', close + 1):
                    break
                text.append('"')
                end = close + 2
            parts.append("".join(text))
            position = close + 1
        else:
            end = position
            while end < len(name) and name[end] not in '."':
                end += 1
            if name.startswith('"', end):
                raise ValueError("a double quote starts inside an unquoted part")
            parts.append(name[position:end])
            position = end
        if not parts[-1]:
            raise ValueError("a part of the name is empty")
        if position == len(name):
            break
        if name[position] != ".":
            raise ValueError("a quoted part is not followed by a dot")
        position += 1
    if len(parts) > 2:
        raise ValueError(f"it has {len(parts)} parts, and at most 2 are allowed")
    if len(parts) == 1:
        return None, parts[0], True
    return parts[0], parts[1], True


def _keys_and_digests(entries: Sequence[PlannedItem]) -> tuple[list[Any], list[str]]:
    """Return the planned keys and digests of row entries."""
    return (
        [_rows.decode_key(entry.item.identity["key"]) for entry in entries],
        [entry.item.identity["digest"] for entry in entries],
    )


def _segments(path: str) -> list[str]:
    """Return a relation's 1 GiB segment files: path, path.1, path.2, ..."""
    found = [path]
    number = 1
    while os.path.exists(f"{path}.{number}"):
        found.append(f"{path}.{number}")
        number += 1
    return found


def _summary(error: Exception) -> str:
    """Return the primary message of a driver error, without its DETAIL part.

    The DETAIL part of a PostgreSQL error can quote key values, so it is
    dropped. The primary message of a data exception (SQLSTATE class 22)
    quotes the rejected input, so :meth:`PostgreSQLPlugin.translate` reports
    those errors without it.
    """
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        return primary
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


#: Key types whose arrays go to the server as one literal (see _array_param).
_INTEGER_TYPES = frozenset({"bigint", "integer", "smallint"})
_HEX_DIGITS = "0123456789abcdef"


def _array_param(kind: str, values: list[Any]) -> tuple[str, Any]:
    """Return the placeholder and parameter of ``values`` as an array of ``kind``.

    psycopg dumps a list parameter element by element in Python: for a text
    array it runs a regular expression over each element, so lists go in
    binary, which still packs each element. Integers, and text of lowercase
    hex or decimal digits (row digests, xmin values), go as one array
    literal that the server parses, because no such element needs quoting.
    """
    if kind in _INTEGER_TYPES and all(type(value) is int for value in values):
        return f"%s::{kind}[]", "{" + ",".join(map(str, values)) + "}"
    if (
        kind == "text"
        and all(type(value) is str and value for value in values)
        and not "".join(values).strip(_HEX_DIGITS)
    ):
        return "%s::text[]", "{" + ",".join(values) + "}"
    return f"%b::{kind}[]", values
