"""Masking of held rows in the database plugins.

A row that a hold keeps but whose personal columns must go is masked in
place: the columns of the mask spec get their masked values through an
UPDATE with bind parameters, in one transaction per table and batch. The
table then goes through the same compaction as after a purge (VACUUM FULL,
statistics rewrite and CHECKPOINT in PostgreSQL; ``ALTER TABLE ... FORCE``
and a flush in InnoDB; VACUUM in SQLite), so the old values leave the data
files, and verification scans those files for fingerprints of the
original values, as it does for deleted rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from plugins.base import (
    Check,
    Decision,
    Item,
    Method,
    PlannedItem,
    PurgeResult,
    Refusal,
)
from plugins.masking import Masker, MaskingError, MaskStats

if TYPE_CHECKING:
    from plugins._rows import RowStorePlugin, TableInfo


def plan_mask(plugin: RowStorePlugin, item: Item, spec: Mapping[str, Any]) -> Decision:
    """Plan masking of one row: check the columns and key, fingerprint the values."""
    from plugins import _rows

    plugin._pending.pop(item.key, None)
    table = plugin.table(item.attributes["table"])
    fields = list(spec.get("fields", {}))
    missing = [name for name in fields if name not in table.columns]
    if missing:
        return Decision(
            refusal=Refusal(
                "invalid-mask",
                f"the mask names column(s) {', '.join(map(repr, missing))}, "
                f"which table {table.name!r} does not have",
            )
        )
    try:
        Masker.from_spec(spec)
    except (MaskingError, TypeError) as error:
        return Decision(refusal=Refusal("invalid-mask", str(error)))
    rows = plugin._rows_by_key(table, [_rows.decode_key(item.identity["key"])])
    if not rows:
        return Decision(refusal=Refusal("gone", "the row no longer exists"))
    record = dict(zip(table.columns, plugin.split_row(table, rows[0])[2], strict=True))
    words = plugin.full_text_indexed(table.name)
    fingerprints = _rows.row_fingerprints([record[name] for name in fields], words)
    return Decision(
        method=Method.MASK,
        fingerprints=tuple(fingerprints),
        params={"mask": dict(spec)},
        residual=(
            (
                "copies of the old values in the engine's logs and backups are "
                f"not rewritten ({table.name})"
            ),
        ),
    )


def mask_table(
    plugin: RowStorePlugin, table: TableInfo, entries: Sequence[PlannedItem]
) -> Iterator[PurgeResult]:
    """Mask the planned rows of one table and mark the table for compaction."""
    from plugins import _rows

    keys = [_rows.decode_key(entry.item.identity["key"]) for entry in entries]
    try:
        rows = plugin._rows_by_key(table, keys)
    except Exception as error:  # noqa: BLE001 - translated below
        raise plugin.translate(error, f"re-read rows of {table.name}") from None
    current = {}
    for row in rows:
        key, digest, values = plugin.split_row(table, row)
        current[_rows.item_key(table.name, key)] = (key, digest, values)
    updates: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    masked: list[PlannedItem] = []
    for entry in entries:
        found = current.get(entry.item.key)
        if found is None:
            yield PurgeResult(
                entry.item.key,
                "failed",
                f"row {entry.item.key} is gone, so there is nothing to mask",
                method=Method.MASK,
            )
            continue
        key, digest, values = found
        if digest != entry.item.identity["digest"]:
            yield PurgeResult(
                entry.item.key,
                "failed",
                f"row {entry.item.key} changed since planning; it was not masked, "
                "plan again to include its new values",
                method=Method.MASK,
            )
            continue
        spec = entry.decision.params["mask"]
        masker = Masker.from_spec(spec)
        record = dict(zip(table.columns, values, strict=True))
        masker.mask_record(record, MaskStats())
        updates.append((key, {name: record[name] for name in masker.fields}))
        masked.append(entry)
    if not updates:
        return
    try:
        update_rows(plugin, table, updates)
    except Exception as error:  # noqa: BLE001 - translated below
        failure = plugin.translate(error, f"mask {len(updates)} row(s) of {table.name}")
        plugin.log.error(
            "mask failed", table=table.name, rows=len(updates), error=str(failure)
        )
        for entry in masked:
            yield PurgeResult(
                entry.item.key,
                "failed",
                f"{_rows.as_sentence(failure)} The transaction was rolled back, so row "
                f"{entry.item.key} keeps its values; run the job again.",
                method=Method.MASK,
            )
        return
    if table.name not in plugin._touched:
        plugin._touched.append(table.name)
    plugin.log.info("rows masked", table=table.name, rows=len(updates))
    for entry in masked:
        plugin.context.progress(entry.item.size)
        fields = len(entry.decision.params["mask"].get("fields", {}))
        yield PurgeResult(
            entry.item.key,
            "purged",
            f"masked {fields} column(s); compaction follows",
            bytes=entry.item.size,
            method=Method.MASK,
        )


def update_rows(
    plugin: RowStorePlugin,
    table: TableInfo,
    updates: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
) -> None:
    """Write the masked values of several rows in one transaction, values bound."""
    name = plugin.rows_of(table.name)
    mark = plugin.placeholder
    condition = " AND ".join(f"{plugin.quote(col)} = {mark}" for col in table.key)
    statements: dict[tuple[str, ...], str] = {}
    params: list[tuple[tuple[str, ...], tuple[Any, ...]]] = []
    for key, values in updates:
        columns = tuple(values)
        if columns not in statements:
            assignments = ", ".join(f"{plugin.quote(col)} = {mark}" for col in columns)
            statements[columns] = f"UPDATE {name} SET {assignments} WHERE {condition}"
        params.append((columns, (*values.values(), *key)))
    if plugin.name == "postgresql":
        with plugin.conn.transaction():
            cursor = plugin.conn.cursor()
            for columns, values in params:
                cursor.execute(statements[columns], values)
    elif plugin.name == "mysql":
        _update_mysql(plugin, statements, params)
    else:
        _update_sqlite(plugin, statements, params)


def _update_mysql(
    plugin: RowStorePlugin,
    statements: Mapping[tuple[str, ...], str],
    params: Sequence[tuple[tuple[str, ...], tuple[Any, ...]]],
) -> None:
    plugin.conn.start_transaction()
    cursor = plugin.conn.cursor(prepared=True)
    try:
        for columns, values in params:
            cursor.execute(statements[columns], values)
        plugin.conn.commit()
    except BaseException:
        try:
            plugin.conn.rollback()
        except Exception:
            plugin.log.debug("rollback failed", exc_info=True)
        raise
    finally:
        try:
            cursor.close()
        except Exception:
            plugin.log.debug("cursor close failed", exc_info=True)


def _update_sqlite(
    plugin: RowStorePlugin,
    statements: Mapping[tuple[str, ...], str],
    params: Sequence[tuple[tuple[str, ...], tuple[Any, ...]]],
) -> None:
    plugin.conn.execute("BEGIN IMMEDIATE")
    try:
        for columns, values in params:
            plugin.conn.execute(statements[columns], values)
        plugin.conn.execute("COMMIT")
    except BaseException:
        if plugin.conn.in_transaction:
            plugin.conn.execute("ROLLBACK")
        raise


def masked_checks(
    plugin: RowStorePlugin, entries: Sequence[PlannedItem]
) -> dict[str, Check]:
    """Check that each masked row still exists and its columns hold no old value."""
    from plugins import _rows

    checks: dict[str, Check] = {}
    for entry in entries:
        table = plugin.table(entry.item.attributes["table"])
        key = _rows.decode_key(entry.item.identity["key"])
        rows = plugin._rows_by_key(table, [key])
        if not rows:
            checks[entry.item.key] = Check(
                "row-masked", False, "the row is gone; masking should have kept it"
            )
            continue
        record = dict(zip(table.columns, plugin.split_row(table, rows[0])[2], strict=True))
        fields = entry.decision.params["mask"].get("fields", {})
        stored = b"\0".join(_rows._row_bytes(record[name] for name in fields))
        left = [fp for fp in entry.decision.fingerprints if fp in stored]
        checks[entry.item.key] = Check(
            "row-masked",
            not left,
            "the row is kept and its masked columns hold none of the old values"
            if not left
            else f"{len(left)} old value(s) still in the masked columns",
        )
    return checks
