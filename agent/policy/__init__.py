"""The policy layer: classification, personal-data discovery, holds and masking.

The engine calls :meth:`Policy.assess` for every discovered item before the
plugin plans it. An assessment with a refusal (reason ``hold``) keeps the
item; its ``mask`` names the fields to mask when the hold asks for masking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import structlog

from plugins.base import Item, Refusal, Target

from .config import PolicySettings, parse_policy
from .detectors import Findings, Scanner
from .discovery import discover_file, discover_rows
from .holds import find_hold
from .rules import PERSONAL, UNCLASSIFIED, ItemView, classify, stricter

__all__ = ["Assessment", "Policy"]

log = structlog.get_logger(__name__)


@dataclass
class Assessment:
    """What the policy decided for one item.

    ``refusal`` is set when a hold keeps the item. ``mask`` is set when that
    hold also asks for the item's personal fields to be masked: it holds the
    ``fields`` specs and the ``key_file``, and
    :meth:`agent.policy.masking.Masker.from_spec` builds the masker from it.
    The refusal stays set alongside ``mask`` so a caller that cannot mask
    keeps the item whole. ``findings`` are the content discovery results and
    ``rule`` names the rule that set the class.
    """

    classification: str = UNCLASSIFIED
    refusal: Refusal | None = None
    mask: Mapping | None = None
    findings: Findings | None = None
    rule: str = ""
    hold: str = ""


class Policy:
    """Classifies items, applies holds and runs content discovery."""

    def __init__(self, settings: PolicySettings | None = None, today: date | None = None) -> None:
        self.settings = settings or PolicySettings()
        self.scanner = Scanner(self.settings.discovery.scanner)
        self._today = today

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
        view = ItemView.of(target, item)
        classification, rule = classify(self.settings.rules, view)
        findings = self._discover(view, item)
        if findings is not None and findings.total:
            content_class = PERSONAL
            for pattern in self.settings.discovery.scanner.custom:
                if findings.counts.get(pattern.name):
                    content_class = stricter(content_class, pattern.classification)
            if stricter(classification, content_class) != classification:
                classification, rule = content_class, "content discovery"
        assessment = Assessment(classification=classification, findings=findings, rule=rule)
        held = find_hold(list(self.settings.holds), view, classification, self.today)
        if held is not None:
            hold, refusal = held
            assessment.refusal = refusal
            assessment.hold = hold.name
            assessment.mask = hold.mask
            log.warning("item held", item=item.key, hold=hold.name, until=str(refusal.blocked_until))
        return assessment

    def _discover(self, view: ItemView, item: Item) -> Findings | None:
        discovery = self.settings.discovery
        if not discovery.enabled or view.scheme != "path" or view.path is None:
            return None
        if item.kind not in ("file", "") or item.size == 0:
            return None
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
            if hold.after and hold.after.startswith("column:") and table in hold.selector.tables:
                names.add(hold.after.partition(":")[2])
            if hold.mask and table in hold.selector.tables:
                names.update(hold.mask["fields"])
        return names

    def check_columns(self, table: str, existing: Iterable[str]) -> list[str]:
        """Return one message per configured column that the table lacks."""
        present = set(existing)
        problems = []
        for rule in self.settings.rules:
            for column in rule.selector.columns_for(table):
                if column not in present:
                    problems.append(f"{rule.location}: rule {rule.name!r} names column {column!r}, which table {table!r} does not have")
        for hold in self.settings.holds:
            wanted = set(hold.selector.columns_for(table))
            if table in hold.selector.tables:
                if hold.after and hold.after.startswith("column:"):
                    wanted.add(hold.after.partition(":")[2])
                if hold.mask:
                    wanted.update(hold.mask["fields"])
            for column in sorted(wanted - present):
                problems.append(f"{hold.location}: hold {hold.name!r} names column {column!r}, which table {table!r} does not have")
        return problems
