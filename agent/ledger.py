"""The erasure ledger: what every purge destroyed, so it can be re-applied.

A backup restored after a purge brings the purged data back. For each
finished purge the ledger records the selector of every target: the base
URL without credentials, and the selection keys of the query and options
(table, WHERE clause and bind parameters), which a replay needs to select
again. It also records a digest of each destroyed item's key, taken
relative to the target so a copy restored elsewhere still matches. Item
keys themselves (file names, primary keys) are not stored.

Digests are HMAC-SHA256 under the ledger key, 32 random bytes kept in
``<state_dir>/keys/ledger.key``. A plain hash of a key from a small space
(a numeric customer id) is reversed by hashing every candidate, but an
HMAC cannot be computed without the ledger key. Each entry names its
digest scheme and the id of the key it used. Entries without a scheme
were written with plain SHA-256 and still replay.

The ledger reuses the audit log's format: append-only JSON lines, each
carrying the SHA-256 of the line before it, so an edit, a removed line or a
reordering is detected by :func:`verify`.

``replay`` re-applies the ledger to restored copies: it plans each recorded
selector against the restored target, keeps only the items whose key digest
the ledger holds (the resurfaced ones), reports entries it cannot apply,
and purges and certifies the rest as one job through the engine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from agent import hooks, keyfile
from agent.audit import AuditLog
from agent.config import Config
from agent.engine import Engine, JobOutcome
from agent.errors import LetheError
from agent.journal import Journal, key_text
from agent.registry import Registry
from plugins.base import Item, Plugin, Target
from plugins.errors import PluginError

log = structlog.get_logger(__name__)

FILE_NAME = "erasure-ledger.log"
KIND = "erasure"
KEY_FILE = "keys/ledger.key"
#: The digest scheme of new entries, and the one of entries that name none.
HMAC_SHA256 = "hmac-sha256"
PLAIN_SHA256 = "sha256"
DIGEST_SCHEMES = (HMAC_SHA256, PLAIN_SHA256)
#: Query and option keys kept in a selector; anything else (credentials,
#: endpoints, store paths) is left out of the ledger.
SELECTOR_KEYS = (
    "table",
    "where",
    "param",
    "params",
    "all_rows",
    "delete_dependents",
    "prefix",
    "subject_prefix",
    "all_keys",
    "recursive",
)


def open_ledger(state_dir: Path) -> AuditLog:
    return AuditLog(state_dir / FILE_NAME)


class LedgerKeyError(LetheError):
    """The ledger key is missing, unreadable, unsafe or not the one an entry used."""


def load_or_create_key(state_dir: Path) -> bytes:
    """Return the ledger key, creating it (mode 0600) when there is none."""
    path = state_dir / KEY_FILE
    key, created = keyfile.load_or_create(path, "ledger key", LedgerKeyError)
    if created:
        log.info("ledger key created", path=str(path), key_id=key_id(key))
    return key


def load_key(state_dir: Path) -> bytes | None:
    """Return the ledger key, or None when the state directory has none."""
    path = state_dir / KEY_FILE
    if not path.exists():
        return None
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    return keyfile.read(path, "ledger key", LedgerKeyError)


def key_id(key: bytes) -> str:
    """Return the public id of a ledger key: 16 hex digits of a SHA-256 of it."""
    return hashlib.sha256(b"lethe ledger key id\0" + key).hexdigest()[:16]


def item_digest(relative_key: str, key: bytes | None) -> str:
    """Return the digest that stands for a destroyed item's key in the ledger.

    With a ledger key the digest is HMAC-SHA256. Without one it is the plain
    SHA-256 that entries without a digest scheme hold.
    """
    data = b"lethe ledger item\0" + relative_key.encode("utf-8", "surrogateescape")
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.digest(key, data, "sha256").hex()


def subject_digest(subject: str, key: bytes) -> str:
    """Return the HMAC-SHA256 that replaces a subject id in the ledger."""
    data = b"lethe ledger subject\0" + subject.encode("utf-8", "surrogateescape")
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def target_path(target: Target) -> str:
    """Return the path part of a target: the file system path or the URL path."""
    return target.parts.path if "://" in target.url else target.url


def relative_key(target: Target, key: str) -> str:
    """Strip the target's own path from an item key, so restored copies match."""
    root = target_path(target).rstrip("/")
    if root and key == root:
        return ""
    if root and key.startswith(root + "/"):
        return key[len(root) + 1 :]
    return key


def base_url(target: Target) -> str:
    """Return the target URL without credentials, query or fragment."""
    if "://" not in target.url:
        return target.url
    parts = target.parts
    # Split off user and password by hand: ``parts.port`` raises on netlocs
    # that are no host:port, such as the subject in key://dataset:orders.
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


def selector(target: Target) -> dict[str, Any]:
    """Return the selection keys of the target's query and options."""
    chosen: dict[str, Any] = {}
    if "://" in target.url:
        for key, values in urllib.parse.parse_qs(
            target.parts.query, keep_blank_values=True
        ).items():
            if key in SELECTOR_KEYS:
                chosen[key] = values if key == "param" else values[-1]
    for key, value in target.options.items():
        if key in SELECTOR_KEYS:
            chosen[key] = value
    return chosen


# --- recording ----------------------------------------------------------------


def record_job(summary: Mapping[str, Any]) -> None:
    """Append the verified items of a finished job to the ledger (an after-job hook)."""
    state_dir = summary.get("state_dir")
    job_id = summary.get("job_id")
    if not state_dir or not job_id:
        log.warning(
            "erasure ledger not written: the job summary names no state directory",
            job=job_id,
        )
        return
    journal = Journal.open(Path(state_dir))
    try:
        job = journal.job(job_id)
        if job.dry_run:
            return
        key = load_or_create_key(Path(state_dir))
        targets = list(_target_records(journal, job_id, key))
    finally:
        journal.close()
    if not targets:
        return
    position = open_ledger(Path(state_dir)).append(
        KIND,
        job_id=job_id,
        digest=HMAC_SHA256,
        key_id=key_id(key),
        plan_hash=job.plan_hash,
        certificate=summary.get("certificate"),
        targets=targets,
    )
    log.info(
        "erasure ledger entry written",
        job=job_id,
        seq=position.seq,
        targets=len(targets),
    )


def _target_records(
    journal: Journal, job_id: str, key: bytes
) -> Iterator[dict[str, Any]]:
    # NOTE: all digests of a job go into one JSON line (64 hex digits per
    # item), so a purge of millions of items writes a line of many MiB.
    for row in journal.targets(job_id):
        items = journal.columns(job_id, (), target=row.position, states=["verified"])
        digests = sorted(
            {
                item_digest(relative_key(row.target, key_text(item["key"])), key)
                for item in items
            }
        )
        if not digests:
            continue
        record = {
            "scheme": row.target.scheme,
            "plugin": row.plugin,
            "base": base_url(row.target),
            "name": PurePosixPath(target_path(row.target)).name,
            "selector": selector(row.target),
            "count": len(digests),
            "items": digests,
        }
        if row.target.scheme == "key":
            # The subject id is personal data; key ids in ``items`` are enough
            # to find resurrected keys in a restored store.
            subject = urllib.parse.unquote(row.target.url.split("://", 1)[1])
            digest = subject_digest(subject, key)
            record.update(
                base=f"key://{HMAC_SHA256}:{digest[:16]}", name="", subjects=[digest]
            )
        yield record


hooks.register_after_job(record_job)


def verify(state_dir: Path) -> int:
    """Check the ledger's hash chain; return the number of entries checked."""
    position = open_ledger(state_dir).verify()
    return 0 if position is None else position.seq + 1


def entries(state_dir: Path) -> Iterator[dict[str, Any]]:
    for entry, _digest in open_ledger(state_dir).entries():
        if entry.get("kind") == KIND:
            yield entry


# --- replay --------------------------------------------------------------------


@dataclass
class ReplayUnit:
    """One recorded selector applied to one restored target.

    Each digest in ``digests`` carries its scheme as a prefix
    (``hmac-sha256:<hex>``), because one unit can gather entries written
    before and after the ledger key existed.
    """

    target: Target
    digests: set[str]
    sources: list[str] = field(default_factory=list)
    resurfaced: int = 0
    resurfaced_bytes: int = 0


@dataclass(frozen=True)
class ReplayProblem:
    """A ledger entry that could not be applied, and why."""

    source: str
    target: str
    error: str


@dataclass
class ReplayReport:
    """The findings and outcome of one replay."""

    units: list[ReplayUnit] = field(default_factory=list)
    problems: list[ReplayProblem] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    outcome: JobOutcome | None = None

    @property
    def resurfaced(self) -> int:
        return sum(unit.resurfaced for unit in self.units)

    def as_json(self) -> dict[str, Any]:
        return {
            "resurfaced": self.resurfaced,
            "targets": [
                {
                    "target": unit.target.url,
                    "from": unit.sources,
                    "recorded_items": len(unit.digests),
                    "resurfaced": unit.resurfaced,
                    "resurfaced_bytes": unit.resurfaced_bytes,
                }
                for unit in self.units
            ],
            "not_applied": [problem.__dict__ for problem in self.problems],
            "unmatched_entries": self.unmatched,
            "job": self.outcome.summary() if self.outcome else None,
        }


def replay_key(state_dir: Path) -> tuple[bytes | None, str | None]:
    """Load the ledger key for a replay; return the key or the reason it is unusable."""
    try:
        return load_key(state_dir), None
    except LedgerKeyError as error:
        return None, str(error)


def match_units(
    state_dir: Path,
    restored: Sequence[Target],
    key: bytes | None = None,
    key_error: str | None = None,
) -> tuple[list[ReplayUnit], list[str], list[ReplayProblem]]:
    """Pair each recorded target with the restored target it applies to.

    A restored target applies when its scheme matches and its base URL
    equals the recorded one, or its last path component (the database file
    or directory name) equals the recorded one, or it names a directory
    above the recorded path. Recorded targets no restored target matches
    are returned as ``unmatched``. Recorded targets whose digests cannot be
    computed (the entry's ledger key is missing or another one) are
    returned as problems.
    """
    units: dict[tuple[str, str], ReplayUnit] = {}
    unmatched: list[str] = []
    problems: list[ReplayProblem] = []
    for entry in entries(state_dir):
        scheme = entry.get("digest", PLAIN_SHA256)
        for record in entry.get("targets", ()):
            source = f"ledger entry {entry['seq']} (job {entry.get('job_id')}): {record['base']}"
            chosen = _restored_for(record, restored)
            if chosen is None:
                unmatched.append(source)
                continue
            target = _replay_target(chosen, record)
            error = _digest_problem(state_dir, entry, key, key_error)
            if error is not None:
                problems.append(ReplayProblem(source, target.url, error))
                continue
            options = (target.url, repr(sorted(target.options.items())))
            unit = units.setdefault(options, ReplayUnit(target, set()))
            unit.digests.update(
                f"{scheme}:{digest}" for digest in record.get("items", ())
            )
            unit.sources.append(source)
    return list(units.values()), unmatched, problems


def _digest_problem(
    state_dir: Path,
    entry: Mapping[str, Any],
    key: bytes | None,
    key_error: str | None,
) -> str | None:
    """Return why the entry's digests cannot be computed, or None when they can."""
    scheme = entry.get("digest", PLAIN_SHA256)
    if scheme not in DIGEST_SCHEMES:
        return (
            f"unknown digest scheme {scheme!r}; this version of Lethe replays "
            f"{' and '.join(DIGEST_SCHEMES)}"
        )
    if scheme == PLAIN_SHA256:
        return None
    path = state_dir / KEY_FILE
    restore = (
        f"restore {path} from the backup of the state directory "
        "that holds this ledger, then replay again"
    )
    if key_error is not None:
        return f"{key_error}; {restore}"
    if key is None:
        return (
            f"ledger key {path} not found, so this entry cannot be replayed; "
            f"{restore}"
        )
    if key_id(key) != entry.get("key_id"):
        return (
            f"ledger key {path} has id {key_id(key)}, but this entry was "
            f"written with key {entry.get('key_id')}; {restore}"
        )
    return None


def _restored_for(
    record: Mapping[str, Any], restored: Sequence[Target]
) -> Target | None:
    """Return the restored target a recorded target applies to, re-rooted there."""
    candidates = [target for target in restored if target.scheme == record["scheme"]]
    if record["scheme"] == "key":
        # Destroyed keys come back with a restored key store. ``key://*``
        # stands for the whole store; the recorded key ids pick the keys.
        for target in candidates:
            if target.url == "key://*":
                return Target(target.url, {**target.options, "all_keys": True})
        return None
    for target in candidates:
        if base_url(target) == record["base"]:
            return target
    for target in candidates:
        if record["name"] and PurePosixPath(target_path(target)).name == record["name"]:
            return target
    # A restored directory that contains the recorded one: the recorded path
    # /srv/exports/cust-2 applies to /restore/exports as /restore/exports/cust-2.
    recorded = PurePosixPath(
        urllib.parse.urlsplit(record["base"]).path or record["base"]
    )
    for target in candidates:
        name = PurePosixPath(target_path(target)).name
        if name and name in recorded.parent.parts:
            index = len(recorded.parts) - 1 - recorded.parts[::-1].index(name)
            remainder = PurePosixPath(*recorded.parts[index + 1 :])
            return _with_path(
                target, str(PurePosixPath(target_path(target)) / remainder)
            )
    return None


def _with_path(target: Target, path: str) -> Target:
    if "://" not in target.url:
        return Target(path, dict(target.options))
    parts = target.parts
    query = f"?{parts.query}" if parts.query else ""
    return Target(f"{parts.scheme}://{parts.netloc}{path}{query}", dict(target.options))


def _replay_target(restored: Target, record: Mapping[str, Any]) -> Target:
    """Apply the recorded selector to the restored target's location."""
    recorded = dict(record.get("selector") or {})
    if "://" not in restored.url:
        return Target(restored.url, {**recorded, **restored.options})
    query: list[tuple[str, str]] = []
    for key, value in recorded.items():
        if key == "param":
            query.extend(("param", str(element)) for element in value)
        elif isinstance(value, (list, dict)):
            query.append((key, json.dumps(value)))
        else:
            query.append((key, str(value)))
    parts = restored.parts
    url = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    return Target(url, dict(restored.options))


def filtering_registry(
    units: Sequence[ReplayUnit],
    base: Registry | None = None,
    key: bytes | None = None,
) -> Registry:
    """Return a registry whose plugins discover only items the ledger records.

    Each plugin class a unit needs is replaced by a subclass whose
    ``discover`` drops items whose key digest is not recorded for that
    target. The engine then plans, purges and certifies exactly the
    resurfaced items, and nothing the original purge left alone. ``key``
    is the ledger key that HMAC digests were computed with.
    """
    registry = base or Registry.from_entry_points()
    recorded: dict[str, set[str]] = {}
    for unit in units:
        recorded.setdefault(unit.target.url, set()).update(unit.digests)
    replaced: dict[str, type[Plugin]] = {}
    for unit in units:
        plugin_class = registry.plugin_for(unit.target)
        if plugin_class.name not in replaced:
            replaced[plugin_class.name] = _filtered(plugin_class, recorded, key)
    for plugin_class in replaced.values():
        registry.add(plugin_class)
    return registry


def _filtered(
    plugin_class: type[Plugin], recorded: Mapping[str, set[str]], key: bytes | None
) -> type[Plugin]:
    def discover(self: Plugin) -> Iterator[Item]:
        digests = recorded.get(self.target.url, set())
        schemes = {digest.partition(":")[0] for digest in digests}
        for item in plugin_class.discover(self):
            name = relative_key(self.target, item.key)
            if any(_tagged_digest(scheme, name, key) in digests for scheme in schemes):
                yield item

    return type(
        plugin_class.__name__,
        (plugin_class,),
        {"discover": discover, "__doc__": plugin_class.__doc__},
    )


def _tagged_digest(scheme: str, name: str, key: bytes | None) -> str:
    return f"{scheme}:{item_digest(name, key if scheme == HMAC_SHA256 else None)}"


def replay(
    config: Config,
    state_dir: Path,
    restored: Sequence[Target],
    settings: Mapping[str, Any],
    dry_run: bool,
    registry: Registry | None = None,
    confirm: Any = None,
) -> ReplayReport:
    """Plan every recorded selector on the restored targets, then purge what resurfaced.

    Each unit is planned on its own first, so a unit that cannot be applied
    (a table that no longer exists, an unreachable server) is reported and
    the others continue. Entries whose ledger key is missing or another
    one are reported the same way. ``confirm`` receives the report before
    the purge and returns False to stop.
    """
    key, key_error = replay_key(state_dir)
    units, unmatched, problems = match_units(state_dir, restored, key, key_error)
    report = ReplayReport(unmatched=unmatched, problems=problems)
    for problem in problems:
        log.warning(
            "ledger entry not applied", target=problem.target, error=problem.error
        )
    for unit in units:
        try:
            _plan_unit(config, state_dir, unit, settings, registry, key)
        except (LetheError, PluginError) as error:
            log.warning(
                "ledger entry not applied", target=unit.target.url, error=str(error)
            )
            for source in unit.sources:
                report.problems.append(
                    ReplayProblem(source, unit.target.url, str(error))
                )
            continue
        report.units.append(unit)
    to_purge = [unit for unit in report.units if unit.resurfaced]
    if dry_run or not to_purge or (confirm is not None and not confirm(report)):
        return report
    engine = Engine(
        config, state_dir, registry=filtering_registry(to_purge, _copy(registry), key)
    )
    try:
        job_id = engine.plan(
            [unit.target for unit in to_purge], settings, dry_run=False
        )
        report.outcome = engine.purge(job_id)
    finally:
        engine.close()
    return report


def _plan_unit(
    config: Config,
    state_dir: Path,
    unit: ReplayUnit,
    settings: Mapping[str, Any],
    registry: Registry | None,
    key: bytes | None,
) -> None:
    engine = Engine(
        config, state_dir, registry=filtering_registry([unit], _copy(registry), key)
    )
    try:
        job_id = engine.plan([unit.target], settings, dry_run=True)
        rows = engine.journal.query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS total FROM items WHERE job_id = ? AND method IS NOT NULL",
            (job_id,),
        )
        unit.resurfaced = rows[0]["n"]
        unit.resurfaced_bytes = rows[0]["total"]
    finally:
        engine.close()


def _copy(registry: Registry | None) -> Registry | None:
    if registry is None:
        return None
    return Registry(
        dict(registry.entry_points), dict(registry.loaded), dict(registry.failures)
    )
