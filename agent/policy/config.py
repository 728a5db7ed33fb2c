"""Validation of the ``policy`` section of the config into typed settings.

Every error names the key path and states what is expected, and the caller's
``fail`` callback adds the file and line and raises. Regular expressions
and globs are compiled here, so a bad one stops the job before anything
runs.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NoReturn

import yaml

from agent.errors import ConfigError

from . import detectors
from .detectors import CustomPattern, ScannerSettings
from .holds import DATE_ATTRIBUTES, DATE_PREFIXES, LEGAL, RETENTION, Hold, parse_date
from .masking import METHODS as MASK_METHODS
from .masking import FieldMask
from .rules import CLASSES, UNCLASSIFIED, ClassRule, Selector, glob_to_regex

KeyPath = tuple[str | int, ...]
Fail = Callable[[KeyPath, str], NoReturn]
Locate = Callable[[KeyPath], str]

#: Bytes of one file that discovery reads by default; the rest is not scanned.
#: Bytes content discovery reads from the start of each file. Enough to
#: classify an export by its first rows in well under a second per file.
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_SAMPLE_ROWS = 1000


@dataclass(frozen=True)
class DiscoverySettings:
    """Whether and how much content discovery reads."""

    enabled: bool = True
    max_bytes: int | None = DEFAULT_MAX_BYTES
    sample_rows: int | None = DEFAULT_SAMPLE_ROWS
    scanner: ScannerSettings = field(default_factory=ScannerSettings)


@dataclass(frozen=True)
class PolicySettings:
    """The validated ``policy`` section."""

    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    rules: tuple[ClassRule, ...] = ()
    holds: tuple[Hold, ...] = ()
    mask_key_file: str | None = None


def _keys(
    node: Mapping[str, Any], path: KeyPath, allowed: Sequence[str], fail: Fail
) -> None:
    for key in node:
        if key not in allowed:
            fail(
                (*path, str(key)), f"unknown key; expected one of: {', '.join(allowed)}"
            )


def _mapping(value: Any, path: KeyPath, fail: Fail) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        fail(path, f"expected a mapping, got {type(value).__name__}")
    return value


def _list(value: Any, path: KeyPath, fail: Fail) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        fail(path, f"expected a list, got {type(value).__name__}")
    return list(value)


def _string(value: Any, path: KeyPath, fail: Fail) -> str:
    if not isinstance(value, str) or not value:
        fail(path, "expected a non-empty string")
    return value


def _count(value: Any, path: KeyPath, fail: Fail, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(path, f"expected an integer of at least {minimum}, got {value!r}")
    return value


def _class(value: Any, path: KeyPath, fail: Fail) -> str:
    if value not in CLASSES or value == UNCLASSIFIED:
        fail(
            path, f"unknown class {value!r}; expected one of: public, personal, secret"
        )
    return value


def parse_policy(
    section: Any, fail: Fail, locate: Locate | None = None
) -> PolicySettings:
    """Validate a ``policy`` section; ``fail`` raises with file and line.

    ``locate`` turns a key path into ``file:line`` for messages that are
    raised later, such as a rule naming a column the table lacks.
    """
    where = locate or (lambda path: "")
    root: KeyPath = ("policy",)
    node = _mapping(section, root, fail)
    _keys(node, root, ("discovery", "rules", "holds", "masking"), fail)
    masking = _mapping(node.get("masking"), (*root, "masking"), fail)
    _keys(masking, (*root, "masking"), ("key_file",), fail)
    key_file = masking.get("key_file")
    if key_file is not None:
        key_file = _string(key_file, (*root, "masking", "key_file"), fail)
    discovery = _parse_discovery(node.get("discovery"), (*root, "discovery"), fail)
    rules = _parse_rules(node.get("rules"), (*root, "rules"), fail, where)
    holds = _parse_holds(node.get("holds"), (*root, "holds"), fail, where, key_file)
    return PolicySettings(
        discovery=discovery, rules=rules, holds=holds, mask_key_file=key_file
    )


def _parse_discovery(value: Any, path: KeyPath, fail: Fail) -> DiscoverySettings:
    node = _mapping(value, path, fail)
    _keys(
        node,
        path,
        ("enabled", "kinds", "max_bytes", "sample_rows", "mobile", "patterns"),
        fail,
    )
    enabled = node.get("enabled", True)
    if not isinstance(enabled, bool):
        fail((*path, "enabled"), "expected true or false")
    kinds = frozenset(detectors.BUILTIN_KINDS)
    if "kinds" in node:
        names = _list(node["kinds"], (*path, "kinds"), fail)
        for index, name in enumerate(names):
            if name not in detectors.BUILTIN_KINDS:
                fail(
                    (*path, "kinds", index),
                    f"unknown kind {name!r}; expected one of: "
                    + ", ".join(detectors.BUILTIN_KINDS),
                )
        kinds = frozenset(names)
    max_bytes = node.get("max_bytes", DEFAULT_MAX_BYTES)
    if max_bytes is not None:
        max_bytes = _count(max_bytes, (*path, "max_bytes"), fail, minimum=1)
    sample_rows = node.get("sample_rows", DEFAULT_SAMPLE_ROWS)
    if sample_rows is not None:
        sample_rows = _count(sample_rows, (*path, "sample_rows"), fail, minimum=1)

    mobile = _mapping(node.get("mobile"), (*path, "mobile"), fail)
    _keys(mobile, (*path, "mobile"), ("context", "window", "require_context"), fail)
    context = tuple(
        _string(word, (*path, "mobile", "context", index), fail)
        for index, word in enumerate(
            _list(
                mobile.get("context", detectors.DEFAULT_MOBILE_CONTEXT),
                (*path, "mobile", "context"),
                fail,
            )
        )
    )
    window = _count(
        mobile.get("window", detectors.MOBILE_WINDOW),
        (*path, "mobile", "window"),
        fail,
        minimum=1,
    )
    if window > detectors.OVERLAP // 2:
        fail(
            (*path, "mobile", "window"),
            f"expected at most {detectors.OVERLAP // 2} bytes",
        )
    require = mobile.get("require_context", True)
    if not isinstance(require, bool):
        fail((*path, "mobile", "require_context"), "expected true or false")

    patterns = tuple(
        _parse_pattern(entry, (*path, "patterns", index), fail)
        for index, entry in enumerate(
            _list(node.get("patterns"), (*path, "patterns"), fail)
        )
    )
    scanner = ScannerSettings(
        kinds=kinds,
        mobile_context=context,
        mobile_window=window,
        mobile_require_context=require,
        custom=patterns,
    )
    return DiscoverySettings(enabled, max_bytes, sample_rows, scanner)


def _parse_pattern(value: Any, path: KeyPath, fail: Fail) -> CustomPattern:
    node = _mapping(value, path, fail)
    _keys(node, path, ("name", "regex", "class"), fail)
    name = _string(node.get("name"), (*path, "name"), fail)
    if name in detectors.BUILTIN_KINDS:
        fail((*path, "name"), f"{name!r} is a built-in kind; choose another name")
    source = _string(node.get("regex"), (*path, "regex"), fail)
    try:
        regex = re.compile(source.encode("utf-8"))
    except re.error as error:
        fail((*path, "regex"), f"invalid regular expression {source!r}: {error}")
    if regex.match(b"") is not None:
        fail(
            (*path, "regex"), f"regular expression {source!r} matches the empty string"
        )
    classification = _class(node.get("class", "personal"), (*path, "class"), fail)
    return CustomPattern(name, regex, classification)


def _parse_selector(value: Any, path: KeyPath, fail: Fail, holds: bool) -> Selector:
    node = _mapping(value, path, fail)
    allowed = ["paths", "prefixes", "tables", "columns", "tags", "metadata"]
    if holds:
        allowed.append("classes")
    _keys(node, path, allowed, fail)
    globs = []
    path_globs = []
    for index, pattern in enumerate(_list(node.get("paths"), (*path, "paths"), fail)):
        pattern = _string(pattern, (*path, "paths", index), fail)
        try:
            globs.append(glob_to_regex(pattern))
        except ValueError as error:
            fail((*path, "paths", index), f"invalid glob {pattern!r}: {error}")
        path_globs.append(pattern)

    def strings(key: str) -> tuple[str, ...]:
        entries = _list(node.get(key), (*path, key), fail)
        return tuple(
            _string(entry, (*path, key, index), fail)
            for index, entry in enumerate(entries)
        )

    def globs_by_key(key: str) -> dict[str, re.Pattern[str]]:
        # Tag and metadata values are matched whole; ``*`` also matches ``/``.
        return {
            str(name): re.compile(fnmatch.translate(str(pattern)))
            for name, pattern in _mapping(node.get(key), (*path, key), fail).items()
        }

    classes = strings("classes") if holds else ()
    for index, name in enumerate(classes):
        if name not in CLASSES:
            fail(
                (*path, "classes", index),
                f"unknown class {name!r}; expected one of: {', '.join(CLASSES)}",
            )
    selector = Selector(
        paths=tuple(globs),
        path_globs=tuple(path_globs),
        prefixes=strings("prefixes"),
        tables=strings("tables"),
        columns=strings("columns"),
        tags=globs_by_key("tags"),
        metadata=globs_by_key("metadata"),
        classes=classes,
    )
    if selector.empty:
        fail(path, "expected at least one of: " + ", ".join(allowed))
    return selector


def _parse_rules(
    value: Any, path: KeyPath, fail: Fail, where: Locate
) -> tuple[ClassRule, ...]:
    rules = []
    names: set[str] = set()
    for index, entry in enumerate(_list(value, path, fail)):
        entry_path = (*path, index)
        node = _mapping(entry, entry_path, fail)
        _keys(node, entry_path, ("name", "class", "match"), fail)
        name = _string(
            node.get("name", f"rule {index + 1}"), (*entry_path, "name"), fail
        )
        if name in names:
            fail((*entry_path, "name"), f"duplicate rule name {name!r}")
        names.add(name)
        classification = _class(node.get("class"), (*entry_path, "class"), fail)
        selector = _parse_selector(
            node.get("match"), (*entry_path, "match"), fail, holds=False
        )
        rules.append(ClassRule(name, classification, selector, where(entry_path)))
    return tuple(rules)


def _parse_holds(
    value: Any, path: KeyPath, fail: Fail, where: Locate, key_file: str | None
) -> tuple[Hold, ...]:
    holds = []
    names: set[str] = set()
    for index, entry in enumerate(_list(value, path, fail)):
        entry_path = (*path, index)
        node = _mapping(entry, entry_path, fail)
        _keys(
            node,
            entry_path,
            ("name", "kind", "until", "years", "after", "reason", "match", "mask"),
            fail,
        )
        name = _string(node.get("name"), (*entry_path, "name"), fail)
        if name in names:
            fail((*entry_path, "name"), f"duplicate hold name {name!r}")
        names.add(name)
        kind = node.get("kind", RETENTION)
        if kind not in (RETENTION, LEGAL):
            fail(
                (*entry_path, "kind"),
                f"unknown hold kind {kind!r}; expected retention or legal",
            )
        until = None
        if node.get("until") is not None:
            raw = node["until"]
            until = parse_date(raw) if isinstance(raw, date | str) else None
            if until is None:
                fail(
                    (*entry_path, "until"), f"invalid date {raw!r}; expected YYYY-MM-DD"
                )
        years = after = None
        if "years" in node or "after" in node:
            years = _count(node.get("years"), (*entry_path, "years"), fail, minimum=1)
            after = _string(node.get("after"), (*entry_path, "after"), fail)
            prefix, _, rest = after.partition(":")
            if not (after in DATE_ATTRIBUTES or (prefix in DATE_PREFIXES and rest)):
                fail(
                    (*entry_path, "after"),
                    f"unknown date source {after!r}; expected one of "
                    + ", ".join(DATE_ATTRIBUTES)
                    + " or attribute:NAME, metadata:NAME, tag:NAME, column:NAME",
                )
            if until is not None:
                fail(
                    (*entry_path, "until"),
                    "give either until or years with after, not both",
                )
        if kind == RETENTION and until is None and years is None:
            fail(entry_path, "a retention hold needs until, or years with after")
        reason = node.get("reason", "")
        if not isinstance(reason, str):
            fail((*entry_path, "reason"), "expected a string")
        selector = _parse_selector(
            node.get("match"), (*entry_path, "match"), fail, holds=True
        )
        mask = None
        if node.get("mask") is not None:
            mask = _parse_mask(node["mask"], (*entry_path, "mask"), fail, key_file)
        holds.append(
            Hold(
                name,
                kind,
                selector,
                until,
                years,
                after,
                reason,
                where(entry_path),
                mask,
            )
        )
    return tuple(holds)


def _parse_mask(
    value: Any, path: KeyPath, fail: Fail, key_file: str | None
) -> dict[str, Any]:
    node = _mapping(value, path, fail)
    _keys(node, path, ("key_file", "fields"), fail)
    fields = _mapping(node.get("fields"), (*path, "fields"), fail)
    if not fields:
        fail((*path, "fields"), "expected at least one field to mask")
    parsed: dict[str, dict[str, Any]] = {}
    for name, options in fields.items():
        field_path = (*path, "fields", str(name))
        spec = _mapping(options, field_path, fail)
        _keys(
            spec,
            field_path,
            ("method", "keep_first", "keep_last", "char", "value", "length"),
            fail,
        )
        method = spec.get("method", "hmac")
        if method not in MASK_METHODS:
            fail(
                (*field_path, "method"),
                f"unknown mask method {method!r}; expected hmac or keep",
            )
        clean: dict[str, Any] = {"method": method}
        for key in ("keep_first", "keep_last"):
            if key in spec:
                clean[key] = _count(spec[key], (*field_path, key), fail)
        if "length" in spec:
            clean["length"] = _count(
                spec["length"], (*field_path, "length"), fail, minimum=16
            )
        for key in ("char", "value"):
            if key in spec:
                clean[key] = str(spec[key])
        if method == "keep" and len(clean.get("char", "*")) != 1:
            fail((*field_path, "char"), "expected one character")
        FieldMask(**clean)
        parsed[str(name)] = clean
    own_key = node.get("key_file", key_file)
    if any(spec["method"] == "hmac" for spec in parsed.values()) and not own_key:
        fail(path, "the hmac method needs key_file here or under policy.masking")
    return {"fields": parsed, "key_file": own_key}


class PolicyConfigError(ConfigError):
    """The ``policy`` section of a config file is invalid."""

    def __init__(
        self, source: str, line: int | None, key: KeyPath, reason: str
    ) -> None:
        self.source, self.line, self.key, self.reason = source, line, key, reason
        place = f"{source}:{line}" if line is not None else source
        super().__init__(f"{place}: {format_key(key)}: {reason}")


def format_key(path: KeyPath) -> str:
    """Write a key path as ``policy.holds[0].until``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = part
    return text


def index_lines(node: yaml.Node, prefix: KeyPath = ()) -> dict[KeyPath, int]:
    """Map every key path of a composed YAML document to its 1-based line."""
    lines = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, key_node.value)
            lines.update(index_lines(value_node, path))
            lines[path] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(index_lines(item, (*prefix, index)))
    return lines


def line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """Return the line of a key path, or of its nearest ancestor present."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


class _Loader(yaml.SafeLoader):
    """A safe loader that leaves dates as strings, so the validator reports bad ones."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag != "tag:yaml.org,2002:timestamp"
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_policy_file(path: str) -> PolicySettings:
    """Read a YAML config file and validate its ``policy`` section."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        node = yaml.compose(text, Loader=_Loader)
        document = yaml.load(text, Loader=_Loader) or {}
    except OSError as error:
        raise ConfigError(f"cannot read config {path!r}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    lines = index_lines(node) if node is not None else {}

    def fail(key: KeyPath, reason: str) -> NoReturn:
        raise PolicyConfigError(path, line_of(lines, key), key, reason)

    def locate(key: KeyPath) -> str:
        return f"{path}:{line_of(lines, key)}"

    if not isinstance(document, Mapping):
        fail((), "expected a mapping at the top level")
    return parse_policy(document.get("policy"), fail, locate)
