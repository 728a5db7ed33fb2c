"""The plan as a value: its hash, its summary, and saved plan files.

A plan lives in the journal (one row per item). Its hash is the SHA-256 of a
canonical JSON-lines stream: the job settings, then each target's URL,
options and facts, then each item's key, kind, size, identity, method and
refusal reason, ordered by target and key. Fingerprints are not part of it,
because they are taken anew on each discovery and never stored.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import PlanFileInvalid, UsageError
from agent.journal import (
    Journal,
    display_text,
    dumps,
    info_to_json,
    key_text,
    loads,
    now,
    residual_note,
)
from plugins.base import REFUSAL_REASONS, Method, Target

PLAN_FORMAT = "lethe-plan/1"
#: How many refused items each reason lists by name in the summary.
EXAMPLES_PER_REASON = 5
#: How many differences a plan mismatch lists one by one.
DIFFERENCES_SHOWN = 50


#: The item fields the plan hash covers, in the entries of a saved plan too.
HASHED_FIELDS = ("target", "key", "kind", "size", "identity", "method", "refusal")
#: The journal columns those fields come from, besides target and key.
_HASHED_COLUMNS = ("kind", "size", "identity", "method", "refusal")


def hash_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return the fields of an item that the plan hash covers, from its journal row.

    ``row`` is a raw row of :meth:`Journal.columns` with the hashed columns.
    """
    refusal = None
    stored = loads(row["refusal"]) if row["refusal"] else None
    if stored:
        refusal = {
            "reason": stored["reason"],
            "blocked_until": stored.get("blocked_until"),
        }
    return {
        "target": row["target"],
        "key": key_text(row["key"]),
        "kind": row["kind"],
        "size": row["size"],
        "identity": loads(row["identity"]),
        "method": row["method"],
        "refusal": refusal,
    }


def plan_hash(journal: Journal, job_id: str) -> str:
    """Compute the plan hash of a job from its journal rows, streaming.

    Only the hashed columns are read, so no other JSON column is decoded.
    """
    job = journal.job(job_id)
    targets = (
        (row.target.url, row.target.options, info_to_json(row.info))
        for row in journal.targets(job_id)
    )
    rows = journal.columns(job_id, _HASHED_COLUMNS, by_key=True)
    items = (hash_entry(row) for row in rows)
    return _hash_lines(job.settings, targets, items)


def _hash_lines(
    settings: Mapping[str, Any],
    targets: Iterable[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
    items: Iterable[Mapping[str, Any]],
) -> str:
    """Hash the settings, then each (url, options, info) target, then each item."""
    digest = hashlib.sha256()
    digest.update((dumps({"settings": settings}) + "\n").encode())
    for url, options, info in targets:
        line = {"target": url, "options": options, "info": info}
        digest.update((dumps(line) + "\n").encode())
    for entry in items:
        digest.update((dumps(entry) + "\n").encode())
    return digest.hexdigest()


def summarize(journal: Journal, job_id: str) -> dict[str, Any]:
    """Build the plan summary with aggregate queries, never loading every item."""
    job = journal.job(job_id)
    targets = []
    totals = {
        "items": 0,
        "bytes": 0,
        "permitted": 0,
        "permitted_bytes": 0,
        "refused": 0,
        "refused_bytes": 0,
    }
    for target_row in journal.targets(job_id):
        entry = _target_summary(journal, job_id, target_row.position)
        entry.update(
            url=target_row.target.url,
            plugin=target_row.plugin,
            media=dict(target_row.info.media),
            notes=list(target_row.info.notes),
            residual=list(target_row.info.residual),
        )
        for method in entry["methods"]:
            totals["permitted"] += method["items"]
            totals["permitted_bytes"] += method["bytes"]
        for refused in entry["refused"]:
            totals["refused"] += refused["items"]
            totals["refused_bytes"] += refused["bytes"]
        targets.append(entry)
    totals["items"] = totals["permitted"] + totals["refused"]
    totals["bytes"] = totals["permitted_bytes"] + totals["refused_bytes"]
    return {
        "job_id": job_id,
        "plan_hash": job.plan_hash,
        "dry_run": job.dry_run,
        "settings": dict(job.settings),
        "targets": targets,
        "totals": totals,
        "residual": [
            *_item_residual(journal, job_id),
            {"risk": residual_note(journal.path), "items": totals["items"]},
        ],
        "classifications": _classifications(journal, job_id),
        "copies": copies(journal, job_id),
    }


def copies(journal: Journal, job_id: str) -> list[dict[str, Any]]:
    """List the copies of selected data (snapshots, backups) and their state.

    Plugins mark such items with a ``copy`` attribute. Kept copies stay
    listed so a report or the erasure ledger can record where data survives.
    """
    rows = journal.query(
        "SELECT target, key, kind, label, size, state, method, detail,"
        " json_extract(attributes, '$.copy') AS copy,"
        " json_extract(attributes, '$.created') AS created,"
        " json_extract(refusal, '$.reason') AS reason,"
        " json_extract(refusal, '$.detail') AS refusal_detail"
        " FROM items WHERE job_id = ? AND json_extract(attributes, '$.copy') IS NOT NULL"
        " ORDER BY target, key",
        (job_id,),
    )
    return [
        {
            "target": row["target"],
            "key": display_text(key_text(row["key"])),
            "copy": row["copy"],
            "label": row["label"],
            "created": row["created"],
            "size": row["size"],
            "state": row["state"],
            "method": row["method"],
            "reason": row["reason"],
            "detail": row["refusal_detail"] or row["detail"] or "",
        }
        for row in rows
    ]


def _target_summary(journal: Journal, job_id: str, position: int) -> dict[str, Any]:
    methods = [
        {
            "method": row["method"],
            "category": Method(row["method"]).sp800_88_category,
            "items": row["n"],
            "bytes": row["total"],
        }
        for row in journal.query(
            "SELECT method, COUNT(*) AS n, COALESCE(SUM(size), 0) AS total FROM items"
            " WHERE job_id = ? AND target = ? AND method IS NOT NULL"
            " GROUP BY method ORDER BY method",
            (job_id, position),
        )
    ]
    refused = []
    for row in journal.query(
        "SELECT json_extract(refusal, '$.reason') AS reason, COUNT(*) AS n,"
        " COALESCE(SUM(size), 0) AS total FROM items"
        " WHERE job_id = ? AND target = ? AND method IS NULL GROUP BY reason ORDER BY reason",
        (job_id, position),
    ):
        examples = journal.query(
            "SELECT key, label, json_extract(refusal, '$.detail') AS detail FROM items"
            " WHERE job_id = ? AND target = ? AND method IS NULL"
            " AND json_extract(refusal, '$.reason') = ? ORDER BY key LIMIT ?",
            (job_id, position, row["reason"], EXAMPLES_PER_REASON),
        )
        refused.append(
            {
                "reason": row["reason"],
                "description": REFUSAL_REASONS.get(row["reason"], row["reason"]),
                "items": row["n"],
                "bytes": row["total"],
                "examples": [
                    {
                        "item": example["label"] or key_text(example["key"]),
                        "detail": example["detail"] or "",
                    }
                    for example in examples
                ],
            }
        )
    return {"methods": methods, "refused": refused}


def _item_residual(journal: Journal, job_id: str) -> list[dict[str, Any]]:
    rows = journal.query(
        "SELECT residual.value AS risk, COUNT(*) AS n FROM items, json_each(items.residual) AS residual"
        " WHERE items.job_id = ? GROUP BY residual.value ORDER BY residual.value",
        (job_id,),
    )
    return [{"risk": row["risk"], "items": row["n"]} for row in rows]


def _classifications(journal: Journal, job_id: str) -> dict[str, int]:
    rows = journal.query(
        "SELECT classification, COUNT(*) AS n FROM items WHERE job_id = ? GROUP BY classification",
        (job_id,),
    )
    return {row["classification"]: row["n"] for row in rows}


# Saved plan files


def write_plan_file(
    path: str | os.PathLike[str],
    journal: Journal,
    job_id: str,
    summary: Mapping[str, Any],
) -> None:
    """Write the plan as one JSON document, streaming items one per line."""
    job = journal.job(job_id)
    targets = [
        {
            "url": row.target.url,
            "options": dict(row.target.options),
            "plugin": row.plugin,
            "info": info_to_json(row.info),
        }
        for row in journal.targets(job_id)
    ]
    header = {
        "format": PLAN_FORMAT,
        "plan_hash": job.plan_hash,
        "job_id": job_id,
        "created": now(),
        "settings": dict(job.settings),
        "targets": targets,
        "summary": summary,
    }
    temporary = Path(f"{os.fspath(path)}.tmp")
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write(dumps(header)[:-1] + ',"items":[\n')
        first = True
        columns = (*_HASHED_COLUMNS, "label", "classification")
        for row in journal.columns(job_id, columns, by_key=True):
            entry = hash_entry(row)
            entry["label"] = row["label"]
            entry["classification"] = row["classification"]
            stream.write(("" if first else ",\n") + dumps(entry))
            first = False
        stream.write("\n]}\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


@dataclass
class SavedPlan:
    """A plan file read back for ``purge --plan``."""

    path: str
    plan_hash: str
    settings: Mapping[str, Any]
    targets: list[Target]
    target_infos: list[Mapping[str, Any]]
    items: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)


def read_plan_file(path: str) -> SavedPlan:
    """Load a plan file written by ``lethe plan -o``.

    NOTE: the whole file is parsed at once; a plan of 50,000 items takes
    some tens of MiB while the comparison runs.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except OSError as error:
        raise UsageError(f"cannot read plan file {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise UsageError(f"plan file {path} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
        raise UsageError(
            f"{path} is not a Lethe plan file (expected format {PLAN_FORMAT!r})"
        )
    try:
        saved = SavedPlan(
            path=path,
            plan_hash=document["plan_hash"],
            settings=document["settings"],
            targets=[
                Target(entry["url"], entry.get("options", {}))
                for entry in document["targets"]
            ],
            target_infos=[entry.get("info", {}) for entry in document["targets"]],
            items={
                (entry["target"], entry["key"]): entry for entry in document["items"]
            },
        )
    except (KeyError, TypeError) as error:
        raise UsageError(f"plan file {path} lacks a required field: {error}") from error
    _check_hash(path, document)
    from agent.config import check_plan_settings

    check_plan_settings(document["settings"], path)
    return saved


def _check_hash(path: str, document: Mapping[str, Any]) -> None:
    """Raise PlanFileInvalid unless the file's plan hash matches its content.

    The hash covers the settings, targets and item fields that a purge acts
    on. The summary and the item labels are only displayed, so they are not
    checked.
    """
    targets = (
        (entry["url"], entry.get("options", {}), entry.get("info", {}))
        for entry in document["targets"]
    )
    items = (
        {name: entry.get(name) for name in HASHED_FIELDS}
        for entry in document["items"]
    )
    try:
        computed = _hash_lines(document["settings"], targets, items)
    except (KeyError, TypeError, AttributeError) as error:
        raise PlanFileInvalid(
            f"plan file {path} is damaged ({error!r}); nothing was destroyed. "
            "Create a new plan with 'lethe plan -o FILE', review it and purge with that"
        ) from error
    if computed != document["plan_hash"]:
        raise PlanFileInvalid(
            f"plan file {path} does not match its plan hash {document['plan_hash']}: "
            "it was edited or damaged after 'lethe plan -o' wrote it, so nothing was "
            "destroyed. Create a new plan with 'lethe plan -o FILE', review it and "
            "purge with that"
        )


COMPARED_FIELDS = ("kind", "size", "identity", "method", "refusal")


def compare(
    saved: SavedPlan, journal: Journal, job_id: str
) -> Iterator[dict[str, Any]]:
    """Yield every difference between a saved plan and a fresh discovery."""
    found = False
    for difference in _differences(saved, journal, job_id):
        found = True
        yield difference
    if not found and journal.job(job_id).plan_hash != saved.plan_hash:
        # The hash also covers the settings, so an edited plan file differs
        # here even when every item and target fact matches.
        yield {
            "change": "changed",
            "target": "(plan)",
            "item": "(plan hash)",
            "fields": ["plan_hash"],
        }


def _differences(
    saved: SavedPlan, journal: Journal, job_id: str
) -> Iterator[dict[str, Any]]:
    """Yield the item and target differences between a saved plan and a discovery."""
    urls = {row.position: row.target.url for row in journal.targets(job_id)}
    expected = dict(saved.items)
    columns = (*_HASHED_COLUMNS, "label")
    for row in journal.columns(job_id, columns, by_key=True):
        entry = hash_entry(row)
        target, key = entry["target"], entry["key"]
        old = expected.pop((target, key), None)
        if old is None:
            yield {
                "change": "new",
                "target": urls[target],
                "item": row["label"] or key,
            }
            continue
        changed = [name for name in COMPARED_FIELDS if old.get(name) != entry[name]]
        if changed:
            yield {
                "change": "changed",
                "target": urls[target],
                "item": row["label"] or key,
                "fields": changed,
            }
    for (target, key), old in sorted(expected.items()):
        yield {
            "change": "missing",
            "target": urls.get(target, str(target)),
            "item": old.get("label") or key,
        }
    for row in journal.targets(job_id):
        old_info = (
            saved.target_infos[row.position]
            if row.position < len(saved.target_infos)
            else {}
        )
        if dumps(old_info) != dumps(info_to_json(row.info)):
            yield {
                "change": "changed",
                "target": row.target.url,
                "item": "(target facts)",
                "fields": ["info"],
            }
