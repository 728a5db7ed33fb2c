"""Retention and legal holds: items that must be kept until a date.

A hold is lifted only by changing the config: nothing on the command line
overrides it. A retention hold ends on a fixed ``until`` date, or a number
of ``years`` after a date read from the item (its modification time, a
metadata or tag value, or a column of a row). When that date cannot be read
the item is kept, because destroying a record whose retention cannot be
computed is the error that cannot be undone. A legal hold ends on its
``until`` date, or never while it stays in the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from plugins.base import Refusal

from .rules import ItemView, Selector

RETENTION = "retention"
LEGAL = "legal"

#: Sources a retention hold can count its years from. ``mtime``-like names
#: read item attributes; the prefixed forms read a metadata key, a tag or a
#: column value of a row (``attributes["dates"]`` of row items).
DATE_ATTRIBUTES = (
    "mtime",
    "ctime",
    "birthtime",
    "last_modified",
    "created",
    "time_created",
)
DATE_PREFIXES = ("attribute", "metadata", "tag", "column")


def parse_date(value: Any) -> date | None:
    """Read a date from a datetime, a date, epoch seconds or an ISO 8601 string."""
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).date()
    if isinstance(value, date):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).date()
    if isinstance(value, str):
        text = value.strip()
        try:
            return datetime.fromisoformat(text).date()
        except ValueError:
            pass
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            return None
    return None


def add_years(start: date, years: int) -> date:
    """Add whole years; February 29 becomes February 28 in a common year."""
    try:
        return start.replace(year=start.year + years)
    except ValueError:
        return start.replace(year=start.year + years, day=28)


@dataclass(frozen=True)
class Hold:
    """One hold from the config; ``location`` is the ``file:line`` it came from."""

    name: str
    kind: str
    selector: Selector
    until: date | None = None
    years: int | None = None
    after: str | None = None
    reason: str = ""
    location: str = ""
    mask: Mapping[str, Any] | None = field(default=None)

    def applies(
        self, view: ItemView, classification: str, today: date
    ) -> Refusal | None:
        """Return the refusal this hold gives an item, or None when it does not hold it."""
        if not self.selector.matches(view, classification):
            return None
        if self.years is not None and self.after is not None:
            return self._relative(view, today)
        if self.until is not None:
            if self.until <= today:
                return None
            return self._refusal(f"until {self.until.isoformat()}", self.until)
        # A legal hold without an end date holds until the config drops it.
        return self._refusal("until it is removed from the config", None)

    def _relative(self, view: ItemView, today: date) -> Refusal | None:
        assert self.years is not None and self.after is not None
        start = parse_date(date_source(view, self.after))
        if start is None:
            return self._refusal(
                f"because its {self.after} date is missing or unreadable, "
                "so the end of retention cannot be computed",
                None,
            )
        end = add_years(start, self.years)
        if end <= today:
            return None
        return self._refusal(
            f"until {end.isoformat()} ({self.years} years after {self.after} "
            f"{start.isoformat()})",
            end,
        )

    def _refusal(self, period: str, end: date | None) -> Refusal:
        detail = f"{self.kind} hold {self.name!r} keeps this item {period}"
        if self.reason:
            detail += f": {self.reason}"
        blocked = datetime(end.year, end.month, end.day, tzinfo=UTC) if end else None
        return Refusal(reason="hold", detail=detail, blocked_until=blocked)


def date_source(view: ItemView, source: str) -> Any:
    """Return the raw date value a hold's ``after`` names, or None."""
    prefix, _, name = source.partition(":")
    if not name:
        value = view.attributes.get(source)
        if value is None and source == "mtime":
            nanoseconds = view.attributes.get("mtime_ns", view.identity.get("mtime_ns"))
            if isinstance(nanoseconds, int):
                value = nanoseconds / 1e9
        return value
    if prefix == "attribute":
        return view.attributes.get(name)
    if prefix == "metadata":
        return view.metadata.get(name)
    if prefix == "tag":
        return view.tags.get(name)
    if prefix == "column":
        dates = view.attributes.get("dates")
        return dates.get(name) if isinstance(dates, Mapping) else None
    return None


def find_hold(
    holds: list[Hold], view: ItemView, classification: str, today: date
) -> tuple[Hold, Refusal] | None:
    """Return the hold that keeps an item longest, with its refusal.

    A hold without an end date outlasts any dated one.
    """
    best: tuple[Hold, Refusal] | None = None
    for hold in holds:
        refusal = hold.applies(view, classification, today)
        if refusal is None:
            continue
        if best is None or _outlasts(refusal, best[1]):
            best = (hold, refusal)
    return best


def _outlasts(candidate: Refusal, current: Refusal) -> bool:
    if current.blocked_until is None:
        return False
    if candidate.blocked_until is None:
        return True
    return candidate.blocked_until > current.blocked_until
