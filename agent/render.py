"""Rendering of plans, job outcomes and certificates for people (rich, HTML)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import jinja2
from rich.console import Console
from rich.table import Table

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("agent", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


def printable(text: str) -> str:
    """Escape control characters and undecodable bytes in a name for display."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """Return the count with the noun in singular or plural, as in "1 item", "2 items"."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {plural_form or noun + 's'}"


def readable(value: Any) -> str:
    """Render a JSON-like value as text for people: no Python reprs.

    None is "unknown", booleans are "yes" and "no", lists are joined with
    commas, and mappings become "key: value" pairs with underscores in the
    keys shown as spaces.
    """
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Enum):
        return readable(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        if not value:
            return "none"
        return "; ".join(
            f"{str(key).replace('_', ' ')}: {_nested(item)}"
            for key, item in value.items()
        )
    if isinstance(value, (list, tuple, set, frozenset)):
        if not value:
            return "none"
        return ", ".join(readable(item) for item in value)
    return str(value)


def _nested(value: Any) -> str:
    """Render a value inside a mapping, with brackets around a nested mapping."""
    if isinstance(value, Mapping) and value:
        return f"({readable(value)})"
    return readable(value)


_TEMPLATES.filters["bytes"] = human_bytes
_TEMPLATES.filters["readable"] = readable
_TEMPLATES.filters["plural"] = plural


def print_plan(console: Console, summary: Mapping[str, Any], dry_run: bool) -> None:
    """Print the plan summary: methods, refusals, residual risks and the hash."""
    verb = "would purge" if dry_run else "will purge"
    for target in summary["targets"]:
        console.print(f"[bold]{target['url']}[/bold] ({target['plugin']})")
        for note in target["notes"]:
            console.print(f"  note: {note}")
        table = Table(
            "method",
            "SP 800-88",
            "items",
            "bytes",
            title=f"{verb}",
            title_justify="left",
        )
        for method in target["methods"]:
            table.add_row(
                method["method"],
                method["category"],
                str(method["items"]),
                human_bytes(method["bytes"]),
            )
        if target["methods"]:
            console.print(table)
        else:
            console.print(f"  {verb}: nothing")
        _print_refusals(console, target["refused"])
        for risk in target["residual"]:
            console.print(f"  residual risk: {risk}")
    for risk in summary["residual"]:
        console.print(
            f"residual risk ({plural(risk['items'], 'item')}): {risk['risk']}"
        )
    _print_copies(console, summary.get("copies", []), verb)
    totals = summary["totals"]
    console.print(
        f"{verb} {plural(totals['permitted'], 'item')} "
        f"({human_bytes(totals['permitted_bytes'])}); "
        f"refused {plural(totals['refused'], 'item')} "
        f"({human_bytes(totals['refused_bytes'])})"
    )
    console.print(f"plan hash: {summary['plan_hash']}")
    console.print(f"job: {summary['job_id']}")


def _print_copies(console: Console, copies: list[Mapping[str, Any]], verb: str) -> None:
    """List snapshots and backups of the selected data, one line each."""
    if copies:
        console.print(f"copies of the selected data ({len(copies)}):")
    for copy in copies:
        if copy["state"] == "refused":
            outcome = f"kept ({copy['reason']}): {copy['detail']}"
        else:
            outcome = f"{verb} ({copy['method']})"
        facts = f"created {copy['created'] or 'unknown'}, {human_bytes(copy['size'])}"
        console.print(f"  {printable(copy['label'])} ({facts}): {outcome}")


def _print_refusals(console: Console, refused: list[Mapping[str, Any]]) -> None:
    for group in refused:
        console.print(
            f"  refused ({group['reason']}): {plural(group['items'], 'item')}, "
            f"{group['description']}"
        )
        for example in group["examples"]:
            detail = f": {example['detail']}" if example["detail"] else ""
            console.print(
                f"    {printable(example['item'])}{printable(detail)}",
                markup=False,
                highlight=False,
            )
        hidden = group["items"] - len(group["examples"])
        if hidden > 0:
            console.print(f"    ... and {hidden} more")


def print_differences(
    console: Console, differences: list[Mapping[str, Any]], total: int
) -> None:
    console.print(
        "[bold red]the world no longer matches the saved plan: "
        f"{plural(total, 'difference')}[/bold red]"
    )
    for difference in differences:
        fields = (
            f" ({', '.join(difference['fields'])})" if difference.get("fields") else ""
        )
        console.print(
            f"  {difference['change']}: {difference['target']}: {printable(difference['item'])}{fields}",
            markup=False,
        )
    if total > len(differences):
        console.print(f"  ... and {total - len(differences)} more")
    console.print("nothing was destroyed; run lethe plan again and review the new plan")


def print_outcome(console: Console, outcome: Mapping[str, Any]) -> None:
    counts = outcome["counts"]
    console.print(
        f"job {outcome['job_id']}: {outcome['state']}; "
        f"destroyed and verified {counts.get('verified', 0)}, refused {counts.get('refused', 0)}, "
        f"blocked {counts.get('blocked', 0)}, failed {counts.get('failed', 0)}"
    )
    for message in outcome["messages"]:
        console.print(message, markup=False)
    if outcome.get("certificate"):
        console.print(f"certificate: {outcome['certificate']}")


def print_rescan(console: Console, outcome: Mapping[str, Any]) -> None:
    """Print the result of ``lethe verify``: what the repeated rescan found."""
    rescan = outcome["rescan"]
    back = rescan["came_back"]
    console.print(
        f"job {outcome['job_id']}: repeated rescan of "
        f"{plural(rescan['checked'], 'destroyed item')}: "
        f"{rescan['checked'] - back} still gone, {back} came back"
    )
    for message in outcome["messages"]:
        console.print(message, markup=False)
    if outcome.get("certificate"):
        console.print(f"certificate: {outcome['certificate']}")


def plan_html(summary: Mapping[str, Any]) -> str:
    return _TEMPLATES.get_template("plan.html").render(plan=summary)
