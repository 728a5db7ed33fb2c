"""The dry-run report of the policy: items by class, by hold and by method.

The report is built from the assessed plan and rendered as text for the
terminal, JSON for machines and HTML for people. It carries counts, bytes,
masked examples of the personal data found and residual risks, never a
full personal value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jinja2

from agent.render import plural
from plugins.base import Item, Refusal

from .detectors import Findings
from .rules import CLASSES

if TYPE_CHECKING:
    from . import Assessment

#: Item labels listed per hold and per refusal reason; the rest are counted.
LABELS_PER_GROUP = 5


@dataclass(frozen=True)
class ReportEntry:
    """One planned item: its assessment and the plan's method or refusal."""

    target: str
    item: Item
    assessment: Assessment
    method: str | None = None
    refusal: Refusal | None = None
    residual: tuple[str, ...] = ()


@dataclass
class _Group:
    items: int = 0
    bytes: int = 0
    labels: list[str] = field(default_factory=list)
    residual: list[str] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)
    until: str | None = None
    detail: str = ""
    masked: bool = False

    def add(self, entry: ReportEntry) -> None:
        self.items += 1
        self.bytes += entry.item.size
        if len(self.labels) < LABELS_PER_GROUP:
            self.labels.append(entry.item.display)
        for risk in entry.residual:
            if risk not in self.residual:
                self.residual.append(risk)
        if entry.assessment.findings is not None:
            self.findings.merge(entry.assessment.findings)


class PolicyTally:
    """Running totals by class and by hold, kept while a plan is assessed.

    Memory stays bounded: findings are merged per class and each group keeps
    at most :data:`LABELS_PER_GROUP` labels.
    """

    def __init__(self) -> None:
        self.total = _Group()
        self.classes: dict[str, _Group] = {}
        self.holds: dict[str, _Group] = {}

    def add(self, entry: ReportEntry) -> None:
        self.total.items += 1
        self.total.bytes += entry.item.size
        self.classes.setdefault(entry.assessment.classification, _Group()).add(entry)
        if entry.assessment.hold:
            group = self.holds.setdefault(entry.assessment.hold, _Group())
            group.add(entry)
            _note_hold(group, entry.assessment)

    def report(
        self,
        methods: list[dict[str, Any]],
        refused: list[dict[str, Any]],
        target_residual: Mapping[str, Sequence[str]] | None = None,
        plan_hash: str = "",
    ) -> dict[str, Any]:
        """Return the report as plain data, with the plan's methods and refusals."""
        order = {name: rank for rank, name in enumerate(reversed(CLASSES))}
        classes = sorted(self.classes.items(), key=lambda pair: order.get(pair[0], 99))
        return {
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "plan_hash": plan_hash,
            "totals": {"items": self.total.items, "bytes": self.total.bytes},
            "classes": [_class_row(name, group) for name, group in classes],
            "holds": [
                {
                    "name": name,
                    "items": group.items,
                    "bytes": group.bytes,
                    "until": group.until,
                    "detail": group.detail,
                    "masked": group.masked,
                    "labels": group.labels,
                }
                for name, group in sorted(self.holds.items())
            ],
            "methods": methods,
            "refused": refused,
            "target_residual": {
                name: list(risks) for name, risks in (target_residual or {}).items()
            },
        }


def build_report(
    entries: Iterable[ReportEntry],
    target_residual: Mapping[str, Sequence[str]] | None = None,
    plan_hash: str = "",
) -> dict[str, Any]:
    """Group planned items by class, hold, method and refusal reason."""
    tally = PolicyTally()
    methods: dict[str, _Group] = {}
    refused: dict[str, _Group] = {}
    for entry in entries:
        tally.add(entry)
        refusal = entry.refusal or entry.assessment.refusal
        if refusal is not None and not entry.assessment.hold:
            refused.setdefault(refusal.reason, _Group()).add(entry)
        if refusal is None and entry.method is not None:
            methods.setdefault(entry.method, _Group()).add(entry)
    return tally.report(
        [
            {
                "method": name,
                "items": group.items,
                "bytes": group.bytes,
                "residual": group.residual,
            }
            for name, group in sorted(methods.items())
        ],
        [
            {
                "reason": name,
                "items": group.items,
                "bytes": group.bytes,
                "labels": group.labels,
            }
            for name, group in sorted(refused.items())
        ],
        target_residual,
        plan_hash,
    )


def report_from_plan(tally: PolicyTally, summary: Mapping[str, Any]) -> dict[str, Any]:
    """Combine a policy tally with the engine's plan summary into one report.

    Methods and refusals other than holds come from the plan summary. Each
    target's residual risks are listed under the methods that target uses,
    or on their own for a target where nothing would be destroyed.
    """
    methods: dict[str, dict[str, Any]] = {}
    refused: dict[str, dict[str, Any]] = {}
    residual: dict[str, list[str]] = {}
    for target in summary.get("targets", []):
        risks = list(target.get("residual", []))
        for row in target.get("methods", []):
            merged = methods.setdefault(
                row["method"],
                {"method": row["method"], "items": 0, "bytes": 0, "residual": []},
            )
            merged["items"] += row["items"]
            merged["bytes"] += row["bytes"]
            merged["residual"].extend(
                risk for risk in risks if risk not in merged["residual"]
            )
        for row in target.get("refused", []):
            if row["reason"] == "hold":
                continue
            merged = refused.setdefault(
                row["reason"],
                {"reason": row["reason"], "items": 0, "bytes": 0, "labels": []},
            )
            merged["items"] += row["items"]
            merged["bytes"] += row["bytes"]
        if risks and not target.get("methods"):
            residual[target["url"]] = risks
    return tally.report(
        [methods[name] for name in sorted(methods)],
        [refused[name] for name in sorted(refused)],
        residual,
        summary.get("plan_hash", ""),
    )


def _note_hold(group: _Group, assessment: Assessment) -> None:
    until = assessment.hold_until
    text = until.date().isoformat() if until else "no end date"
    if group.until is None or (
        group.until != "no end date" and (not until or text > group.until)
    ):
        group.until = text
    if not group.detail:
        group.detail = assessment.hold_detail
    group.masked = group.masked or assessment.mask is not None


def _class_row(name: str, group: _Group) -> dict[str, Any]:
    return {
        "class": name,
        "items": group.items,
        "bytes": group.bytes,
        "found": dict(sorted(group.findings.counts.items())),
        "examples": {
            kind: list(values)
            for kind, values in sorted(group.findings.examples.items())
        },
        "truncated": group.findings.truncated,
    }


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, sort_keys=False)


def human_bytes(count: int) -> str:
    """Format a byte count with binary units (``1.5 MiB``)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def _text_row(name: str, row: Mapping[str, Any]) -> str:
    return f"  {name:<20} {row['items']:>8} items  {human_bytes(row['bytes']):>10}"


def _text_classes(report: Mapping[str, Any]) -> list[str]:
    lines = ["By class:"]
    for row in report["classes"]:
        lines.append(_text_row(row["class"], row))
        for kind, count in row["found"].items():
            examples = ", ".join(row["examples"].get(kind, []))
            lines.append(f"      {kind:<12} {count:>8} found  e.g. {examples}")
    return lines


def _text_holds(report: Mapping[str, Any]) -> list[str]:
    lines = ["By hold (kept, not destroyed):"]
    if not report["holds"]:
        lines.append("  none")
    for row in report["holds"]:
        masked = ", masked" if row["masked"] else ""
        lines.append(f"{_text_row(row['name'], row)}  until {row['until']}{masked}")
    return lines


def _text_methods(report: Mapping[str, Any]) -> list[str]:
    lines = ["By method:"]
    for row in report["methods"]:
        lines.append(_text_row(row["method"], row))
        for risk in row["residual"]:
            lines.append(f"      residual risk: {risk}")
    for name, risks in report["target_residual"].items():
        for risk in risks:
            lines.append(f"  {name}: residual risk: {risk}")
    return lines


def render_text(report: Mapping[str, Any]) -> str:
    """Render the report for a terminal, one section per grouping."""
    totals = report["totals"]
    lines = [
        f"Policy report: {plural(totals['items'], 'item')}, {human_bytes(totals['bytes'])}",
        "",
    ]
    lines += _text_classes(report) + [""]
    lines += _text_holds(report) + [""]
    lines += _text_methods(report)
    if report["refused"]:
        lines += ["", "Refused:"]
        lines += [_text_row(row["reason"], row) for row in report["refused"]]
    return "\n".join(lines) + "\n"


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("agent.policy", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)
_ENVIRONMENT.filters["human_bytes"] = human_bytes


def render_html(report: Mapping[str, Any]) -> str:
    """Render the report as one self-contained HTML page."""
    return _ENVIRONMENT.get_template("report.html").render(report=report)


def write_policy_report(
    path: str, tally: PolicyTally, summary: Mapping[str, Any]
) -> None:
    """Write the report combined from a tally and a plan summary; the suffix picks the format."""
    report = report_from_plan(tally, summary)
    if path.endswith((".html", ".htm")):
        text = render_html(report)
    elif path.endswith(".json"):
        text = render_json(report)
    else:
        text = render_text(report)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
