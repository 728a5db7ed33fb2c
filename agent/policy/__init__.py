"""The policy layer: classification, personal-data discovery, holds and masking.

The engine calls :meth:`Policy.assess` for every discovered item before the
plugin plans it. A refusal from the policy (reason ``hold``) wins over any
method the plugin would choose. A ``mask`` asks for the item to be masked
rather than destroyed: the engine then calls the plugin's ``plan_mask``,
which refuses the item when the plugin cannot mask it. The default policy classifies nothing and holds nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import structlog

from agent.config import Node, register_section
from agent.errors import ConfigError
from plugins.base import Item, Refusal, Target

from .config import KeyPath, PolicyConfigError, PolicySettings, parse_policy
from .detectors import Findings, Scanner
from .discovery import discover_file, discover_rows
from .holds import find_hold
from .report import PolicyTally, ReportEntry
from .rules import PERSONAL, UNCLASSIFIED, ItemView, classify, stricter

__all__ = ["Assessment", "Policy"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Assessment:
    """What the policy decided for one item.

    ``refusal`` is set when a hold keeps the item whole. ``mask`` is set
    instead when the hold keeps the item but asks for its personal fields to
    be masked: it contains the ``fields`` specs and the ``key_file``, and
    :meth:`agent.policy.masking.Masker.from_spec` builds the masker from it.
    ``hold``, ``hold_detail`` and ``hold_until`` describe the hold in both
    cases (``hold_until`` is None for a hold without an end date).
    ``findings`` are the content discovery results and ``rule`` names the
    rule that set the class.
    """

    classification: str = UNCLASSIFIED
    refusal: Refusal | None = None
    mask: Mapping | None = None
    findings: Findings | None = None
    rule: str = ""
    hold: str = ""
    hold_detail: str = ""
    hold_until: datetime | None = None


class Policy:
    """Classifies items, applies holds and runs content discovery."""

    def __init__(
        self, settings: PolicySettings | None = None, today: date | None = None
    ) -> None:
        self.settings = settings or PolicySettings()
        self.scanner = Scanner(self.settings.discovery.scanner)
        self._today = today
        #: Totals by class and hold of every item assessed, for the report.
        self.tally = PolicyTally()
        #: Folders that contain a held item, with the hold's name.
        self._held_folders: dict[str, str] = {}
        # The strictest class content discovery can give. An item that a rule
        # already put in this class or a stricter one is not read, because
        # discovery could not change its class.
        self._content_ceiling = PERSONAL
        for pattern in self.settings.discovery.scanner.custom:
            self._content_ceiling = stricter(
                self._content_ceiling, pattern.classification
            )

    @classmethod
    def from_config(cls, config_section: Mapping | None) -> Policy:
        """Build a policy from an already validated settings object or a raw mapping.

        A raw mapping is validated here, and errors carry only the key path;
        the config loader validates with file and line before this runs.
        """
        if isinstance(config_section, PolicySettings):
            return cls(config_section)

        def fail(path: tuple[str | int, ...], reason: str) -> Any:
            from .config import PolicyConfigError

            raise PolicyConfigError("config", None, path, reason)

        return cls(parse_policy(config_section, fail))

    @property
    def today(self) -> date:
        return self._today or datetime.now(UTC).date()

    def assess(self, target: Target, item: Item) -> Assessment:
        """Classify one item, scan its content when it is a local file, apply holds."""
        assessment = self._assess(target, item)
        self.tally.add(ReportEntry(target.url, item, assessment))
        return assessment

    def _assess(self, target: Target, item: Item) -> Assessment:
        view = ItemView.of(target, item)
        folder_hold = self._folder_hold(view, item)
        if folder_hold is not None:
            return folder_hold
        classification, rule = classify(self.settings.rules, view)
        findings = None
        if stricter(classification, self._content_ceiling) != classification:
            findings = self._discover(view, item)
        content_class = self._content_class(findings)
        if content_class and stricter(classification, content_class) != classification:
            classification, rule = content_class, "content discovery"

        held = find_hold(list(self.settings.holds), view, classification, self.today)
        if held is None:
            return Assessment(
                classification=classification, findings=findings, rule=rule
            )
        hold, refusal = held
        log.debug(
            "item held", item=item.key, hold=hold.name, until=str(refusal.blocked_until)
        )
        self._remember_folders(view, hold.name)

        return Assessment(
            classification=classification,
            refusal=refusal if hold.mask is None else None,
            mask=hold.mask,
            findings=findings,
            rule=rule,
            hold=hold.name,
            hold_detail=refusal.detail,
            hold_until=refusal.blocked_until,
        )

    def _content_class(self, findings: Findings | None) -> str | None:
        """Return the class content discovery gives, or None when it found nothing."""
        if findings is None or not findings.total:
            return None
        content_class = PERSONAL
        for pattern in self.settings.discovery.scanner.custom:
            if findings.counts.get(pattern.name):
                content_class = stricter(content_class, pattern.classification)
        return content_class

    def _remember_folders(self, view: ItemView, hold: str) -> None:
        if view.path is None:
            return
        folder = posixpath.dirname(view.path)
        while folder not in self._held_folders and folder not in ("/", ""):
            self._held_folders[folder] = hold
            folder = posixpath.dirname(folder)

    def _folder_hold(self, view: ItemView, item: Item) -> Assessment | None:
        """Keep a folder that contains a held item, so its removal does not fail.

        Plugins list a folder after its contents, so every held item inside
        it has been assessed by then.
        """
        if item.kind != "directory" or view.path is None:
            return None
        hold = self._held_folders.get(view.path.rstrip("/") or "/")
        if hold is None:
            return None
        detail = f"folder contains items kept by hold {hold!r}"
        return Assessment(
            refusal=Refusal("hold", detail), hold=hold, hold_detail=detail
        )

    def _discover(self, view: ItemView, item: Item) -> Findings | None:
        discovery = self.settings.discovery
        # Only local files are read; objects and rows arrive without content,
        # and database plugins sample rows through discover_rows.
        if not discovery.enabled or view.path is None or item.size == 0:
            return None
        if item.kind != "file" and view.scheme != "path":
            return None
        # discover_file opens without following links or blocking on FIFOs,
        # so special files that a plugin lists are noted, never read.
        try:
            return discover_file(view.path, self.scanner, discovery.max_bytes)
        except OSError as error:
            log.warning("content not scanned", item=item.key, error=error.strerror)
            findings = Findings()
            findings.note = f"not scanned: {error.strerror}"
            return findings

    def discover_rows(self, rows: Iterable[Mapping[str, Any]]) -> Findings:
        """Scan sampled rows of a table (column name to value) for personal data."""
        return discover_rows(rows, self.scanner, self.settings.discovery.sample_rows)

    def named_columns(self, table: str) -> set[str]:
        """Return every column that a rule, hold or mask names for a table.

        Database plugins compare this with the table's real columns, and
        :meth:`check_columns` turns a missing one into a config error.
        """
        names: set[str] = set()
        for rule in self.settings.rules:
            names.update(rule.selector.columns_for(table))
        for hold in self.settings.holds:
            names.update(hold.selector.columns_for(table))
            if (
                hold.after
                and hold.after.startswith("column:")
                and table in hold.selector.tables
            ):
                names.add(hold.after.partition(":")[2])
            if hold.mask and table in hold.selector.tables:
                names.update(hold.mask["fields"])
        return names

    def named_tables(self) -> set[str]:
        """Return the tables that rules and holds name, in ``tables`` or ``TABLE.COLUMN``."""
        names: set[str] = set()
        for entry in [*self.settings.rules, *self.settings.holds]:
            names.update(entry.selector.tables)
            for column in entry.selector.columns:
                owner, _, _ = column.rpartition(".")
                if owner:
                    names.add(owner)
        return names

    def check_target_columns(self, plugin: Any) -> None:
        """Reject rules, holds and masks that name a column a target's table lacks.

        ``plugin`` supplies ``table_columns(name)``, which returns the columns
        of a table or None when the database has no such table; plugins
        without it (files, object stores) have no columns to check. Only
        tables that a rule or hold names explicitly are checked. Raises
        ConfigError listing every problem, each with the rule or hold, the
        table, the column and the config line, before any item is planned.
        """
        columns_of = getattr(plugin, "table_columns", None)
        if columns_of is None:
            return
        problems: list[str] = []
        for table in sorted(self.named_tables()):
            columns = columns_of(table)
            if columns is not None:
                problems.extend(self.check_columns(table, columns))
        if problems:
            raise ConfigError(
                "the policy names columns that do not exist:\n  "
                + "\n  ".join(problems)
            )

    def check_columns(self, table: str, existing: Iterable[str]) -> list[str]:
        """Return one message per configured column that the table lacks."""
        present = set(existing)
        problems = []
        for rule in self.settings.rules:
            for column in rule.selector.columns_for(table):
                if column not in present:
                    problems.append(
                        f"{rule.location}: rule {rule.name!r} names column {column!r}, which table {table!r} does not have"
                    )
        for hold in self.settings.holds:
            wanted = set(hold.selector.columns_for(table))
            if table in hold.selector.tables:
                if hold.after and hold.after.startswith("column:"):
                    wanted.add(hold.after.partition(":")[2])
                if hold.mask:
                    wanted.update(hold.mask["fields"])
            for column in sorted(wanted - present):
                problems.append(
                    f"{hold.location}: hold {hold.name!r} names column {column!r}, which table {table!r} does not have"
                )
        return problems


def validate_section(node: Node) -> PolicySettings:
    """Validate the config's ``policy`` section; errors name file, line and key."""

    def resolve(path: KeyPath) -> Node:
        current = node
        for part in path[1:]:
            current = current.child(part)
        return current

    def fail(path: KeyPath, reason: str) -> Any:
        found = resolve(path)
        raise PolicyConfigError(found.file, found.line, path, reason)

    def locate(path: KeyPath) -> str:
        found = resolve(path)
        return f"{found.file}:{found.line}"

    return parse_policy(node.value, fail, locate)


register_section("policy", validate_section)
