"""Selectors over items, and classification rules built from them.

Plugins describe items in ``Item.attributes``. The policy reads these keys
when they are present:

- ``path``: absolute file path (files plugin), in the printable form of
  :func:`plugins.base.escape_path`; when it is missing, an item key that is
  an absolute path is used for ``path`` targets and ``file`` items. Globs
  match, and content discovery opens, the real path.
- ``key``, or ``name`` for ``gs`` and ``az``: object key (object stores);
  defaults to the item key for ``s3``, ``gs`` and ``az`` targets.
- ``tags`` and ``metadata``: mappings, or lists of ``{"Key": ..., "Value": ...}``
  as S3 returns them.
- ``table`` and ``columns``: a row's table and its column names; the table
  defaults to the ``table`` query parameter of the target URL.
- ``mtime``, ``ctime``, ``last_modified`` and other date facts, and ``dates``:
  a mapping from column name to a date, for holds that count from a column.
  ``mtime`` falls back to ``mtime_ns`` in the attributes or the identity,
  where the files plugin records it.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plugins.base import Item, Target, unescape_path

PUBLIC = "public"
PERSONAL = "personal"
SECRET = "secret"
UNCLASSIFIED = "unclassified"

#: Classes in increasing order of protection; when several rules match, the
#: most protected class wins.
CLASSES = (UNCLASSIFIED, PUBLIC, PERSONAL, SECRET)
_RANK = {name: rank for rank, name in enumerate(CLASSES)}

OBJECT_SCHEMES = ("s3", "gs", "az")


def stricter(first: str, second: str) -> str:
    """Return the more protected of two classes."""
    return first if _RANK[first] >= _RANK[second] else second


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: ``**`` crosses directories, ``*`` and ``?`` do not.

    A pattern without a leading ``/`` matches at any depth, as if it began
    with ``**/``. Raises ValueError on an empty pattern or an unterminated
    ``[`` class.
    """
    if not pattern:
        raise ValueError("empty glob")
    if not pattern.startswith("/"):
        pattern = "**/" + pattern
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif char == "*":
            parts.append("[^/]*")
            index += 1
        elif char == "?":
            parts.append("[^/]")
            index += 1
        elif char == "[":
            end = pattern.find("]", index + 2)
            if end < 0:
                raise ValueError(f"unterminated '[' at position {index}")
            body = pattern[index + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            parts.append("[" + body.replace("\\", "\\\\") + "]")
            index = end + 1
        else:
            parts.append(re.escape(char))
            index += 1
    # DOTALL lets ``**`` cross a newline in a file name.
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def _pairs(value: Any) -> dict[str, str]:
    """Turn a mapping, or a list of Key/Value pairs, into a str-to-str dict."""
    if isinstance(value, Mapping):
        return {str(key): str(val) for key, val in value.items()}
    result: dict[str, str] = {}
    if isinstance(value, Sequence) and not isinstance(value, str):
        for pair in value:
            if isinstance(pair, Mapping) and "Key" in pair:
                result[str(pair["Key"])] = str(pair.get("Value", ""))
    return result


@dataclass(frozen=True)
class ItemView:
    """The facts of an item that selectors read, normalised across plugins."""

    scheme: str
    path: str | None
    object_key: str | None
    table: str | None
    columns: tuple[str, ...]
    tags: Mapping[str, str]
    metadata: Mapping[str, str]
    attributes: Mapping[str, Any]
    identity: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, target: Target, item: Item) -> ItemView:
        attributes = item.attributes
        scheme = target.scheme
        path = attributes.get("path")
        if (
            path is None
            and item.key.startswith("/")
            and (scheme == "path" or item.kind == "file")
        ):
            path = item.key
        object_key = attributes.get("key")
        if object_key is None and scheme in ("gs", "az"):
            # GCS and Azure item keys carry a generation or version suffix.
            object_key = attributes.get("name")
        if object_key is None and scheme in OBJECT_SCHEMES:
            object_key = item.key
        table = attributes.get("table")
        if table is None:
            query = urllib.parse.parse_qs(target.parts.query)
            table = query.get("table", [None])[0]
        columns = attributes.get("columns") or ()
        if isinstance(columns, Mapping):
            columns = tuple(columns)
        return cls(
            scheme=scheme,
            path=unescape_path(str(path)) if path is not None else None,
            object_key=str(object_key) if object_key is not None else None,
            table=str(table) if table is not None else None,
            columns=tuple(str(name) for name in columns),
            tags=_pairs(attributes.get("tags")),
            metadata=_pairs(attributes.get("metadata")),
            attributes=attributes,
            identity=item.identity,
        )


@dataclass(frozen=True)
class Selector:
    """Which items a rule or hold applies to.

    An item matches when it matches at least one entry of every criterion
    given. ``paths``, ``prefixes`` and ``tables`` count as one criterion, the
    location, because an item is a file, an object or a row, never two of
    them. ``columns`` entries are ``table.column`` or a bare column name;
    tag and metadata values are globs. ``classes`` (holds only) matches the
    class the rules gave the item. An empty selector matches nothing.
    """

    paths: tuple[re.Pattern[str], ...] = ()
    path_globs: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    tags: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    metadata: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.paths
            or self.prefixes
            or self.tables
            or self.columns
            or self.tags
            or self.metadata
            or self.classes
        )

    def matches(self, view: ItemView, classification: str = UNCLASSIFIED) -> bool:
        if self.empty:
            return False
        if (self.paths or self.prefixes or self.tables) and not self._location(view):
            return False
        if self.columns and not self._columns(view):
            return False
        if not _all_match(self.tags, view.tags):
            return False
        if not _all_match(self.metadata, view.metadata):
            return False
        return not self.classes or classification in self.classes

    def _location(self, view: ItemView) -> bool:
        if view.path is not None and any(glob.match(view.path) for glob in self.paths):
            return True
        if view.object_key is not None and any(
            view.object_key.startswith(prefix) for prefix in self.prefixes
        ):
            return True
        return view.table is not None and view.table in self.tables

    def _columns(self, view: ItemView) -> bool:
        for entry in self.columns:
            table, _, column = entry.rpartition(".")
            if table and table != view.table:
                continue
            if column in view.columns:
                return True
        return False

    def columns_for(self, table: str) -> list[str]:
        """Return the column names this selector names for a table."""
        names = []
        for entry in self.columns:
            owner, _, column = entry.rpartition(".")
            if not owner or owner == table:
                names.append(column)
        return names


def _all_match(
    expected: Mapping[str, re.Pattern[str]], actual: Mapping[str, str]
) -> bool:
    for key, pattern in expected.items():
        value = actual.get(key)
        if value is None or pattern.fullmatch(value) is None:
            return False
    return True


@dataclass(frozen=True)
class ClassRule:
    """A classification rule from the config; ``location`` is ``file:line``."""

    name: str
    classification: str
    selector: Selector
    location: str = ""


def classify(rules: Sequence[ClassRule], view: ItemView) -> tuple[str, str]:
    """Return the class the rules give an item, and the deciding rule's name."""
    classification, deciding = UNCLASSIFIED, ""
    for rule in rules:
        if rule.selector.matches(view) and (
            _RANK[rule.classification] > _RANK[classification]
        ):
            classification, deciding = rule.classification, rule.name
    return classification, deciding
