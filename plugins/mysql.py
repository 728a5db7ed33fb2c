"""MariaDB and MySQL (InnoDB) rows: delete, wait for purge, rebuild the table.

Target: ``mysql://user:password@host:3306/db?table=customers&where=id = %s``
(``mariadb://`` works too). The WHERE clause uses positional placeholders
(``%s`` or ``?``), and every statement that carries values runs as a
server-side prepared statement, so the values travel as bind parameters and
never appear in the statement text the server logs. After the
deletes the plugin waits until InnoDB has purged the delete-marked records,
rebuilds each touched table into a new tablespace file with
``ALTER TABLE ... FORCE`` and flushes its pages to disk with
``FLUSH TABLES ... FOR EXPORT``.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

from plugins import _rows
from plugins.base import JobContext, PurgeResult, Target, TargetInfo
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

#: Seconds a row lock wait lasts before the statement fails (InnoDB's unit).
DEFAULT_LOCK_TIMEOUT = 10
#: Seconds to wait for InnoDB's purge of delete-marked records.
PURGE_WAIT = 60.0
#: Seconds to retry PURGE BINARY LOGS while the server still needs old files.
BINLOG_PURGE_WAIT = 30.0
#: Error number of a write attempted in a read-only transaction.
READ_ONLY_TRANSACTION_ERRNO = 1792

#: Databases the server maintains, whose rows a purge must never delete.
SYSTEM_DATABASES = ("mysql", "information_schema", "performance_schema", "sys")

#: Maximum number of parameters of one prepared statement, because the
#: protocol counts them in 16 bits.
MAX_STATEMENT_PARAMS = 65535
#: Keys of a composite primary key per grouped DELETE. In a test on MariaDB
#: 10.11, a list of 5000 row constructors was read as index ranges, but one
#: of 10,000 made the server scan and lock the whole table of 46,000 rows.
COMPOSITE_KEYS_PER_DELETE = 1000
#: Prepared statements of many parameters (grouped DELETEs, reads by key)
#: kept open for reuse. Preparing one of 20,000 parameters took 0.2 s with
#: the pure-Python connector against MariaDB 10.11 on 127.0.0.1, because it
#: reads a packet per parameter, and the next batch's statement usually has
#: the same text.
PREPARED_KEPT = 4
#: Parameters from which :meth:`MySQLPlugin.query` keeps a statement prepared.
KEPT_FROM_PARAMS = 100

_LOST_CONNECTION = {2003, 2006, 2013, 2055, 0}
_LOCK_ERRORS = {1205, 1213}
_READ_ONLY = {1290, 1792, 1836}
_MISSING = {1146, 1054, 1049, 1051}
_DENIED = {1044, 1045, 1142, 1143, 1227, 1370}
_CONSTRAINT = {1451, 1452, 1217, 3008}
#: Column types whose zero value 0000-00-00 the connector reads as None.
_DATE_TYPES = frozenset({"date", "datetime", "timestamp"})


def _connector() -> Any:
    try:
        import mysql.connector
    except ImportError:
        raise MissingDependency(
            "the MariaDB/MySQL plugin needs mysql-connector-python; install it with "
            "pip install 'lethe[mysql]'"
        ) from None
    return mysql.connector


class MySQLPlugin(_rows.ServerDigests, _rows.RowStorePlugin):
    """Rows of one InnoDB table in MariaDB or MySQL."""

    name = "mysql"
    schemes = ("mysql", "mariadb")
    requires = ("mysql.connector",)
    # The prepared cursor turns each %s into ? with a regular expression
    # that scans to the end of the statement per match, which took seconds
    # for a statement of 10,000 keys. Generated statements write ? at once.
    placeholder = "?"
    default_lock_timeout = DEFAULT_LOCK_TIMEOUT
    engine_keys = ("purge_binary_logs",)

    def __init__(self, target: Target, context: JobContext) -> None:
        super().__init__(target, context)
        parts = target.parts
        self.database = urllib.parse.unquote(parts.path.strip("/"))
        if not self.database:
            raise InvalidTarget(
                f"target {self.redacted_url()!r} names no database; "
                "write mysql://USER@HOST/DATABASE?table=NAME"
            )
        if self.database.lower() in SYSTEM_DATABASES:
            raise InvalidTarget(
                f"database {self.database} belongs to the server, and deleting its rows "
                "would damage it; name a user database in the target URL"
            )
        if isinstance(self.selection.params, Mapping):
            raise InvalidTarget(
                "MariaDB/MySQL targets take 'params' as a list matching positional "
                "placeholders (%s or ?), not a mapping"
            )
        # InnoDB counts its lock wait timeout in whole seconds.
        self.lock_timeout = max(1, round(self.lock_timeout))
        self.purge_wait = float(context.settings.get("purge_wait", PURGE_WAIT))
        # Removing binary logs breaks point-in-time recovery and replicas that
        # have not read them yet, so it runs only on request.
        self.purge_binary_logs = _rows.flag_option(
            self.selection.engine_options.get("purge_binary_logs", False),
            "purge_binary_logs",
        )
        self._binlogs_purged = False
        self.connection: Any = None
        self.reader: Any = None
        self.facts: dict[str, Any] = {}
        self._full_text: dict[str, bool] = {}
        # DATA_TYPE of each column, by table, for the digest expression.
        self._column_types: dict[str, dict[str, str]] = {}
        # Prepared statements kept for reuse, oldest first: the text and its
        # cursor, by text or, for grouped DELETEs, by table and row count. The
        # connector prepares again unless execute() gets the very string
        # object it prepared.
        self._kept_statements: dict[Hashable, tuple[str, Any]] = {}

    # -- connection ---------------------------------------------------------

    def _open(self) -> Any:
        parts = self.target.parts
        connection = _connector().connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=urllib.parse.unquote(parts.username or "root"),
            password=urllib.parse.unquote(parts.password or ""),
            database=self.database,
            charset="utf8mb4",
            autocommit=True,
            connection_timeout=10,
        )
        cursor = connection.cursor()
        cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {self.lock_timeout}")
        cursor.close()
        return connection

    def connect(self) -> None:
        if self.connection is not None:
            return
        self.connection = self._open()
        self.reader = self._open()
        # The reader only streams selections and surviving rows.
        cursor = self.reader.cursor()
        cursor.execute("SET SESSION TRANSACTION READ ONLY")
        cursor.close()
        variables = self.query(
            "SELECT @@version, @@datadir, @@log_bin, @@innodb_file_per_table, "
            "@@general_log, @@read_only, @@innodb_undo_tablespaces, "
            "@@lower_case_table_names, @@log_bin_basename, @@binlog_format"
        )[0]
        keys = (
            "version",
            "datadir",
            "log_bin",
            "file_per_table",
            "general_log",
            "read_only",
            "undo_tablespaces",
            "lower_case_table_names",
            "log_bin_basename",
            "binlog_format",
        )
        self.facts = dict(zip(keys, variables))
        # A statement larger than max_allowed_packet loses the connection.
        # Half of it leaves room for the statement text and the protocol.
        packet = self.query("SELECT @@max_allowed_packet")[0][0]
        self.max_key_bytes = int(packet) // 2

    @contextlib.contextmanager
    def read_only(self) -> Iterator[None]:
        variable = self._read_only_variable()
        before = self.query(f"SELECT @@SESSION.{variable}")[0][0]
        self.query("SET SESSION TRANSACTION READ ONLY")
        try:
            yield
        finally:
            # The old value is restored, so a session that was read-only
            # still rejects the purge's deletes.
            self.query(f"SET SESSION {variable} = {1 if int(before) else 0}")

    def _read_only_variable(self) -> str:
        """Return the name of the session variable for the transaction access mode.

        MySQL 8 and MariaDB 11.1 name it transaction_read_only, older
        MariaDB releases tx_read_only.
        """
        try:
            self.query("SELECT @@SESSION.transaction_read_only")
        except _connector().Error:
            return "tx_read_only"
        return "transaction_read_only"

    def is_read_only_error(self, error: Exception) -> bool:
        return getattr(error, "errno", None) == READ_ONLY_TRANSACTION_ERRNO

    def close_connections(self) -> None:
        self._close_prepared()
        for connection in (self.reader, self.connection):
            if connection is not None:
                try:
                    connection.close()
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
        connector = _connector()
        where = f"could not {action} in database {self.database}"
        code = getattr(error, "errno", None)
        # Some server messages quote key values (duplicate entry), so only
        # messages of the codes below are passed on.
        message = getattr(error, "msg", "") or ""
        lost = isinstance(error, connector.errors.OperationalError) and (
            code is None or code < 0 or code >= 2000
        )
        if (lost or code in _LOST_CONNECTION) and action == "connect":
            # Nothing was deleted yet, so the message is about the URL only.
            return TargetUnreachable(
                f"could not connect to {self.redacted_url()} (error {code}); check the "
                "host and port in the target URL and that the server is running"
            )
        if lost or code in _LOST_CONNECTION:
            return TargetUnreachable(
                f"{where}: the connection to {self.redacted_url()} was lost; rows whose "
                "results were reported purged are gone, the batch in flight was rolled "
                "back; run the purge again to finish"
            )
        if code in _LOCK_ERRORS:
            return PurgeFailed(
                f"{where}: timed out after {self.lock_timeout} s waiting for a row lock "
                "held by another session; end that transaction and run the purge again"
            )
        if code in _READ_ONLY:
            return AccessDenied(
                f"{where}: the server accepts only reads ({message}); point the target "
                "at the primary"
            )
        if code in _MISSING:
            return TargetNotFound(f"{where}: {message}; check the table and WHERE clause")
        if code == 1045:
            return AccessDenied(
                f"{where}: {message}; check the user and password in the target URL"
            )
        if code == 1210:
            # Incorrect arguments to mysqld_stmt_execute: the count of values
            # differs from the count of placeholders.
            return InvalidTarget(f"{where}: the WHERE placeholders do not match 'params'")
        if code in _DENIED:
            return AccessDenied(f"{where}: {message}; grant the privilege to this user")
        if code in _CONSTRAINT:
            if self.selection.delete_dependents:
                # The referencing rows are items already, so they reference
                # each other: InnoDB checks every row at once and cannot
                # defer the check to COMMIT.
                advice = (
                    "the selected rows reference each other, which InnoDB cannot "
                    "delete in one transaction; set the referencing column to NULL "
                    "for these rows, then run the purge again"
                )
            else:
                advice = "set delete_dependents: true or remove the referencing rows first"
            return PurgeFailed(
                f"{where}: a foreign key constraint rejected the delete ({message}); {advice}"
            )
        if code in (1064, 1149):
            return InvalidTarget(f"{where}: the WHERE clause is invalid ({message})")
        if isinstance(error, (TypeError, KeyError)):
            return InvalidTarget(f"{where}: the WHERE placeholders do not match 'params'")
        return PurgeFailed(f"{where}: server error {code} ({type(error).__name__})")

    row_lock_clause = " FOR UPDATE"

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    # -- catalog ------------------------------------------------------------

    def load_table(self, name: str) -> _rows.TableInfo:
        found = self.query(
            "SELECT TABLE_NAME, ENGINE, TABLE_TYPE FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
            "AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')",
            (name,),
        )
        if not found:
            raise TargetNotFound(
                f"table {name!r} does not exist in database {self.database}; "
                "check the 'table' option (names are case-sensitive on this server "
                f"when lower_case_table_names is 0, here {self.facts.get('lower_case_table_names')})"
            )
        table, engine, table_type = found[0]
        if table_type == "SYSTEM VERSIONED":
            raise NotSupported(
                f"table {table} is system-versioned (WITH SYSTEM VERSIONING), so a "
                "DELETE keeps each deleted row as a history row that the purge cannot "
                f"remove; drop the history with ALTER TABLE {self.quote(table)} DROP "
                "SYSTEM VERSIONING, or purge it with DELETE HISTORY, and plan again"
            )
        if (engine or "").lower() != "innodb":
            raise NotSupported(
                f"table {table} uses the {engine} engine; only InnoDB tables can be "
                "purged, convert it with ALTER TABLE ... ENGINE=InnoDB"
            )
        described = self.query(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
            "ORDER BY ORDINAL_POSITION",
            (table,),
        )
        columns = [row[0] for row in described]
        self._column_types[table] = {row[0]: str(row[1]).lower() for row in described}
        key = [
            row[0]
            for row in self.query(
                "SELECT COLUMN_NAME FROM information_schema.STATISTICS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
                "AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
                (table,),
            )
        ]
        if not key:
            key = self._unique_not_null_key(table)
        if not key:
            raise NotSupported(
                f"table {table} has no primary key and no unique index on NOT NULL "
                "columns, so its rows cannot be addressed one by one; add a primary "
                "key or such an index and plan again"
            )
        indexes = [
            row[0]
            for row in self.query(
                "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (table,),
            )
        ]
        return _rows.TableInfo(table, columns, key, indexes, self._foreign_keys_to(table))

    def _unique_not_null_key(self, table: str) -> list[str]:
        """Return the columns of a unique index whose columns are all NOT NULL.

        Such an index addresses each row as a primary key would, and InnoDB
        clusters a table without a primary key on the first one. Returns an
        empty list when the table has none.
        """
        rows = self.query(
            "SELECT s.INDEX_NAME, s.COLUMN_NAME, c.IS_NULLABLE "
            "FROM information_schema.STATISTICS s JOIN information_schema.COLUMNS c "
            "ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME "
            "AND c.COLUMN_NAME = s.COLUMN_NAME "
            "WHERE s.TABLE_SCHEMA = DATABASE() AND s.TABLE_NAME = %s AND s.NON_UNIQUE = 0 "
            "ORDER BY s.INDEX_NAME, s.SEQ_IN_INDEX",
            (table,),
        )
        indexes: dict[str, list[tuple[str, str]]] = {}
        for index, column, nullable in rows:
            indexes.setdefault(index, []).append((column, nullable))
        for columns in indexes.values():
            if all(nullable == "NO" for _, nullable in columns):
                return [column for column, _ in columns]
        return []

    def _foreign_keys_to(self, table: str) -> list[_rows.ForeignKey]:
        rows = self.query(
            "SELECT k.CONSTRAINT_NAME, k.TABLE_NAME, k.COLUMN_NAME, "
            "k.REFERENCED_COLUMN_NAME, r.DELETE_RULE "
            "FROM information_schema.KEY_COLUMN_USAGE k "
            "JOIN information_schema.REFERENTIAL_CONSTRAINTS r "
            "ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA "
            "AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME "
            "WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_SCHEMA = DATABASE() "
            "AND k.REFERENCED_TABLE_NAME = %s ORDER BY k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
            (table,),
        )
        groups: dict[tuple[str, str], list[tuple]] = {}
        for row in rows:
            groups.setdefault((row[0], row[1]), []).append(row)
        return [
            _rows.ForeignKey(
                child,
                tuple(row[2] for row in members),
                table,
                tuple(row[3] for row in members),
                members[0][4].lower(),
            )
            for (_, child), members in groups.items()
        ]

    def full_text_indexed(self, table: str) -> bool:
        if table not in self._full_text:
            self._full_text[table] = bool(
                self.query(
                    "SELECT 1 FROM information_schema.STATISTICS "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
                    "AND INDEX_TYPE = 'FULLTEXT' LIMIT 1",
                    (table,),
                )
            )
        return self._full_text[table]

    def user_tables(self) -> list[str]:
        # System-versioned tables are listed like other tables, so the
        # residue check names them as skipped, as it does tables of another
        # engine or without a key. The list contains every table this user has
        # any privilege on, so a table it may not SELECT is probed and left
        # out. A hit that only its rows would explain stays reported.
        names = []
        for (name,) in self.query(
            "SELECT TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')"
        ):
            try:
                self.query(f"SELECT 1 FROM {self.quote_table(name)} LIMIT 0")
            except _connector().Error as error:
                if getattr(error, "errno", None) not in _DENIED:
                    raise
                self.log.warning(
                    "surviving rows not read", table=name, error=str(error)
                )
                continue
            names.append(name)
        return names

    # -- rows ---------------------------------------------------------------

    def _digest_sql(self, table: _rows.TableInfo) -> str:
        """Return SQL computing a row's SHA-256 digest on the server.

        Each column adds the SHA-256 of its exact value, or N for NULL, so
        NULL, an empty string and the text 'NULL' differ, and a long value
        adds 64 characters like a short one. The key columns are among the
        columns, so a row at one key never carries a row's digest at another.
        """
        types = self._column_types[table.name]
        values = [
            self._exact_value_sql(name, types.get(name, "")) for name in table.columns
        ]
        parts = [f"IFNULL(SHA2({value}, 256), 'N')" for value in values]
        return f"SHA2(CONCAT_WS(',', {', '.join(parts)}), 256)"

    def _exact_value_sql(self, column: str, data_type: str) -> str:
        """Return SQL whose string form differs for any two values of the column.

        The string form of most types does. Text, binary strings and BIT hash
        as their bytes. Numbers, DECIMAL, dates and times print in full, a
        DOUBLE with the fewest digits that read back as the same value. A
        FLOAT prints with six digits, so it goes through DOUBLE first. A
        TIMESTAMP prints in the session's time zone, where two instants share
        a wall-clock time when the clocks go back, so it goes as its seconds
        since 1970.
        """
        # NOTE: these string forms were checked on MariaDB 10.11 only. MySQL 8
        # needs 8.0.17 for CAST(... AS DOUBLE), and its forms are unchecked.
        quoted = self.quote(column)
        if data_type == "float":
            return f"CAST({quoted} AS DOUBLE)"
        if data_type == "timestamp":
            return f"UNIX_TIMESTAMP({quoted})"
        return quoted

    def _key_value_sql(self, column: str, data_type: str) -> str:
        """Return SQL reading a key column as a value that binds back to its row.

        The statements that delete and check rows bind the key values that
        discovery read, and some types do not survive that trip. In text
        results MariaDB 10.11 prints a FLOAT with six digits, and
        mysql-connector-python 26.10 reads a SET as a Python set, which it
        cannot bind. In binary results the connector drops the sign of a
        negative TIME under one day, and BIT comes as bytes that no longer
        equal the column once bound. So these keys go as DOUBLE, text and
        an unsigned number.
        """
        # NOTE: a TIMESTAMP key still reads in the session time zone. When
        # the clocks go back, two rows read as one key, which addresses only
        # one of them. With one row per item the other row is left out of
        # the plan, and in groups the results name the wrong row as kept.
        quoted = self.quote(column)
        if data_type == "float":
            return f"CAST({quoted} AS DOUBLE)"
        if data_type in ("time", "set"):
            return f"CAST({quoted} AS CHAR)"
        if data_type in ("bit", "year"):
            return f"CAST({quoted} AS UNSIGNED)"
        return quoted

    def null_key_message(self, table: _rows.TableInfo, column: str, subject: str) -> str:
        # Key columns are NOT NULL here, so a key that reads as None is a
        # zero date, which mysql-connector-python returns as None.
        if self._column_types[table.name].get(column) not in _DATE_TYPES:
            return super().null_key_message(table, column, subject)
        # NOTE: a date with only a zero month or day (2024-00-10) makes the
        # connector raise ValueError in binary results, so such a selection
        # fails before this refusal.
        quoted = self.quote(column)
        return (
            f"{subject} the zero date 0000-00-00 in key column {column}, which the "
            "driver cannot read as a date, so the purge cannot delete or check them by "
            "key; give those rows real dates, or exclude them by adding "
            f"YEAR({quoted}) > 0 AND MONTH({quoted}) > 0 AND DAYOFMONTH({quoted}) > 0 "
            "to the WHERE clause"
        )

    def select_list(self, table: _rows.TableInfo) -> str:
        # The server computes the digest, so the grouped DELETE can compare
        # it without reading the rows back.
        types = self._column_types[table.name]
        keys = ", ".join(
            self._key_value_sql(name, types.get(name, "")) for name in table.key
        )
        # mysql-connector-python 26.10 reads a YEAR value in binary results
        # as a length-prefixed string, which returns wrong bytes or fails
        # with IndexError, so YEAR goes as the number that text results give.
        values = ", ".join(
            f"CAST({self.quote(name)} AS UNSIGNED)"
            if types.get(name) == "year"
            else self.quote(name)
            for name in table.columns
        )
        return f"{keys}, {self._digest_sql(table)}, {values}"

    def _cursor(self, connection: Any, params: Any) -> Any:
        # Statements with values run prepared, so the values are bound on the
        # server rather than spliced into the text.
        return connection.cursor(prepared=True) if params else connection.cursor()

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple]:
        if len(params) >= KEPT_FROM_PARAMS and not isinstance(params, Mapping):
            # Reads by key repeat one text per part of 10,000 keys.
            cursor, sql = self._kept_cursor(sql, lambda: sql)
            try:
                cursor.execute(sql, tuple(params))
                return list(cursor.fetchall()) if cursor.with_rows else []
            except BaseException:
                self._forget_prepared(sql)
                raise
        cursor = self._cursor(self.conn, params)
        try:
            cursor.execute(sql, tuple(params) if params else None)
            return list(cursor.fetchall()) if cursor.with_rows else []
        finally:
            cursor.close()

    def stream(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Iterator[tuple]:
        # An unbuffered cursor reads rows from the socket as they are used; it
        # runs on its own connection because it blocks others on the same one.
        cursor = self._cursor(self.reader, params)
        try:
            cursor.execute(sql, tuple(params) if params else None)
            while (row := cursor.fetchone()) is not None:
                yield tuple(row)
        finally:
            if self.reader.unread_result:
                self.reader.consume_results()
            cursor.close()

    # -- purge --------------------------------------------------------------

    @contextlib.contextmanager
    def purge_transaction(self) -> Iterator[None]:
        # The re-read of the rows takes their locks (FOR UPDATE), so no other
        # session changes a row between its digest check and its delete.
        self.conn.start_transaction()
        try:
            yield
            self.conn.commit()
        except BaseException:
            self._rollback_quietly()
            raise

    def _rows_by_key(
        self,
        table: _rows.TableInfo,
        keys: Sequence[Sequence[Any]],
        lock: bool = False,
        columns: str | None = None,
    ) -> list[tuple]:
        if lock and columns is None:
            # A locking read that times out after it sent rows ends its
            # binary result with an error packet, which
            # mysql-connector-python 26.10 does not check for: it repeats
            # the last row and waits for more forever. COUNT(*) takes the
            # same locks and sends its one row after the last lock, so the
            # read that follows holds every lock already.
            # NOTE: under READ COMMITTED no gap is locked, so a row inserted
            # at a planned key between the two reads can still make the
            # second one wait.
            super()._rows_by_key(table, keys, lock=True, columns="COUNT(*)")
        return super()._rows_by_key(table, keys, lock, columns)

    def _rollback_quietly(self) -> None:
        try:
            self.conn.rollback()
        except Exception:  # noqa: BLE001 - the connection may be gone
            self.log.debug("rollback failed", exc_info=True)

    def delete_rows(self, table: _rows.TableInfo, keys: Sequence[Sequence[Any]]) -> None:
        """Delete rows by key inside the transaction of :meth:`purge_transaction`."""
        name = self.quote_table(table.name)
        cursor = self.conn.cursor(prepared=True)
        try:
            if len(table.key) == 1:
                parts = _rows.key_parts(keys, _rows.KEYS_PER_READ, self.max_key_bytes)
                for part in parts:
                    marks = ", ".join([self.placeholder] * len(part))
                    cursor.execute(
                        f"DELETE FROM {name} WHERE {self.quote(table.key[0])} IN ({marks})",
                        tuple(key[0] for key in part),
                    )
            else:
                condition = " AND ".join(
                    f"{self.quote(col)} = {self.placeholder}" for col in table.key
                )
                for key in keys:
                    cursor.execute(f"DELETE FROM {name} WHERE {condition}", tuple(key))
        except BaseException:
            # The caller reports every row as kept, so none may stay deleted.
            self._rollback_quietly()
            raise
        finally:
            self._close_cursor(cursor)

    def delete_group_rows(
        self,
        table: _rows.TableInfo,
        keys: Sequence[Sequence[Any]],
        digests: Sequence[str],
        versions: Sequence[Any] | None,
    ) -> set[int] | None:
        """Delete the rows at ``keys`` whose digest is among ``digests``, all or none.

        The digest covers every column, the key included, so a row that
        matches is exactly one planned row, and a count of deleted rows equal
        to the planned rows means that each of them matched. Otherwise some
        row changed or is gone: the transaction is rolled back, and None sends
        the batch to the row-by-row path, which reports each row's case.
        """
        entries = [(*key, digest) for key, digest in zip(keys, digests, strict=True)]
        width = len(table.key)
        per_part = min(
            _rows.KEYS_PER_READ if width == 1 else COMPOSITE_KEYS_PER_DELETE,
            MAX_STATEMENT_PARAMS // (width + 1),
        )
        self.conn.start_transaction()
        try:
            deleted = 0
            for part in _rows.key_parts(entries, per_part, self.max_key_bytes):
                cursor, sql = self._prepared_delete(table, len(part))
                params = [value for entry in part for value in entry[:width]]
                params.extend(entry[width] for entry in part)
                cursor.execute(sql, params)
                deleted += cursor.rowcount
            if deleted != len(entries):
                self.log.info(
                    "grouped delete matched fewer rows than planned",
                    table=table.name,
                    planned=len(entries),
                    matched=deleted,
                )
                self.conn.rollback()
                return None
            self.conn.commit()
        except BaseException:
            self._rollback_quietly()
            raise
        return set(range(len(entries)))

    def _prepared_delete(self, table: _rows.TableInfo, count: int) -> tuple[Any, str]:
        """Return the prepared cursor and statement for ``count`` rows of ``table``."""

        def text() -> str:
            name = self.quote_table(table.name)
            mark = self.placeholder
            if len(table.key) == 1:
                keys = f"{self.quote(table.key[0])} IN ({', '.join([mark] * count)})"
            else:
                columns = ", ".join(self.quote(column) for column in table.key)
                row = "(" + ", ".join([mark] * len(table.key)) + ")"
                keys = f"({columns}) IN ({', '.join([row] * count)})"
            return (
                f"DELETE FROM {name} WHERE {keys} "
                f"AND {self._digest_sql(table)} IN ({', '.join([mark] * count)})"
            )

        return self._kept_cursor((table.name, count), text)

    def _kept_cursor(self, key: Hashable, text: Callable[[], str]) -> tuple[Any, str]:
        """Return the prepared cursor kept under ``key`` and the text to execute.

        Without one, ``text`` gives the statement, and a new cursor is kept
        with it, closing the oldest one past :data:`PREPARED_KEPT`. The text
        returned is the one first kept.
        """
        found = self._kept_statements.get(key)
        if found is not None:
            return found[1], found[0]
        if len(self._kept_statements) >= PREPARED_KEPT:
            oldest = next(iter(self._kept_statements))
            self._close_cursor(self._kept_statements.pop(oldest)[1])
        statement = text()
        cursor = self.conn.cursor(prepared=True)
        self._kept_statements[key] = (statement, cursor)
        return cursor, statement

    def _forget_prepared(self, key: Hashable) -> None:
        """Close and drop the cursor kept under ``key``, after a failed statement."""
        found = self._kept_statements.pop(key, None)
        if found is not None:
            self._close_cursor(found[1])

    def _close_prepared(self) -> None:
        for _text, cursor in self._kept_statements.values():
            self._close_cursor(cursor)
        self._kept_statements.clear()

    def _close_cursor(self, cursor: Any) -> None:
        try:
            cursor.close()
        except Exception:  # noqa: BLE001 - the connection may be gone
            self.log.debug("cursor close failed", exc_info=True)

    def compaction_steps(self) -> Iterator[PurgeResult]:
        yield self.step(
            "wait-purge",
            self._wait_for_purge,
            "InnoDB purged the delete-marked records and their undo entries",
        )
        for name in self._touched:
            quoted = self.quote_table(name)
            yield self.step(
                f"rebuild:{name}",
                lambda quoted=quoted: self.query(f"ALTER TABLE {quoted} FORCE") and None,
                f"rebuilt {name} and its indexes into a new tablespace file",
            )
            yield self.step(
                f"flush:{name}",
                lambda quoted=quoted: self._flush(quoted),
                f"wrote the pages of {name} to its file",
            )
        if self.facts.get("log_bin") and self.purge_binary_logs:
            yield self.step(
                "purge-binary-logs",
                self._purge_binary_logs,
                "rotated the binary log and removed every earlier binary log file",
            )

    def _purge_binary_logs(self) -> dict[str, Any]:
        """Rotate the binary log, then remove every file before the new one.

        The deleted rows (row images in ROW format, statements otherwise)
        and the statements that once inserted them are in the old files.
        The server keeps files a replica is still reading, so the step fails
        when an old file survives the retries.
        """
        before = [row[0] for row in self.query("SHOW BINARY LOGS")]
        self.query("FLUSH BINARY LOGS")
        current = self.query("SHOW MASTER STATUS")[0][0]
        # File names come from the server, so the literal carries no row data.
        escaped = current.replace("\\", "\\\\").replace("'", "\\'")
        deadline = time.monotonic() + BINLOG_PURGE_WAIT
        while True:
            self.query(f"PURGE BINARY LOGS TO '{escaped}'")
            left = [row[0] for row in self.query("SHOW BINARY LOGS") if row[0] != current]
            if not left:
                break
            if time.monotonic() > deadline:
                raise PurgeFailed(
                    f"PURGE BINARY LOGS kept {', '.join(left)} for {BINLOG_PURGE_WAIT:g} s; "
                    "a replica may still be reading them, and the deleted rows stay in "
                    "them; run the purge again once the replica has read them"
                )
            # MariaDB keeps a file until its binlog checkpoint is written,
            # which happens in the background after the rotation.
            time.sleep(0.2)
        self._binlogs_purged = True
        return {"removed": [name for name in before if name != current], "current": current}

    def _history_length(self) -> int:
        rows = self.query(
            "SELECT COUNT FROM information_schema.INNODB_METRICS "
            "WHERE NAME = 'trx_rseg_history_len'"
        )
        return int(rows[0][0]) if rows else 0

    def _wait_for_purge(self) -> dict[str, Any]:
        """Wait until InnoDB's history list is empty or stops shrinking.

        MariaDB 10.5.7 and later block in ``SET GLOBAL
        innodb_max_purge_lag_wait=0`` until the list is empty; other servers
        are polled. Other sessions' open transactions keep history alive, so
        the wait ends with a failure after ``purge_wait`` seconds.
        """
        try:
            # NOTE: this statement waits without a time limit while another
            # session's open transaction keeps history, so purge_wait applies
            # only to servers that are polled below.
            self.query("SET GLOBAL innodb_max_purge_lag_wait = 0")
            return {"history_length": self._history_length()}
        except _connector().Error as error:
            self.log.debug("innodb_max_purge_lag_wait unavailable", errno=error.errno)
        deadline = time.monotonic() + self.purge_wait
        while True:
            length = self._history_length()
            if length == 0:
                return {"history_length": 0}
            if time.monotonic() > deadline:
                raise PurgeFailed(
                    f"InnoDB's history list still holds {length} entries after "
                    f"{self.purge_wait:g} s; an open transaction elsewhere keeps undo "
                    "records of the deleted rows; end it and run the purge again"
                )
            time.sleep(0.5)

    def _flush(self, quoted: str) -> None:
        self.query(f"FLUSH TABLES {quoted} FOR EXPORT")
        self.query("UNLOCK TABLES")

    # -- plan facts and verification -----------------------------------------

    def engine_info(self) -> TargetInfo:
        facts = self.facts
        table = self.table(self.selection.table)
        size = self.query(
            "SELECT DATA_LENGTH, INDEX_LENGTH, TABLE_ROWS FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (table.name,),
        )[0]
        notes = [
            f"server {facts['version']}, database {self.database}",
            f"{table.name}: about {size[2]} rows, {size[0]} bytes of data and "
            f"{size[1]} bytes of secondary indexes",
            f"binary log {'on' if facts['log_bin'] else 'off'}, "
            f"innodb_file_per_table={facts['file_per_table']}",
        ]
        media = {
            "engine": "mysql",
            "version": facts["version"],
            "server": f"{self.target.parts.hostname}:{self.target.parts.port or 3306}",
            "database": self.database,
        }
        residual = self._residual()
        residual.extend(self._trigger_residual(table.name))
        return TargetInfo(media=media, notes=tuple(notes), residual=tuple(residual))

    def _trigger_residual(self, table: str) -> list[str]:
        """Return a residual risk naming the DELETE triggers of ``table``, if it has any."""
        triggers = [
            row[0]
            for row in self.query(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                "WHERE EVENT_OBJECT_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = %s "
                "AND EVENT_MANIPULATION = 'DELETE' ORDER BY ACTION_ORDER",
                (table,),
            )
        ]
        if not triggers:
            return []
        return [
            f"DELETE triggers on {table} ({', '.join(triggers)}) run for every purged "
            "row, and what they write to other tables, such as an archive copy, is "
            "neither purged nor scanned; review or drop them before the purge"
        ]

    def _residual(self) -> list[str]:
        facts = self.facts
        residual = [
            "the InnoDB redo log (ib_logfile0) holds the rows' pages and changes until "
            "the server overwrites it in circular order",
            "undo logs in the system or undo tablespaces keep old record versions until "
            "purged and reused"
            + (f" ({facts['undo_tablespaces']} undo tablespaces)" if facts["undo_tablespaces"] else ""),
            "backups and dumps taken before the purge",
        ]
        if facts["log_bin"]:
            residual.extend(self._binlog_residual())
        else:
            residual.append("the binary log is off, so no binlog copies were written")
        if not facts["file_per_table"]:
            residual.append(
                "innodb_file_per_table is off: the table lives in the shared system "
                "tablespace, which ALTER TABLE cannot shrink, so freed pages keep old bytes"
            )
        if facts["general_log"]:
            residual.append("the general query log records statement texts")
        residual.extend(self._replica_residual())
        residual.append(
            "the tablespace file replaced by ALTER TABLE leaves its old bytes in free "
            f"blocks of the filesystem holding {facts['datadir']}; wipe its free space "
            "as a follow-up step"
        )
        return residual

    def _binlog_residual(self) -> list[str]:
        try:
            files = f"{len(self.query('SHOW BINARY LOGS'))} files"
        except _connector().Error as error:
            # Listing the files needs BINLOG MONITOR (MariaDB) or REPLICATION
            # CLIENT, which the purge itself does not.
            self.log.debug("binary logs not listed", errno=error.errno)
            files = "files not listed"
        state = (
            f"the binary log is on ({files}, binlog_format="
            f"{self.facts['binlog_format']}): it contains the statements or row images "
            "that inserted the rows, and the delete writes the rows into it again"
        )
        if not self.purge_binary_logs:
            return [
                f"{state}; they stay until PURGE BINARY LOGS or expiry removes the "
                "files. Set purge_binary_logs: true to remove them after the purge"
            ]
        found = [
            f"{state}; after the purge the log is rotated and every earlier file "
            "removed with PURGE BINARY LOGS, which ends point-in-time recovery to "
            "moments before the purge"
        ]
        if not self._may_purge_binary_logs():
            found.append(
                "PURGE BINARY LOGS cannot run: it needs the BINLOG ADMIN or SUPER "
                "privilege, so the binary log keeps the rows"
            )
        found.append(
            "replicas and binary log backups that copied the files before the purge "
            "keep the rows"
        )
        return found

    def _may_purge_binary_logs(self) -> bool:
        # These privileges are global, so only grants ON *.* carry them.
        for (grant,) in self.query("SHOW GRANTS"):
            text = grant.upper()
            if " ON *.* " not in text:
                continue
            if any(name in text for name in ("ALL PRIVILEGES", "SUPER", "BINLOG ADMIN")):
                return True
        return False

    def _replica_residual(self) -> list[str]:
        found = []
        try:
            replicas = self.query("SHOW SLAVE HOSTS")
        except _connector().Error:
            return ["replicas could not be listed (needs REPLICATION MASTER ADMIN)"]
        for replica in replicas:
            found.append(f"replica server {replica[0]} ({replica[1]}) holds its own copy")
        try:
            if self.query("SHOW SLAVE STATUS"):
                found.append("this server is itself a replica; its primary keeps the rows")
        except _connector().Error:
            self.log.debug("replica status not readable")
        return found

    def data_files(self) -> tuple[list[str], str | None]:
        directory = self.facts.get("datadir") or ""
        if not directory or not os.access(directory, os.R_OK | os.X_OK):
            return [], f"the data directory {directory} is not readable by this process"
        if not self.facts.get("file_per_table"):
            return [], "the table lives in the system tablespace, which is not scanned"
        # NOTE: names with characters outside [A-Za-z0-9_] are encoded in file
        # names (@0040 and the like); such tables are not found here.
        names = dict.fromkeys([self.table(self.selection.table).name, *self._touched])
        files = [os.path.join(directory, self.database, f"{name}.ibd") for name in names]
        if self._binlogs_purged:
            # Only a purged binary log is expected to be free of the rows.
            folder = os.path.dirname(self.facts.get("log_bin_basename") or "") or directory
            logs = [row[0] for row in self.query("SHOW BINARY LOGS")]
            files.extend(os.path.join(folder, name) for name in logs)
        return [path for path in files if os.path.exists(path)], None
